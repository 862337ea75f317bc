package api

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/internal/emulator"
	"github.com/batchgpt/batchgpt/internal/retry"
)

func TestTokenizeAgainstEmulator(t *testing.T) {
	emu, base := startEmulator(t, emulator.Config{APIKeys: []string{testKey}})
	c := emuClient(t, base, nil)
	body := prompt("быть или не быть")
	tc, err := c.TokenizeCompletion(t.Context(), body)
	if err != nil {
		t.Fatal(err)
	}
	// The emulator's tokenizer counts what a completion's usage reports.
	sub, err := c.Submit(t.Context(), body, nil)
	if err != nil {
		t.Fatal(err)
	}
	op, err := c.Operation(t.Context(), sub.OpID)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(tc.Tokens), int(op.Response.Usage.InputTextTokens); got != want || tc.ModelVersion == "" {
		t.Fatalf("tokenizeCompletion: %d tokens (%+v), the completion's usage says %d", got, tc, want)
	}
	one, err := c.Tokenize(t.Context(), "gpt://"+emuFolder+"/yandexgpt-lite/latest", "one two three")
	if err != nil {
		t.Fatal(err)
	}
	if len(one.Tokens) != 3 || one.Tokens[1].Text != "two" || one.Tokens[1].ID == 0 {
		t.Fatalf("tokenize: %+v", one)
	}
	if st := emu.Stats(); st.Tokenizes != 2 || st.Submissions != 1 {
		t.Fatalf("emulator stats %+v", st)
	}
	// An unknown model's folder is refused like a completion.
	_, err = c.Tokenize(t.Context(), "not a uri", "x")
	if retry.Classify(err) != retry.Permanent {
		t.Fatalf("bad model URI: %v (%v)", err, retry.Classify(err))
	}
}

// The tokenizer has its own pacer: a 429 slows it, not the submissions or polls.
func TestTokenizeUsesItsPacer(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/foundationModels/v1/tokenizeCompletion" || r.Method != http.MethodPost {
			t.Errorf("%s %s", r.Method, r.URL.Path)
		}
		if n.Add(1) == 1 {
			w.WriteHeader(http.StatusTooManyRequests)
			w.Write([]byte(`{"error":{"grpcCode":8,"httpCode":429,"message":"ai.tokenizerRequestsPerSecond.rate rate quota limit exceed: allowed 50 requests"}}`))
			return
		}
		w.Write([]byte(`{"tokens":[{"id":"7","text":"hi"},{"id":8,"text":"<s>","special":true}],"modelVersion":"v"}`))
	}))
	t.Cleanup(srv.Close)
	tok, submit, poll := NewPacer(1000, 0), NewPacer(1000, 0), NewPacer(1000, 0)
	c := testClient(t, srv.URL, func(cfg *Config) { cfg.TokenizePacer, cfg.SubmitPacer, cfg.PollPacer = tok, submit, poll })
	res, err := c.TokenizeCompletion(t.Context(), prompt("hi"))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Tokens) != 2 || res.Tokens[0].ID != 7 || !res.Tokens[1].Special || n.Load() != 2 {
		t.Fatalf("%+v after %d requests", res, n.Load())
	}
	if tok.Throttles() != 1 || submit.Throttles()+poll.Throttles() != 0 {
		t.Fatalf("throttles: tokenizer %d, submit %d, poll %d", tok.Throttles(), submit.Throttles(), poll.Throttles())
	}
}

func TestCancelAgainstEmulator(t *testing.T) {
	for _, tc := range []struct {
		name      string
		latency   time.Duration
		cancelled bool
	}{{"running", time.Hour, true}, {"finished", 0, false}} {
		t.Run(tc.name, func(t *testing.T) {
			emu, base := startEmulator(t, emulator.Config{APIKeys: []string{testKey}, Latency: emulator.Latency{Median: tc.latency}})
			poll := NewPacer(1000, 0)
			c := emuClient(t, base, func(cfg *Config) { cfg.PollPacer = poll })
			sub, err := c.Submit(t.Context(), prompt("cancel me"), nil)
			if err != nil {
				t.Fatal(err)
			}
			op, err := c.Cancel(t.Context(), sub.OpID)
			if err != nil {
				t.Fatal(err)
			}
			if !op.Done || op.ID != sub.OpID {
				t.Fatalf("cancel answered %+v", op)
			}
			if tc.cancelled != (op.Failed() && op.Error.Code == 1) || tc.cancelled == (op.Response != nil) {
				t.Fatalf("cancel answered %+v (error %+v)", op, op.Error)
			}
			if st := emu.Stats(); st.Cancels != 1 || (st.Cancelled == 1) != tc.cancelled {
				t.Fatalf("emulator stats %+v", st)
			}
			if _, err := c.Cancel(t.Context(), "d7qqr3frkl81js0udlr9"); retry.Classify(err) != retry.NotFound {
				t.Fatalf("cancel of an unknown operation: %v", err)
			}
		})
	}
}
