package emulator_test

import (
	"encoding/json"
	"net/http"
	"strconv"
	"testing"

	"github.com/batchgpt/batchgpt/internal/emulator"
)

type tokenizeAnswer struct {
	Tokens []struct {
		ID      string // int64 in proto-JSON: a string
		Text    string
		Special bool
	}
	ModelVersion string
}

func decodeTokens(t *testing.T, r emuResp) tokenizeAnswer {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("tokenize: status %d: %s", r.status, r.body)
	}
	var a tokenizeAnswer
	if err := json.Unmarshal(r.body, &a); err != nil {
		t.Fatalf("tokenize: %v: %s", err, r.body)
	}
	for _, tok := range a.Tokens {
		if _, err := strconv.ParseInt(tok.ID, 10, 64); err != nil || tok.Text == "" {
			t.Fatalf("token %+v: %s", tok, r.body)
		}
	}
	return a
}

// The tokenizer counts what a completion's usage reports as its input tokens.
func TestTokenizeCountsLikeUsage(t *testing.T) {
	s, base := emuStart(t, emulator.Config{})
	msgs := userMsg("Переведи на английский:  быть или не быть")
	tc := decodeTokens(t, mustDo(t, http.MethodPost, base+"/foundationModels/v1/tokenizeCompletion", requestBody(testModel, msgs...), nil))
	id := submitOK(t, base, msgs)
	op := decodeOp(t, mustDo(t, http.MethodGet, base+"/operations/"+id, "", nil))
	if got, want := strconv.Itoa(len(tc.Tokens)), op.Response.Usage.InputTextTokens; got != want || tc.ModelVersion == "" {
		t.Fatalf("tokenizeCompletion: %d tokens (model %q), the completion's usage says %s", len(tc.Tokens), tc.ModelVersion, want)
	}
	// snake_case names, as proto-JSON accepts them.
	one := decodeTokens(t, mustDo(t, http.MethodPost, base+"/foundationModels/v1/tokenize",
		`{"model_uri":"`+testModel+`","text":"быть или  не быть"}`, nil))
	if len(one.Tokens) != 4 || one.Tokens[0].Text != "быть" || one.Tokens[0].ID != one.Tokens[3].ID {
		t.Fatalf("tokenize: %+v", one)
	}
	if st := s.Stats(); st.Tokenizes != 2 || st.Submissions != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestTokenizeRefusals(t *testing.T) {
	s, base := emuStart(t, emulator.Config{TokenizeRPS: 1, DeniedModels: []string{"gpt://" + testFolder + "/yandexgpt-pro"},
		UserTokens: []string{"t1.user"}})
	tok := base + "/foundationModels/v1/tokenize"
	checkGenericError(t, mustDo(t, http.MethodPost, tok, `{"modelUri":"`+testModel+`","text":"x"}`, map[string]string{"Authorization": "Api-Key wrong"}),
		http.StatusUnauthorized, 16, "Unknown api key")
	checkGenericError(t, mustDo(t, http.MethodPost, tok, `{"modelUri":"`+testModel+`","text":"x"}`, map[string]string{"Authorization": "Bearer t1.user"}),
		http.StatusUnauthorized, 16, "You have to specify folder ID for user account")
	checkGatewayError(t, mustDo(t, http.MethodPost, tok, `{"modelUri":"gpt://`+testFolder+`/yandexgpt-pro/latest","text":"x"}`, nil),
		http.StatusForbidden, 7, "Access to model gpt://"+testFolder+"/yandexgpt-pro/latest denied")
	decodeTokens(t, mustDo(t, http.MethodPost, tok, `{"modelUri":"`+testModel+`","text":"x"}`, nil))
	// One a second: the next is over the quota.
	r := mustDo(t, http.MethodPost, tok, `{"modelUri":"`+testModel+`","text":"x"}`, nil)
	checkGatewayError(t, r, http.StatusTooManyRequests, 8, "ai.tokenizerRequestsPerSecond.rate rate quota limit exceed: allowed 1 requests")
	if r := mustDo(t, http.MethodGet, tok, "", nil); r.status != http.StatusMethodNotAllowed {
		t.Fatalf("GET tokenize: %d", r.status)
	}
	if st := s.Stats(); st.Submissions != 0 || st.Rejected429 != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestTokenizeBadBody(t *testing.T) {
	_, base := emuStart(t, emulator.Config{})
	r := mustDo(t, http.MethodPost, base+"/foundationModels/v1/tokenize", `{"modelUri":"nope","text":"x"}`, nil)
	if r.status != http.StatusBadRequest {
		t.Fatalf("bad model URI: %d %s", r.status, r.body)
	}
	r = mustDo(t, http.MethodPost, base+"/foundationModels/v1/tokenizeCompletion", `{"modelUri":`, nil)
	if r.status != http.StatusBadRequest {
		t.Fatalf("bad JSON: %d %s", r.status, r.body)
	}
}
