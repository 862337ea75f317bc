package api

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/internal/emulator"
	"github.com/batchgpt/batchgpt/internal/retry"
)

const emuFolder = "b1gtestfolder"

func startEmulator(t *testing.T, cfg emulator.Config) (*emulator.Server, string) {
	t.Helper()
	emu := emulator.New(cfg)
	base, err := emu.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	return emu, base
}

// emuClient talks to the emulator with connection reuse, as in production.
func emuClient(t *testing.T, base string, mod func(*Config)) *Client {
	t.Helper()
	return testClient(t, base, func(cfg *Config) {
		cfg.HTTPClient = nil
		cfg.Folder = emuFolder
		cfg.NoDataLogging = true
		if mod != nil {
			mod(cfg)
		}
	})
}

func prompt(text string) []byte {
	return fmt.Appendf(nil, `{"modelUri":"gpt://%s/yandexgpt-lite/latest","completionOptions":{"temperature":0.3,"maxTokens":"100"},`+
		`"messages":[{"role":"system","text":"Be brief."},{"role":"user","text":%q}]}`, emuFolder, text)
}

func TestEmulatorRoundTrip(t *testing.T) {
	_, base := startEmulator(t, emulator.Config{APIKeys: []string{testKey}})
	c := emuClient(t, base, nil)
	sub, err := c.Submit(t.Context(), prompt("What is 2+2?"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if sub.Tries != 1 || sub.InDoubt || len(sub.OpID) != 20 {
		t.Errorf("Submission = %+v", sub)
	}
	op, err := c.Operation(t.Context(), sub.OpID)
	if err != nil {
		t.Fatal(err)
	}
	if op.ID != sub.OpID || !op.Done || op.Failed() || op.Response == nil || len(op.Response.Alternatives) == 0 {
		t.Fatalf("operation %+v", op)
	}
	if op.Response.Alternatives[0].Message.Text == "" || op.Response.Usage.TotalTokens <= 0 || op.Response.Usage.InputTextTokens <= 0 {
		t.Errorf("response %+v", op.Response)
	}
}

func TestEmulatorErrors(t *testing.T) {
	const otherKey = "AQVNotherSECRET987654321"
	_, base := startEmulator(t, emulator.Config{APIKeys: []string{testKey}})
	tests := []struct {
		name      string
		mod       func(*Config)
		call      func(c *Client) error
		wantClass retry.Class
		wantCode  int
		wantMsg   string
	}{
		{
			name: "bad role",
			call: func(c *Client) error {
				_, err := c.Submit(t.Context(), []byte(strings.Replace(string(prompt("x")), `"user"`, `"robot"`, 1)), nil)
				return err
			},
			wantClass: retry.Permanent, wantCode: 3, wantMsg: "robot",
		},
		{
			name:      "malformed JSON",
			call:      func(c *Client) error { _, err := c.Submit(t.Context(), []byte(`{"modelUri":`), nil); return err },
			wantClass: retry.Permanent, wantCode: 3,
		},
		{
			name:      "folder mismatch",
			mod:       func(cfg *Config) { cfg.Folder = "b1gotherfolder" },
			call:      func(c *Client) error { _, err := c.Submit(t.Context(), prompt("x"), nil); return err },
			wantClass: retry.Permanent, wantCode: 3, wantMsg: "does not match",
		},
		{
			name:      "unknown operation",
			call:      func(c *Client) error { _, err := c.Operation(t.Context(), "d7qunknown0000000000"); return err },
			wantClass: retry.NotFound, wantCode: 5,
		},
		{
			name:      "malformed operation id",
			call:      func(c *Client) error { _, err := c.Operation(t.Context(), "../../etc/passwd"); return err },
			wantClass: retry.NotFound, wantCode: 5,
		},
		{
			name:      "unknown API key",
			mod:       func(cfg *Config) { cfg.Credentials = keyCreds(otherKey) },
			call:      func(c *Client) error { _, err := c.Submit(t.Context(), prompt("x"), nil); return err },
			wantClass: retry.Auth, wantCode: 16, wantMsg: "Unknown api key",
		},
		{
			name:      "bearer token unknown",
			mod:       func(cfg *Config) { cfg.Credentials = &creds{headers: []string{"Bearer t1." + testKey}} },
			call:      func(c *Client) error { _, err := c.Operation(t.Context(), "d7qunknown0000000000"); return err },
			wantClass: retry.Auth, wantCode: 16,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := emuClient(t, base, tt.mod)
			err := tt.call(c)
			if err == nil {
				t.Fatal("no error")
			}
			if got := retry.Classify(err); got != tt.wantClass {
				t.Errorf("retry.Classify(%v) = %v, want %v", err, got, tt.wantClass)
			}
			e, ok := err.(*Error)
			if !ok {
				t.Fatalf("error %T %v, want *Error", err, err)
			}
			if e.Code != tt.wantCode || !strings.Contains(e.Message, tt.wantMsg) || e.RequestID == "" {
				t.Errorf("error %+v, want code %d, message with %q and a request id", e, tt.wantCode, tt.wantMsg)
			}
			noSecret(t, err)
			if s := err.Error(); strings.Contains(s, otherKey) {
				t.Errorf("error shows the key: %s", s)
			}
		})
	}
}

func TestEmulatorTransientFaults(t *testing.T) {
	emu, base := startEmulator(t, emulator.Config{
		Seed:   7,
		Faults: emulator.Faults{Rate500: 0.15, Rate503: 0.1, RateReset: 0.1, RateGarbage: 0.1},
	})
	c := emuClient(t, base, func(cfg *Config) { cfg.Retry.Attempts = 30 })
	const n = 40
	tries, inDoubt := 0, 0
	var ids []string
	for i := range n {
		sub, err := c.Submit(t.Context(), prompt(fmt.Sprint("question ", i)), nil)
		if err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
		if sub.Doubts != sub.Tries-1 || sub.InDoubt {
			t.Errorf("submit %d: %+v: every retry here followed an answer that may hide an operation", i, sub)
		}
		tries += sub.Tries
		inDoubt += sub.Doubts
		ids = append(ids, sub.OpID)
	}
	st := emu.Stats()
	if st.Submissions != int64(tries) {
		t.Errorf("emulator saw %d submissions, client counted %d tries", st.Submissions, tries)
	}
	// A garbled answer is the only fault that creates an operation: each one is an extra,
	// billed operation, which is exactly why those submissions are in doubt.
	if extra := st.OpsCreated - n; extra != st.Faults[emulator.FaultGarbage] {
		t.Errorf("%d extra operations, %d garbage faults", extra, st.Faults[emulator.FaultGarbage])
	}
	// Every one of these faults may hide an operation as far as the client can tell: each try
	// that met one is counted, once.
	if f := st.Faults; int64(inDoubt) != f[emulator.Fault500]+f[emulator.Fault503]+f[emulator.FaultReset]+f[emulator.FaultGarbage] {
		t.Errorf("%d tries counted in doubt, faults %v", inDoubt, f)
	}
	if inDoubt == 0 || st.Faults[emulator.FaultReset] == 0 || st.Faults[emulator.Fault500] == 0 {
		t.Errorf("the faults did not happen (%d in doubt, %v): the test proves nothing", inDoubt, st.Faults)
	}
	for _, id := range ids {
		op, err := c.Operation(t.Context(), id)
		if err != nil || !op.Done {
			t.Errorf("operation %s: %+v, %v", id, op, err)
		}
	}
}

func TestEmulatorLostSubmission(t *testing.T) {
	emu, base := startEmulator(t, emulator.Config{Faults: emulator.Faults{RateSubmitLost: 1}})
	c := emuClient(t, base, func(cfg *Config) { cfg.Retry.Attempts = 2 })
	sub, err := c.Submit(t.Context(), prompt("lost"), nil)
	if err == nil || retry.Classify(err) != retry.Transient {
		t.Fatalf("Submit = %+v, %v; want a transient error", sub, err)
	}
	if !sub.InDoubt || sub.Tries != 2 || sub.Doubts != 2 {
		t.Errorf("Submission = %+v, want 2 tries, both in doubt", sub)
	}
	if st := emu.Stats(); st.OpsCreated != 2 {
		t.Errorf("%d operations created behind the errors, want 2", st.OpsCreated)
	}
	noSecret(t, err)
}

func TestEmulatorSubmitQuota(t *testing.T) {
	emu, base := startEmulator(t, emulator.Config{SubmitRPS: 4})
	pacer := NewPacer(50, 0)
	c := emuClient(t, base, func(cfg *Config) {
		cfg.SubmitPacer = pacer
		cfg.Retry.Attempts = 1 // 429s must not count
		cfg.Retry.Backoff.Base = 20 * time.Millisecond
		cfg.Retry.Backoff.Max = 200 * time.Millisecond
	})
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			for i := range 4 {
				if _, err := c.Submit(t.Context(), prompt(fmt.Sprint(w, i)), nil); err != nil {
					t.Errorf("submit: %v", err)
				}
			}
		})
	}
	wg.Wait()
	st := emu.Stats()
	if st.OpsCreated != 8 {
		t.Errorf("%d operations, want 8", st.OpsCreated)
	}
	if st.Rejected429 == 0 || pacer.Throttles() != st.Rejected429 {
		t.Errorf("emulator rejected %d, pacer saw %d throttles", st.Rejected429, pacer.Throttles())
	}
	if r := pacer.Rate(); r >= 50 {
		t.Errorf("rate %v after 429s, want below the cap", r)
	}
}
