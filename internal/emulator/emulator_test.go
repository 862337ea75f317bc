package emulator_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/internal/emulator"
)

const (
	testKey    = "test-key-0123456789"
	testFolder = "b1gtestfolder"
	testModel  = "gpt://" + testFolder + "/yandexgpt/latest"
)

var opIDRe = regexp.MustCompile(`^[a-z0-9]{20}$`)

// emuClock is a concurrency-safe injectable clock.
type emuClock struct {
	mu sync.Mutex
	t  time.Time
}

func newEmuClock() *emuClock {
	return &emuClock{t: time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)}
}

func (c *emuClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *emuClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// emuStart starts an emulator on loopback; by default it accepts testKey only.
func emuStart(t *testing.T, cfg emulator.Config) (*emulator.Server, string) {
	t.Helper()
	if cfg.APIKeys == nil {
		cfg.APIKeys = []string{testKey}
	}
	s := emulator.New(cfg)
	base, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s, base
}

type emuResp struct {
	status int
	body   []byte
	header http.Header
}

var emuClient = &http.Client{Timeout: 20 * time.Second}

// emuDo sends a request with "Api-Key testKey" unless hdr sets Authorization
// (to "" for none).
func emuDo(ctx context.Context, method, url, body string, hdr map[string]string) (emuResp, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return emuResp{}, err
	}
	req.Header.Set("Authorization", "Api-Key "+testKey)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := emuClient.Do(req)
	if err != nil {
		return emuResp{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return emuResp{status: resp.StatusCode, body: b, header: resp.Header}, err
}

func mustDo(t *testing.T, method, url, body string, hdr map[string]string) emuResp {
	t.Helper()
	r, err := emuDo(t.Context(), method, url, body, hdr)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return r
}

func requestBody(model string, msgs ...emulator.Message) string {
	b, err := json.Marshal(map[string]any{
		"modelUri":          model,
		"completionOptions": map[string]any{"temperature": 0.3, "maxTokens": "500"},
		"messages":          msgs,
	})
	if err != nil {
		panic(err) // a test bug: the input is fixed
	}
	return string(b)
}

func userMsg(text string) []emulator.Message {
	return []emulator.Message{{Role: "system", Text: "Be brief."}, {Role: "user", Text: text}}
}

// submitOK submits msgs and returns the operation id.
func submitOK(t *testing.T, base string, msgs []emulator.Message) string {
	t.Helper()
	r := mustDo(t, http.MethodPost, base+"/foundationModels/v1/completionAsync", requestBody(testModel, msgs...), nil)
	if r.status != http.StatusOK {
		t.Fatalf("submit: status %d: %s", r.status, r.body)
	}
	var op struct{ ID string }
	if err := json.Unmarshal(r.body, &op); err != nil || !opIDRe.MatchString(op.ID) {
		t.Fatalf("submit: bad operation %s (%v)", r.body, err)
	}
	return op.ID
}

func decodeMap(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("decode %q: %v", b, err)
	}
	return m
}

func sortedKeys(m map[string]any) []string {
	return slices.Sorted(func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	})
}

// checkGatewayError checks the llm.api gateway error body.
func checkGatewayError(t *testing.T, r emuResp, status, code int, wantMsg string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	top := decodeMap(t, r.body)
	if got := sortedKeys(top); !slices.Equal(got, []string{"error"}) {
		t.Fatalf("keys %v, want [error]: %s", got, r.body)
	}
	e, _ := top["error"].(map[string]any)
	if got := sortedKeys(e); !slices.Equal(got, []string{"details", "grpcCode", "httpCode", "httpStatus", "message"}) {
		t.Fatalf("error keys %v: %s", got, r.body)
	}
	if e["grpcCode"] != float64(code) || e["httpCode"] != float64(status) || e["httpStatus"] != http.StatusText(status) {
		t.Errorf("error body %s, want grpcCode %d httpCode %d", r.body, code, status)
	}
	if d, ok := e["details"].([]any); !ok || len(d) != 0 {
		t.Errorf("details %v, want []", e["details"])
	}
	if msg, _ := e["message"].(string); !strings.Contains(msg, wantMsg) {
		t.Errorf("message %q does not contain %q", msg, wantMsg)
	}
}

// checkGenericError checks the generic Yandex Cloud error body.
func checkGenericError(t *testing.T, r emuResp, status, code int, wantMsg string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	var body struct {
		Code    int
		Message string
		Details []struct {
			Type      string `json:"@type"`
			RequestID string `json:"requestId"`
		}
	}
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
	if body.Code != code || body.Message != wantMsg {
		t.Errorf("got code %d message %q, want %d %q", body.Code, body.Message, code, wantMsg)
	}
	if len(body.Details) != 1 || body.Details[0].Type != "type.googleapis.com/google.rpc.RequestInfo" ||
		body.Details[0].RequestID != r.header.Get("x-request-id") || body.Details[0].RequestID == "" {
		t.Errorf("details %+v, want RequestInfo with x-request-id %q", body.Details, r.header.Get("x-request-id"))
	}
}

func TestSubmitValidation(t *testing.T) {
	msgs := `[{"role":"user","text":"hi"}]`
	longText := strings.Repeat("word ", 32001)
	tests := []struct {
		name     string
		body     string
		header   map[string]string
		gateway  bool // llm.api gateway body; otherwise the unmarshal body
		wantMsg  string
		wantMsgs string // exact unmarshal message, when known
	}{
		{name: "truncated JSON", body: `{"modelUri":`, wantMsgs: "unexpected end of JSON input"},
		{name: "not JSON", body: `hello`, wantMsgs: "invalid character 'h' looking for beginning of value"},
		{name: "array body", body: `[1]`, wantMsg: "expected an object"},
		{name: "messages not an array", body: `{"modelUri":"` + testModel + `","messages":"hi"}`, wantMsg: "expected an array"},
		{name: "text not a string", body: `{"modelUri":"` + testModel + `","messages":[{"role":"user","text":5}]}`, wantMsg: "string field text"},
		{name: "field twice", body: `{"modelUri":"` + testModel + `","model_uri":"` + testModel + `","messages":` + msgs + `}`, wantMsg: `duplicate field "modelUri"`},
		{name: "maxTokens word", body: `{"modelUri":"` + testModel + `","completionOptions":{"maxTokens":"many"},"messages":` + msgs + `}`, wantMsg: "int64 field maxTokens"},
		{name: "maxTokens fraction", body: `{"modelUri":"` + testModel + `","completionOptions":{"maxTokens":1.5},"messages":` + msgs + `}`, wantMsg: "int64 field maxTokens"},
		{name: "temperature word", body: `{"modelUri":"` + testModel + `","completionOptions":{"temperature":"hot"},"messages":` + msgs + `}`, wantMsg: "double field temperature"},
		{name: "reasoning mode", body: `{"modelUri":"` + testModel + `","completionOptions":{"reasoningOptions":{"mode":"FAST"}},"messages":` + msgs + `}`, wantMsg: "enum field mode"},
		{name: "jsonObject and jsonSchema", body: `{"modelUri":"` + testModel + `","jsonObject":false,"json_schema":{"schema":{}},"messages":` + msgs + `}`, wantMsg: "oneof"},
		{name: "missing modelUri", body: `{"messages":` + msgs + `}`, gateway: true, wantMsg: ": Failed to parse model URI"},
		{name: "modelUri scheme", body: `{"modelUri":"http://` + testFolder + `/yandexgpt","messages":` + msgs + `}`, gateway: true, wantMsg: ": Failed to parse model URI"},
		{name: "modelUri without model", body: `{"modelUri":"gpt://` + testFolder + `","messages":` + msgs + `}`, gateway: true, wantMsg: ": Failed to parse model URI"},
		{name: "modelUri empty folder", body: `{"modelUri":"gpt:///yandexgpt/latest","messages":` + msgs + `}`, gateway: true, wantMsg: ": Failed to parse model URI"},
		{name: "invalid role", body: `{"modelUri":"` + testModel + `","messages":[{"role":"robot","text":"hi"}]}`, gateway: true, wantMsg: ": invalid message role 'robot'"},
		{name: "no messages", body: `{"modelUri":"` + testModel + `","messages":[]}`, gateway: true, wantMsg: "messages must not be empty"},
		{name: "messages null", body: `{"modelUri":"` + testModel + `","messages":null}`, gateway: true, wantMsg: "messages must not be empty"},
		{name: "empty text", body: `{"modelUri":"` + testModel + `","messages":[{"role":"user","text":"  "}]}`, gateway: true, wantMsg: "message text must not be empty"},
		{name: "temperature above 1", body: `{"modelUri":"` + testModel + `","completionOptions":{"temperature":1.5},"messages":` + msgs + `}`, gateway: true, wantMsg: "temperature must be in the range [0, 1]"},
		{name: "temperature below 0", body: `{"modelUri":"` + testModel + `","completionOptions":{"temperature":-0.1},"messages":` + msgs + `}`, gateway: true, wantMsg: "temperature must be in the range [0, 1]"},
		{name: "temperature NaN", body: `{"modelUri":"` + testModel + `","completionOptions":{"temperature":"NaN"},"messages":` + msgs + `}`, gateway: true, wantMsg: "temperature must be in the range [0, 1]"},
		{name: "negative maxTokens", body: `{"modelUri":"` + testModel + `","completionOptions":{"maxTokens":"-1"},"messages":` + msgs + `}`, gateway: true, wantMsg: "maxTokens must be non-negative"},
		{name: "folder mismatch", body: `{"modelUri":"` + testModel + `","messages":` + msgs + `}`, header: map[string]string{"x-folder-id": "b1gother"}, gateway: true, wantMsg: ": Specified folder ID does not match with service account"},
		{name: "prompt too long", body: `{"modelUri":"` + testModel + `","messages":[{"role":"user","text":"` + longText + `"}]}`, gateway: true, wantMsg: "number of input tokens must be no more than 32000"},
	}
	s, base := emuStart(t, emulator.Config{})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hdr := map[string]string{"x-client-request-id": "client-1"}
			for k, v := range tc.header {
				hdr[k] = v
			}
			r := mustDo(t, http.MethodPost, base+"/foundationModels/v1/completionAsync", tc.body, hdr)
			if tc.gateway {
				checkGatewayError(t, r, http.StatusBadRequest, 3, tc.wantMsg)
				msg, _ := decodeMap(t, r.body)["error"].(map[string]any)["message"].(string)
				if !strings.HasPrefix(msg, "Error in session internal_id=") || !strings.Contains(msg, "&client_request_id=client-1&") {
					t.Errorf("message %q lacks the session prefix", msg)
				}
				return
			}
			if r.status != http.StatusBadRequest {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			m := decodeMap(t, r.body)
			if got := sortedKeys(m); !slices.Equal(got, []string{"code", "details", "error", "message"}) {
				t.Fatalf("keys %v: %s", got, r.body)
			}
			msg, _ := m["message"].(string)
			if m["code"] != float64(3) || m["error"] != msg || !reflect.DeepEqual(m["details"], []any{}) {
				t.Errorf("body %s", r.body)
			}
			if tc.wantMsgs != "" && msg != tc.wantMsgs {
				t.Errorf("message %q, want %q", msg, tc.wantMsgs)
			}
			if !strings.Contains(msg, tc.wantMsg) {
				t.Errorf("message %q does not contain %q", msg, tc.wantMsg)
			}
		})
	}
	if st := s.Stats(); st.OpsCreated != 0 || st.Submissions != int64(len(tests)) {
		t.Errorf("stats %+v: want no operations and %d submissions", st, len(tests))
	}
}

func readTestdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "requests", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSubmitAccepted(t *testing.T) {
	siberia := userMsg("Name three rivers of Siberia.")
	siberia[0].Text = "You are a terse assistant."
	tests := []struct {
		name   string
		body   string
		header map[string]string
		model  string
		msgs   []emulator.Message
	}{
		{name: "camelCase", body: readTestdata(t, "camel.json"), model: testModel, msgs: siberia},
		{name: "snake_case", body: readTestdata(t, "snake.json"), model: testModel, msgs: siberia},
		{name: "tool messages", body: readTestdata(t, "tools.json"), model: "gpt://b1gtestfolder/yandexgpt-lite/rc",
			msgs: []emulator.Message{{Role: "user", Text: "Weather in Omsk?"}, {Role: "assistant"}, {Role: "user"}}},
		{name: "nulls and unknown fields", model: testModel, msgs: userMsg("x"),
			body: `{"modelUri":"` + testModel + `","completionOptions":null,"futureField":{"a":1},"jsonSchema":null,"messages":[{"role":"system","text":"Be brief."},{"role":"user","text":"x","extra":1}]}`},
		{name: "numbers as strings and enum number", model: testModel, msgs: userMsg("y"),
			body: `{"modelUri":"` + testModel + `","completionOptions":{"temperature":"1","maxTokens":"1e3","reasoningOptions":{"mode":2}},"messages":[{"role":"system","text":"Be brief."},{"role":"user","text":"y"}]}`},
		{name: "matching folder header", header: map[string]string{"x-folder-id": testFolder}, model: testModel, msgs: userMsg("z"),
			body: requestBody(testModel, userMsg("z")...)},
		{name: "fine-tuned model", model: "gpt://" + testFolder + "/yandexgpt-lite/latest@tamr1", msgs: userMsg("q"),
			body: requestBody("gpt://"+testFolder+"/yandexgpt-lite/latest@tamr1", userMsg("q")...)},
		{name: "dataset model", model: "ds://" + testFolder + "/bt1abc", msgs: userMsg("q"),
			body: requestBody("ds://"+testFolder+"/bt1abc", userMsg("q")...)},
	}
	clock := newEmuClock()
	_, base := emuStart(t, emulator.Config{Now: clock.Now})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := mustDo(t, http.MethodPost, base+"/foundationModels/v1/completionAsync", tc.body, tc.header)
			if r.status != http.StatusOK {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			if r.header.Get("x-request-id") == "" {
				t.Error("no x-request-id header")
			}
			m := decodeMap(t, r.body)
			want := []string{"createdAt", "createdBy", "description", "done", "id", "metadata", "modifiedAt"}
			if got := sortedKeys(m); !slices.Equal(got, want) {
				t.Fatalf("keys %v, want %v", got, want)
			}
			id, _ := m["id"].(string)
			createdAt := clock.Now().Format(time.RFC3339Nano)
			if !opIDRe.MatchString(id) || m["description"] != "Async GPT Completion" || m["done"] != false ||
				m["metadata"] != nil || m["createdAt"] != createdAt || m["modifiedAt"] != createdAt {
				t.Errorf("operation %s", r.body)
			}
			if by, _ := m["createdBy"].(string); len(by) != 20 {
				t.Errorf("createdBy %q", by)
			}
			p := mustDo(t, http.MethodGet, base+"/operations/"+id, "", nil)
			if got, want := answerOf(t, p), emulator.Answer(tc.model, tc.msgs); got != want {
				t.Errorf("answer %q, want %q", got, want)
			}
		})
	}
}

// doneOp is a finished operation as a client decodes it.
type doneOp struct {
	ID       string
	Done     *bool
	Error    *struct{ Code int }
	Response *struct {
		Type         string `json:"@type"`
		Alternatives []struct {
			Message emulator.Message
			Status  string
		}
		Usage struct {
			InputTextTokens, CompletionTokens, TotalTokens string
		}
		ModelVersion string
	}
}

func decodeOp(t *testing.T, r emuResp) doneOp {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("poll: status %d: %s", r.status, r.body)
	}
	var op doneOp
	if err := json.Unmarshal(r.body, &op); err != nil {
		t.Fatalf("poll: %v: %s", err, r.body)
	}
	return op
}

func answerOf(t *testing.T, r emuResp) string {
	t.Helper()
	op := decodeOp(t, r)
	if op.Response == nil || len(op.Response.Alternatives) != 1 {
		t.Fatalf("not a finished operation: %s", r.body)
	}
	return op.Response.Alternatives[0].Message.Text
}

func TestAuth(t *testing.T) {
	clock := newEmuClock()
	var logMu sync.Mutex
	var logs []string
	cfg := emulator.Config{
		Now:       clock.Now,
		APIKeys:   []string{testKey},
		IAMTokens: []string{"t1.static-token"},
		Logf: func(format string, args ...any) {
			logMu.Lock()
			logs = append(logs, fmt.Sprintf(format, args...))
			logMu.Unlock()
		},
	}
	s, base := emuStart(t, cfg)

	// A token issued by the emulated metadata service.
	r := mustDo(t, http.MethodGet, base+"/computeMetadata/v1/instance/service-accounts/default/token", "",
		map[string]string{"Metadata-Flavor": "Google", "Authorization": ""})
	var md struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(r.body, &md); err != nil || md.AccessToken == "" {
		t.Fatalf("metadata token: %s (%v)", r.body, err)
	}

	body := requestBody(testModel, userMsg("auth")...)
	tests := []struct {
		name    string
		auth    string
		advance time.Duration // clock advance before the request
		noAuth  bool
		wantMsg string // "" for success
	}{
		{name: "api key", auth: "Api-Key " + testKey},
		{name: "api key scheme case", auth: "api-key " + testKey},
		{name: "static bearer", auth: "Bearer t1.static-token"},
		{name: "issued bearer", auth: "Bearer " + md.AccessToken},
		{name: "missing header", auth: "", wantMsg: "The request is missing an API key or IAM token."},
		{name: "unknown api key", auth: "Api-Key wrong-key-secret", wantMsg: "Unknown api key"},
		{name: "empty api key", auth: "Api-Key ", wantMsg: "Unknown api key"},
		{name: "unknown bearer", auth: "Bearer t1.wrong-token-secret", wantMsg: "Token is invalid or has expired."},
		{name: "basic scheme", auth: "Basic dXNlcjpwYXNz", wantMsg: "Unsupported authorization scheme, want Api-Key or Bearer."},
		{name: "expired bearer", auth: "Bearer " + md.AccessToken, advance: time.Hour, wantMsg: "Token is invalid or has expired."},
		{name: "static bearer after an hour", auth: "Bearer t1.static-token"},
	}
	var unauthorized int64
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock.Advance(tc.advance)
			hdr := map[string]string{"Authorization": tc.auth}
			for _, req := range []struct{ method, path, body string }{
				{http.MethodPost, "/foundationModels/v1/completionAsync", body},
				{http.MethodGet, "/operations/d7qqr3frkl81js0udlr9", ""},
			} {
				r := mustDo(t, req.method, base+req.path, req.body, hdr)
				if tc.wantMsg == "" {
					if r.status == http.StatusUnauthorized {
						t.Errorf("%s: 401: %s", req.path, r.body)
					}
					continue
				}
				unauthorized++
				checkGenericError(t, r, http.StatusUnauthorized, 16, tc.wantMsg)
				if strings.Contains(string(r.body), "secret") {
					t.Errorf("the credential leaked into the body: %s", r.body)
				}
			}
		})
	}
	if got := s.Stats().Unauthorized; got != unauthorized {
		t.Errorf("Unauthorized = %d, want %d", got, unauthorized)
	}
	logMu.Lock()
	defer logMu.Unlock()
	if len(logs) == 0 {
		t.Error("Logf was never called")
	}
	for _, l := range logs {
		if strings.Contains(l, "secret") || strings.Contains(l, testKey) || strings.Contains(l, md.AccessToken) {
			t.Errorf("credential in log line %q", l)
		}
	}
}

func TestNoAuth(t *testing.T) {
	tests := []struct {
		name   string
		cfg    emulator.Config
		auth   string
		status int
	}{
		{"no header accepted", emulator.Config{NoAuth: true}, "", http.StatusOK},
		{"bad key still rejected", emulator.Config{NoAuth: true}, "Api-Key other", http.StatusUnauthorized},
		{"any key when none configured", emulator.Config{APIKeys: []string{}}, "Api-Key anything", http.StatusOK},
		{"no header without NoAuth", emulator.Config{APIKeys: []string{}}, "", http.StatusUnauthorized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, base := emuStart(t, tc.cfg)
			r := mustDo(t, http.MethodPost, base+"/foundationModels/v1/completionAsync",
				requestBody(testModel, userMsg("hello")...), map[string]string{"Authorization": tc.auth})
			if r.status != tc.status {
				t.Errorf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
		})
	}
}

func TestQuota(t *testing.T) {
	submitURL := "/foundationModels/v1/completionAsync"
	otherModel := "gpt://b1gotherfolder/yandexgpt/latest"
	tests := []struct {
		name    string
		cfg     emulator.Config
		poll    bool
		allowed int           // requests accepted before the 429
		step    time.Duration // clock advance between requests
		reset   time.Duration // advance after which a request is accepted again
		wantMsg string
	}{
		{name: "submit per second", cfg: emulator.Config{SubmitRPS: 2}, allowed: 2, reset: time.Second,
			wantMsg: "ai.textGenerationAsyncCompletionRequestsPerSecond.rate rate quota limit exceed: allowed 2 requests"},
		{name: "submit fractional rps", cfg: emulator.Config{SubmitRPS: 0.5}, allowed: 1, step: time.Second, reset: 2 * time.Second,
			wantMsg: "ai.textGenerationAsyncCompletionRequestsPerSecond.rate rate quota limit exceed: allowed 1 requests"},
		{name: "submit per hour", cfg: emulator.Config{SubmitRPS: 10, SubmitPerHour: 3}, allowed: 3, step: 10 * time.Second, reset: time.Hour,
			wantMsg: "ai.textGenerationAsyncCompletionRequestsPerHour.rate rate quota limit exceed: allowed 3 requests"},
		{name: "poll per second", cfg: emulator.Config{PollRPS: 3}, poll: true, allowed: 3, step: time.Millisecond, reset: time.Second,
			wantMsg: "ai.operationGetRequestsPerSecond.rate rate quota limit exceed: allowed 3 requests"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := newEmuClock()
			tc.cfg.Now = clock.Now
			tc.cfg.Latency = emulator.Latency{Median: time.Hour}
			s, base := emuStart(t, tc.cfg)
			send := func(model, body string, hdr map[string]string) emuResp {
				if tc.poll {
					return mustDo(t, http.MethodGet, base+"/operations/d7qqr3frkl81js0udlr9", "",
						map[string]string{"x-folder-id": strings.Split(model, "/")[2]})
				}
				if body == "" {
					body = requestBody(model, userMsg("quota")...)
				}
				return mustDo(t, http.MethodPost, base+submitURL, body, hdr)
			}
			ok := func(r emuResp) bool { return r.status != http.StatusTooManyRequests }
			for i := range tc.allowed {
				if r := send(testModel, "", nil); !ok(r) {
					t.Fatalf("request %d: %d %s", i, r.status, r.body)
				}
				clock.Advance(tc.step)
			}
			r := send(testModel, "", nil)
			checkGatewayError(t, r, http.StatusTooManyRequests, 8, tc.wantMsg)
			want := `{"error":{"grpcCode":8,"httpCode":429,"message":"` + tc.wantMsg + `","httpStatus":"Too Many Requests","details":[]}}`
			if string(r.body) != want {
				t.Errorf("body\n%s\nwant\n%s", r.body, want)
			}
			if !tc.poll {
				// The quota is checked before the body is judged; the folder
				// of a broken body comes from the x-folder-id header.
				r := send(testModel, `{"broken`, map[string]string{"x-folder-id": testFolder})
				checkGatewayError(t, r, http.StatusTooManyRequests, 8, tc.wantMsg)
			}
			// Quotas are per folder.
			if r := send(otherModel, "", nil); !ok(r) {
				t.Errorf("other folder rejected: %s", r.body)
			}
			clock.Advance(tc.reset - tc.step)
			if r := send(testModel, "", nil); !ok(r) {
				t.Errorf("still rejected after %v: %s", tc.reset, r.body)
			}
			want429 := int64(2) // the plain and the broken request
			if tc.poll {
				want429 = 1
			}
			if got := s.Stats().Rejected429; got != want429 {
				t.Errorf("Rejected429 = %d, want %d", got, want429)
			}
		})
	}
}

func TestLatencyTransitions(t *testing.T) {
	type step struct {
		advance time.Duration
		done    bool
	}
	mustParse := func(s string) emulator.Latency {
		l, err := emulator.ParseLatency(s)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	tests := []struct {
		name    string
		latency emulator.Latency
		steps   []step
	}{
		{"zero value", emulator.Latency{}, []step{{0, true}}},
		{"zero", mustParse("0"), []step{{0, true}}},
		{"fixed", mustParse("2s"), []step{{0, false}, {1999 * time.Millisecond, false}, {time.Millisecond, true}, {time.Hour, true}}},
		{"uniform", mustParse("uniform:1s:3s"), []step{{0, false}, {999 * time.Millisecond, false}, {2001 * time.Millisecond, true}}},
		{"lognormal capped", mustParse("lognormal:1s:0.8:5s"), []step{{0, false}, {5 * time.Second, true}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := newEmuClock()
			s, base := emuStart(t, emulator.Config{Now: clock.Now, Latency: tc.latency, Seed: 7})
			msgs := userMsg("How long is the Ob river?")
			id := submitOK(t, base, msgs)
			created := clock.Now()
			for i, st := range tc.steps {
				clock.Advance(st.advance)
				op := decodeOp(t, mustDo(t, http.MethodGet, base+"/operations/"+id, "", nil))
				if op.ID != id || op.Done == nil || *op.Done != st.done {
					t.Fatalf("step %d (+%v): id %q done %v, want done %v", i, clock.Now().Sub(created), op.ID, op.Done, st.done)
				}
				if !st.done {
					if op.Response != nil || op.Error != nil {
						t.Fatalf("running operation with a result")
					}
					continue
				}
				resp := op.Response
				answer := emulator.Answer(testModel, msgs)
				in := emulator.CountTokens(msgs[0].Text) + emulator.CountTokens(msgs[1].Text)
				out := emulator.CountTokens(answer)
				if resp == nil || resp.Type != "type.googleapis.com/yandex.cloud.ai.foundation_models.v1.CompletionResponse" ||
					len(resp.Alternatives) != 1 || resp.Alternatives[0].Message != (emulator.Message{Role: "assistant", Text: answer}) ||
					resp.Alternatives[0].Status != "ALTERNATIVE_STATUS_FINAL" || resp.ModelVersion == "" {
					t.Fatalf("step %d: response %+v", i, resp)
				}
				if u := resp.Usage; u.InputTextTokens != fmt.Sprint(in) || u.CompletionTokens != fmt.Sprint(out) || u.TotalTokens != fmt.Sprint(in+out) {
					t.Errorf("usage %+v, want %d+%d", u, in, out)
				}
			}
			if st := s.Stats(); st.OpsDone != 1 || st.OpsFailed != 0 {
				t.Errorf("OpsDone %d OpsFailed %d, want 1 and 0", st.OpsDone, st.OpsFailed)
			}
		})
	}
}

func TestRetention(t *testing.T) {
	tests := []struct {
		name      string
		retention time.Duration
		keep      time.Duration // still found at this age
		gone      time.Duration // 404 at this age
	}{
		{"default 72h", 0, 72 * time.Hour, 72*time.Hour + time.Second},
		{"one hour", time.Hour, time.Hour, time.Hour + time.Nanosecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := newEmuClock()
			s, base := emuStart(t, emulator.Config{Now: clock.Now, Retention: tc.retention})
			id := submitOK(t, base, userMsg("keep me"))
			clock.Advance(tc.keep)
			if r := mustDo(t, http.MethodGet, base+"/operations/"+id, "", nil); r.status != http.StatusOK {
				t.Fatalf("at %v: %d %s", tc.keep, r.status, r.body)
			}
			clock.Advance(tc.gone - tc.keep)
			for range 2 { // and it stays gone
				checkGenericError(t, mustDo(t, http.MethodGet, base+"/operations/"+id, "", nil), http.StatusNotFound, 5, "Operation not found")
			}
			for _, bad := range []string{"d7qqr3frkl81js0udlr9", "short", "D7QQR3FRKL81JS0UDLR9"} {
				checkGenericError(t, mustDo(t, http.MethodGet, base+"/operations/"+bad, "", nil), http.StatusNotFound, 5, "Operation not found")
			}
			if got := s.Stats().NotFound; got != 5 {
				t.Errorf("NotFound = %d, want 5", got)
			}
		})
	}
}

func TestFaults(t *testing.T) {
	slowCtx := func(t *testing.T) context.Context {
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		t.Cleanup(cancel)
		return ctx
	}
	isGarbage := func(t *testing.T, r emuResp, err error) {
		if err != nil || r.status != http.StatusOK || json.Valid(r.body) || len(r.body) == 0 {
			t.Errorf("want a 200 with a broken body, got %d %q (%v)", r.status, r.body, err)
		}
	}
	isReset := func(t *testing.T, r emuResp, err error) {
		if err == nil {
			t.Errorf("want a connection error, got %d %s", r.status, r.body)
		}
	}
	tests := []struct {
		name    string
		faults  emulator.Faults
		poll    bool // the fault is set after a clean submit and hits the poll
		latency time.Duration
		ctx     func(*testing.T) context.Context
		kind    string
		check   func(t *testing.T, r emuResp, err error)
		created int64 // operations created
	}{
		{name: "submit 429", faults: emulator.Faults{Rate429: 1}, kind: emulator.Fault429, check: func(t *testing.T, r emuResp, err error) {
			checkGatewayError(t, r, http.StatusTooManyRequests, 8, "quota limit exceed")
		}},
		{name: "submit 500", faults: emulator.Faults{Rate500: 1}, kind: emulator.Fault500, check: func(t *testing.T, r emuResp, err error) {
			checkGatewayError(t, r, http.StatusInternalServerError, 13, "Internal error")
		}},
		{name: "submit 503", faults: emulator.Faults{Rate503: 1}, kind: emulator.Fault503, check: func(t *testing.T, r emuResp, err error) {
			checkGatewayError(t, r, http.StatusServiceUnavailable, 14, "unavailable")
		}},
		{name: "submit reset", faults: emulator.Faults{RateReset: 1}, kind: emulator.FaultReset, check: isReset},
		{name: "submit garbage", faults: emulator.Faults{RateGarbage: 1}, kind: emulator.FaultGarbage, check: isGarbage, created: 1},
		{name: "submit slow", faults: emulator.Faults{RateSlow: 1, SlowDelay: time.Hour}, ctx: slowCtx, kind: emulator.FaultSlow,
			check: func(t *testing.T, r emuResp, err error) {
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("want a deadline error, got %d %s (%v)", r.status, r.body, err)
				}
			}},
		{name: "submit slow short", faults: emulator.Faults{RateSlow: 1, SlowDelay: time.Millisecond}, kind: emulator.FaultSlow, created: 1,
			check: func(t *testing.T, r emuResp, err error) {
				if err != nil || r.status != http.StatusOK {
					t.Errorf("want success, got %d %s (%v)", r.status, r.body, err)
				}
			}},
		{name: "submit lost", faults: emulator.Faults{RateSubmitLost: 1}, kind: emulator.FaultSubmitLost, created: 1,
			check: func(t *testing.T, r emuResp, err error) {
				if err == nil {
					checkGatewayError(t, r, http.StatusInternalServerError, 13, "Internal error")
				}
			}},
		{name: "poll 429", faults: emulator.Faults{Rate429: 1}, poll: true, kind: emulator.Fault429, created: 1,
			check: func(t *testing.T, r emuResp, err error) {
				checkGatewayError(t, r, http.StatusTooManyRequests, 8, "quota limit exceed")
			}},
		{name: "poll 500", faults: emulator.Faults{Rate500: 1}, poll: true, kind: emulator.Fault500, created: 1,
			check: func(t *testing.T, r emuResp, err error) {
				checkGenericError(t, r, http.StatusInternalServerError, 13, "Internal error")
			}},
		{name: "poll 503", faults: emulator.Faults{Rate503: 1}, poll: true, kind: emulator.Fault503, created: 1,
			check: func(t *testing.T, r emuResp, err error) {
				checkGenericError(t, r, http.StatusServiceUnavailable, 14, "Service is temporarily unavailable")
			}},
		{name: "poll reset", faults: emulator.Faults{RateReset: 1}, poll: true, kind: emulator.FaultReset, created: 1, check: isReset},
		{name: "poll garbage", faults: emulator.Faults{RateGarbage: 1}, poll: true, kind: emulator.FaultGarbage, created: 1, check: isGarbage},
		{name: "poll slow", faults: emulator.Faults{RateSlow: 1, SlowDelay: time.Hour}, poll: true, ctx: slowCtx, kind: emulator.FaultSlow, created: 1,
			check: func(t *testing.T, r emuResp, err error) {
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("want a deadline error, got %d %s (%v)", r.status, r.body, err)
				}
			}},
		{name: "operation error", faults: emulator.Faults{RateOpError: 1}, kind: emulator.FaultOpError, created: 1,
			check: func(t *testing.T, r emuResp, err error) {
				op := decodeOp(t, r)
				if op.Done == nil || !*op.Done || op.Error == nil || (op.Error.Code != 13 && op.Error.Code != 14) || op.Response != nil {
					t.Errorf("want done with error 13 or 14: %s", r.body)
				}
			}},
		{name: "operation permanent error", faults: emulator.Faults{RateOpPermError: 1}, kind: emulator.FaultOpPermError, created: 1,
			check: func(t *testing.T, r emuResp, err error) {
				op := decodeOp(t, r)
				if op.Done == nil || !*op.Done || op.Error == nil || op.Error.Code != 3 || op.Response != nil {
					t.Errorf("want done with error 3: %s", r.body)
				}
			}},
		{name: "fresh 404", faults: emulator.Faults{RateFresh404: 1}, kind: emulator.FaultFresh404, created: 1,
			check: func(t *testing.T, r emuResp, err error) {
				checkGenericError(t, r, http.StatusNotFound, 5, "Operation not found")
			}},
		{name: "vanish", faults: emulator.Faults{RateVanish: 1}, kind: emulator.FaultVanish, created: 1,
			check: func(t *testing.T, r emuResp, err error) {
				checkGenericError(t, r, http.StatusNotFound, 5, "Operation not found")
			}},
		{name: "no done", faults: emulator.Faults{RateNoDone: 1}, latency: time.Hour, kind: emulator.FaultNoDone, created: 1,
			check: func(t *testing.T, r emuResp, err error) {
				m := decodeMap(t, r.body)
				if _, ok := m["done"]; ok || r.status != http.StatusOK {
					t.Errorf("running operation has done: %s", r.body)
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := emulator.Config{Latency: emulator.Latency{Median: tc.latency}}
			opFault := tc.kind == emulator.FaultOpError || tc.kind == emulator.FaultOpPermError ||
				tc.kind == emulator.FaultFresh404 || tc.kind == emulator.FaultNoDone || tc.kind == emulator.FaultVanish
			if !tc.poll {
				cfg.Faults = tc.faults
			}
			s, base := emuStart(t, cfg)
			msgs := userMsg("fault " + tc.name)
			ctx := t.Context()
			if tc.ctx != nil {
				ctx = tc.ctx(t)
			}
			var r emuResp
			var err error
			if tc.poll || opFault {
				id := submitOK(t, base, msgs)
				s.SetFaults(tc.faults)
				r, err = emuDo(ctx, http.MethodGet, base+"/operations/"+id, "", nil)
			} else {
				r, err = emuDo(ctx, http.MethodPost, base+"/foundationModels/v1/completionAsync", requestBody(testModel, msgs...), nil)
			}
			tc.check(t, r, err)
			st := s.Stats()
			// net/http retries an idempotent GET once when a reused
			// connection breaks, so a poll reset may be injected twice.
			if n := st.Faults[tc.kind]; n != 1 && !(tc.poll && tc.kind == emulator.FaultReset && n == 2) {
				t.Errorf("Faults[%s] = %d, want 1 (all: %v)", tc.kind, st.Faults[tc.kind], st.Faults)
			}
			if st.OpsCreated != tc.created || int64(s.SubmissionsFor(testModel, msgs)) != tc.created {
				t.Errorf("OpsCreated %d, SubmissionsFor %d, want %d", st.OpsCreated, s.SubmissionsFor(testModel, msgs), tc.created)
			}
		})
	}
}

func TestFresh404Once(t *testing.T) {
	s, base := emuStart(t, emulator.Config{Faults: emulator.Faults{RateFresh404: 1}})
	msgs := userMsg("fresh")
	id := submitOK(t, base, msgs)
	checkGenericError(t, mustDo(t, http.MethodGet, base+"/operations/"+id, "", nil), http.StatusNotFound, 5, "Operation not found")
	if got := answerOf(t, mustDo(t, http.MethodGet, base+"/operations/"+id, "", nil)); got != emulator.Answer(testModel, msgs) {
		t.Errorf("answer %q", got)
	}
	if st := s.Stats(); st.NotFound != 0 || st.Faults[emulator.FaultFresh404] != 1 {
		t.Errorf("NotFound %d, fresh404 %d, want 0 and 1", st.NotFound, st.Faults[emulator.FaultFresh404])
	}
}

// TestVanishForGood: a vanished operation answers 404 to every poll, unlike a fresh 404, and was
// created (and counted) all the same.
func TestVanishForGood(t *testing.T) {
	s, base := emuStart(t, emulator.Config{Faults: emulator.Faults{RateVanish: 1}})
	msgs := userMsg("vanish")
	id := submitOK(t, base, msgs)
	for range 3 {
		checkGenericError(t, mustDo(t, http.MethodGet, base+"/operations/"+id, "", nil), http.StatusNotFound, 5, "Operation not found")
	}
	if st := s.Stats(); st.OpsCreated != 1 || s.OperationsFor(testModel, msgs) != 1 || st.Faults[emulator.FaultVanish] != 1 {
		t.Errorf("stats %+v, operations for the request %d; want one created and one vanish fault", st, s.OperationsFor(testModel, msgs))
	}
}

func TestCancel(t *testing.T) {
	tests := []struct {
		name     string
		latency  time.Duration
		wantCode int // 0: finished normally
	}{
		{"running", time.Hour, 1},
		{"already done", 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, base := emuStart(t, emulator.Config{Latency: emulator.Latency{Median: tc.latency}})
			id := submitOK(t, base, userMsg("cancel me"))
			for _, r := range []emuResp{
				mustDo(t, http.MethodGet, base+"/operations/"+id+":cancel", "", nil),
				mustDo(t, http.MethodGet, base+"/operations/"+id, "", nil),
			} {
				op := decodeOp(t, r)
				if op.Done == nil || !*op.Done {
					t.Fatalf("not done: %s", r.body)
				}
				if tc.wantCode == 0 && op.Response == nil || tc.wantCode != 0 && (op.Error == nil || op.Error.Code != tc.wantCode) {
					t.Errorf("body %s, want error code %d", r.body, tc.wantCode)
				}
			}
			if st := s.Stats(); st.OpsDone+st.OpsFailed != 1 || (tc.wantCode != 0) != (st.OpsFailed == 1) {
				t.Errorf("OpsDone %d OpsFailed %d", st.OpsDone, st.OpsFailed)
			}
			// A second cancel changes nothing: the operation is done either way.
			if op := decodeOp(t, mustDo(t, http.MethodGet, base+"/operations/"+id+":cancel", "", nil)); op.Done == nil || !*op.Done {
				t.Errorf("second cancel: %+v", op)
			}
			if st := s.Stats(); st.Cancels != 2 || (tc.wantCode != 0) != (st.Cancelled == 1) || st.Cancelled > 1 {
				t.Errorf("Cancels %d Cancelled %d", st.Cancels, st.Cancelled)
			}
			checkGenericError(t, mustDo(t, http.MethodGet, base+"/operations/d7qqr3frkl81js0udlr9:cancel", "", nil), http.StatusNotFound, 5, "Operation not found")
		})
	}
}

func TestStatsAndDuplicates(t *testing.T) {
	s, base := emuStart(t, emulator.Config{})
	a, b := userMsg("same question"), userMsg("other question")
	var ids []string
	for _, msgs := range [][]emulator.Message{a, b, a, a} {
		ids = append(ids, submitOK(t, base, msgs))
	}
	mustDo(t, http.MethodPost, base+"/foundationModels/v1/completionAsync", `{"bad`, nil)
	for _, id := range ids[:2] {
		mustDo(t, http.MethodGet, base+"/operations/"+id, "", nil)
	}
	if got := len(slices.Compact(slices.Sorted(slices.Values(ids)))); got != 4 {
		t.Errorf("%d distinct ids of 4", got)
	}
	st := s.Stats()
	want := emulator.Stats{Submissions: 5, DuplicateSubmissions: 2, Polls: 2, OpsCreated: 4, OpsDone: 2, Faults: st.Faults}
	// Usage of the 4 operations created, polled or not, as their answers report it.
	for _, msgs := range [][]emulator.Message{a, b, a, a} {
		for _, m := range msgs {
			want.InputTokens += emulator.CountTokens(m.Text)
		}
		_, _, out := emulator.Completion(testModel, msgs, 0)
		want.OutputTokens += out
	}
	if !reflect.DeepEqual(st, want) {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	for _, n := range st.Faults {
		if n != 0 {
			t.Errorf("faults %v", st.Faults)
		}
	}
	for _, c := range []struct {
		msgs []emulator.Message
		want int
	}{{a, 3}, {b, 1}, {userMsg("never sent"), 0}} {
		if got := s.SubmissionsFor(testModel, c.msgs); got != c.want {
			t.Errorf("SubmissionsFor(%q) = %d, want %d", c.msgs[1].Text, got, c.want)
		}
	}
	r := mustDo(t, http.MethodGet, base+"/emulator/stats", "", map[string]string{"Authorization": ""})
	var remote emulator.Stats
	if err := json.Unmarshal(r.body, &remote); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(remote, s.Stats()) {
		t.Errorf("/emulator/stats %+v, want %+v", remote, s.Stats())
	}
}

func TestRoutes(t *testing.T) {
	_, base := emuStart(t, emulator.Config{})
	tests := []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/foundationModels/v1/completionAsync", http.StatusMethodNotAllowed},
		{http.MethodPost, "/operations/d7qqr3frkl81js0udlr9", http.StatusMethodNotAllowed},
		{http.MethodPost, "/operations/d7qqr3frkl81js0udlr9:cancel", http.StatusMethodNotAllowed}, // cancel is a GET
		{http.MethodGet, "/nowhere", http.StatusNotFound},
		{http.MethodPost, "/iam/v1/tokens", http.StatusBadRequest}, // served by the IAM: no JWT
		{http.MethodGet, "/computeMetadata/v1/instance/service-accounts/default/token", http.StatusForbidden},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			if r := mustDo(t, tc.method, base+tc.path, "", nil); r.status != tc.status {
				t.Errorf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
		})
	}
}

func TestConcurrentClients(t *testing.T) {
	s, base := emuStart(t, emulator.Config{Faults: emulator.Faults{RateFresh404: 0.2, RateNoDone: 0.2}, Seed: 3})
	const workers, perWorker = 8, 40
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				msgs := userMsg(fmt.Sprintf("worker %d row %d", w, i%10))
				r, err := emuDo(t.Context(), http.MethodPost, base+"/foundationModels/v1/completionAsync", requestBody(testModel, msgs...), nil)
				if err != nil || r.status != http.StatusOK {
					t.Errorf("submit: %v %d", err, r.status)
					return
				}
				var op struct{ ID string }
				_ = json.Unmarshal(r.body, &op)
				for range 2 { // a fresh 404 may come first
					r, err = emuDo(t.Context(), http.MethodGet, base+"/operations/"+op.ID, "", nil)
					if err != nil {
						t.Errorf("poll: %v", err)
						return
					}
					if r.status == http.StatusOK {
						break
					}
				}
				var got doneOp
				if err := json.Unmarshal(r.body, &got); err != nil || got.Response == nil ||
					got.Response.Alternatives[0].Message.Text != emulator.Answer(testModel, msgs) {
					t.Errorf("poll %s: %d %s", op.ID, r.status, r.body)
					return
				}
			}
		})
	}
	wg.Wait()
	st := s.Stats()
	if st.OpsCreated != workers*perWorker || st.DuplicateSubmissions != workers*(perWorker-10) || st.OpsDone != st.OpsCreated {
		t.Errorf("stats %+v", st)
	}
}

func TestServeHTTPWithoutListener(t *testing.T) {
	// A reset on a connection that cannot be hijacked degrades to a 503.
	s := emulator.New(emulator.Config{NoAuth: true, Faults: emulator.Faults{RateReset: 1}})
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/foundationModels/v1/completionAsync",
		strings.NewReader(requestBody(testModel, userMsg("x")...))))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("status %d, want 503", rec.Code)
	}
	if err := s.Close(); err != nil {
		t.Errorf("close of a server never started: %v", err)
	}
}

func TestAnswerAndTokens(t *testing.T) {
	long := strings.Repeat("ж", 100)
	tests := []struct {
		name  string
		model string
		msgs  []emulator.Message
		quote string
	}{
		{"last user message", testModel, userMsg("hello"), "hello"},
		{"quote truncated to 80 runes", testModel, userMsg(long), strings.Repeat("ж", 80)},
		{"no user message", testModel, []emulator.Message{{Role: "system", Text: "sys"}}, "sys"},
		{"user before assistant", testModel, []emulator.Message{{Role: "user", Text: "q"}, {Role: "assistant", Text: "a"}}, "q"},
		{"no messages", testModel, nil, ""},
	}
	re := regexp.MustCompile(`^emulated answer [0-9a-f]{8} to: `)
	seen := map[string]bool{}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := emulator.Answer(tc.model, tc.msgs)
			if !re.MatchString(got) || strings.TrimPrefix(got, re.FindString(got)) != tc.quote {
				t.Errorf("Answer = %q, want the prefix and quote %q", got, tc.quote)
			}
			if got != emulator.Answer(tc.model, slices.Clone(tc.msgs)) {
				t.Error("Answer is not deterministic")
			}
			if seen[got] {
				t.Errorf("answer %q repeats", got)
			}
			seen[got] = true
		})
	}
	a := emulator.Answer(testModel, userMsg("x"))
	if a == emulator.Answer("gpt://"+testFolder+"/yandexgpt-lite/latest", userMsg("x")) {
		t.Error("Answer does not depend on the model")
	}
	other := userMsg("x")
	other[0].Text = "Be verbose."
	if a == emulator.Answer(testModel, other) {
		t.Error("Answer does not depend on the system message")
	}

	for _, c := range []struct {
		text string
		want int64
	}{{"", 0}, {" ", 1}, {"a", 1}, {"two words", 2}, {"  spaced \n\t out  ", 2}, {"привет, мир", 2}} {
		if got := emulator.CountTokens(c.text); got != c.want {
			t.Errorf("CountTokens(%q) = %d, want %d", c.text, got, c.want)
		}
	}
}

func TestParseLatency(t *testing.T) {
	tests := []struct {
		in      string
		want    emulator.Latency
		wantErr string
	}{
		{in: "0", want: emulator.Latency{Kind: "fixed"}},
		{in: "2s", want: emulator.Latency{Kind: "fixed", Median: 2 * time.Second}},
		{in: " fixed:150ms ", want: emulator.Latency{Kind: "fixed", Median: 150 * time.Millisecond}},
		{in: "uniform:100ms:2s", want: emulator.Latency{Kind: "uniform", Median: 1050 * time.Millisecond, Max: 2 * time.Second}},
		{in: "uniform:1s:1s", want: emulator.Latency{Kind: "uniform", Median: time.Second, Max: time.Second}},
		{in: "lognormal:1s:0.8", want: emulator.Latency{Kind: "lognormal", Median: time.Second, Sigma: 0.8}},
		{in: "lognormal:4s:1.5:2m", want: emulator.Latency{Kind: "lognormal", Median: 4 * time.Second, Sigma: 1.5, Max: 2 * time.Minute}},
		{in: "", wantErr: "empty spec"},
		{in: "5", wantErr: "missing unit"},
		{in: "-1s", wantErr: "negative duration"},
		{in: "gauss:1s", wantErr: `unknown kind "gauss"`},
		{in: "fixed", wantErr: "want a duration"},
		{in: "uniform:1s", wantErr: "want uniform:<min>:<max>"},
		{in: "uniform:3s:1s", wantErr: "min 3s exceeds max 1s"},
		{in: "uniform:x:1s", wantErr: "min: time: invalid duration"},
		{in: "lognormal:1s", wantErr: "want lognormal:<median>:<sigma>[:<max>]"},
		{in: "lognormal:1s:-1", wantErr: "not a finite number >= 0"},
		{in: "lognormal:1s:NaN", wantErr: "not a finite number >= 0"},
		{in: "lognormal:1s:0.5:500ms", wantErr: "below median"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := emulator.ParseLatency(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
			again, err := emulator.ParseLatency(got.String())
			if err != nil || again != got {
				t.Errorf("String %q parses to %+v, %v", got.String(), again, err)
			}
		})
	}
}

func TestParseFaults(t *testing.T) {
	tests := []struct {
		in      string
		want    emulator.Faults
		wantErr string
	}{
		{in: "", want: emulator.Faults{}},
		{in: "429=0.1, reset=0.05,slow=1,slow_delay=3s", want: emulator.Faults{Rate429: 0.1, RateReset: 0.05, RateSlow: 1, SlowDelay: 3 * time.Second}},
		{in: "500=0.01,503=0.02,garbage=0.03,op_error=0.04,op_perm_error=0.05,fresh404=0.06,no_done=0.07,submit_lost=0.08",
			want: emulator.Faults{Rate500: 0.01, Rate503: 0.02, RateGarbage: 0.03, RateOpError: 0.04, RateOpPermError: 0.05,
				RateFresh404: 0.06, RateNoDone: 0.07, RateSubmitLost: 0.08}},
		{in: "content_filter=0.09", want: emulator.Faults{RateContentFilter: 0.09}},
		{in: "teapot=0.1", wantErr: `unknown kind "teapot"`},
		{in: "429", wantErr: "is not kind=value"},
		{in: "429=2", wantErr: "not a probability"},
		{in: "429=x", wantErr: "not a probability"},
		{in: "slow_delay=-1s", wantErr: "slow_delay"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := emulator.ParseFaults(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func FuzzSubmitBody(f *testing.F) {
	for _, name := range []string{"camel.json", "snake.json", "tools.json"} {
		b, err := os.ReadFile(filepath.Join("testdata", "requests", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, seed := range []string{
		``, `{}`, `null`, `[]`, `{"modelUri":`, `{"model_uri":"gpt://f/m","messages":[{"role":"user","text":"a"}]}`,
		`{"modelUri":"gpt://f/m","completionOptions":{"maxTokens":1e30,"temperature":"Infinity"},"messages":[{"role":"user","text":"a"}]}`,
		`{"modelUri":"ds://f/x","messages":[{"role":"assistant","toolCallList":{},"text":"a"}]}`,
		`{"modelUri":"gpt://f/m/v","messages":[{"role":"user","text":"a"}],"jsonObject":true,"jsonSchema":{"schema":1}}`,
	} {
		f.Add([]byte(seed))
	}
	s := emulator.New(emulator.Config{NoAuth: true})
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/foundationModels/v1/completionAsync", bytes.NewReader(body)))
		if rec.Code != http.StatusOK && rec.Code != http.StatusBadRequest {
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body)
		}
		if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("invalid JSON answer for %q: %s", body, rec.Body)
		}
		if rec.Code != http.StatusOK {
			return
		}
		var op struct{ ID string }
		if err := json.Unmarshal(rec.Body.Bytes(), &op); err != nil || !opIDRe.MatchString(op.ID) {
			t.Fatalf("bad operation %s", rec.Body)
		}
		rec = httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/operations/"+op.ID, nil))
		if rec.Code != http.StatusOK || !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("poll %s: %d %s", op.ID, rec.Code, rec.Body)
		}
	})
}

func FuzzParseLatency(f *testing.F) {
	for _, seed := range []string{"0", "2s", "fixed:1ms", "uniform:100ms:2s", "lognormal:1s:0.8", "lognormal:1s:0.8:1m", "uniform:1ns:4ns", "x:y:z"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := emulator.ParseLatency(s)
		if err != nil {
			return
		}
		again, err := emulator.ParseLatency(l.String())
		if err != nil || again != l {
			t.Fatalf("%q → %+v → %q → %+v, %v", s, l, l.String(), again, err)
		}
	})
}

func TestLifecycle(t *testing.T) {
	iam := emulator.NewIAM(time.Minute, nil)
	var logged sync.WaitGroup
	logged.Add(1)
	var once sync.Once
	s := emulator.New(emulator.Config{
		IAM:    iam,
		NoAuth: true,
		Faults: emulator.Faults{RateReset: 1},
		Logf:   func(string, ...any) { once.Do(logged.Done) },
	})
	if s.IAM() != iam {
		t.Error("IAM() is not the configured IAM")
	}
	base, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Start("127.0.0.1:0"); err == nil {
		t.Error("second Start succeeded")
	}
	// The reset reaches the connection through the logging wrapper.
	if r, err := emuDo(t.Context(), http.MethodPost, base+"/foundationModels/v1/completionAsync", requestBody(testModel, userMsg("x")...), nil); err == nil {
		t.Errorf("want a connection error, got %d %s", r.status, r.body)
	}
	logged.Wait()
	for range 2 {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}
	if _, err := emuDo(t.Context(), http.MethodGet, base+"/emulator/stats", "", nil); err == nil {
		t.Error("the server still answers after Close")
	}
}

// TestAlternativeStatuses checks how an operation's alternative status is chosen (docs/api.md
// §3): TRUNCATED_FINAL when the answer is longer than maxTokens (cut to it, with maxTokens
// completion tokens), CONTENT_FILTER for the trigger in any message or the content_filter fault,
// FINAL otherwise.
func TestAlternativeStatuses(t *testing.T) {
	const question = "How long is the Ob river?"
	full := emulator.Answer(testModel, userMsg(question))
	words := emulator.CountTokens(full)
	tests := []struct {
		name       string
		msgs       []emulator.Message
		maxTokens  int64 // 0: not sent
		asNumber   bool  // maxTokens as a JSON number, not the string proto-JSON writes
		faults     emulator.Faults
		wantStatus string
		wantText   string
		wantOut    int64 // completion tokens
		wantIn     bool  // input tokens are counted
	}{
		{name: "no limit", msgs: userMsg(question), wantStatus: emulator.StatusFinal, wantText: full, wantOut: words, wantIn: true},
		{name: "limit above the answer", msgs: userMsg(question), maxTokens: words + 1,
			wantStatus: emulator.StatusFinal, wantText: full, wantOut: words, wantIn: true},
		{name: "limit equal to the answer", msgs: userMsg(question), maxTokens: words, asNumber: true,
			wantStatus: emulator.StatusFinal, wantText: full, wantOut: words, wantIn: true},
		{name: "limit below the answer", msgs: userMsg(question), maxTokens: 3,
			wantStatus: emulator.StatusTruncatedFinal, wantText: strings.Join(strings.Fields(full)[:3], " "), wantOut: 3, wantIn: true},
		{name: "trigger in the user message", msgs: userMsg("tell me " + emulator.ContentFilterTrigger),
			wantStatus: emulator.StatusContentFilter, wantText: emulator.FilteredAnswer},
		{name: "trigger in the system message", msgs: []emulator.Message{{Role: "system", Text: emulator.ContentFilterTrigger}, {Role: "user", Text: "hi"}},
			maxTokens: 1, wantStatus: emulator.StatusContentFilter, wantText: emulator.FilteredAnswer},
		{name: "content_filter fault", msgs: userMsg(question), faults: emulator.Faults{RateContentFilter: 1},
			wantStatus: emulator.StatusContentFilter, wantText: emulator.FilteredAnswer},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, base := emuStart(t, emulator.Config{Faults: tc.faults, Seed: 9})
			opts := map[string]any{}
			switch {
			case tc.asNumber:
				opts["maxTokens"] = tc.maxTokens
			case tc.maxTokens > 0:
				opts["maxTokens"] = fmt.Sprint(tc.maxTokens)
			}
			body, _ := json.Marshal(map[string]any{"modelUri": testModel, "completionOptions": opts, "messages": tc.msgs})
			r := mustDo(t, http.MethodPost, base+"/foundationModels/v1/completionAsync", string(body), nil)
			if r.status != http.StatusOK {
				t.Fatalf("submit: %d %s", r.status, r.body)
			}
			var sub struct{ ID string }
			if err := json.Unmarshal(r.body, &sub); err != nil {
				t.Fatal(err)
			}
			op := decodeOp(t, mustDo(t, http.MethodGet, base+"/operations/"+sub.ID, "", nil))
			if op.Response == nil || len(op.Response.Alternatives) != 1 {
				t.Fatalf("no response: %+v", op)
			}
			alt, u := op.Response.Alternatives[0], op.Response.Usage
			if alt.Status != tc.wantStatus || alt.Message.Text != tc.wantText {
				t.Fatalf("alternative %+v; want %s %q", alt, tc.wantStatus, tc.wantText)
			}
			var in int64
			if tc.wantIn {
				for _, m := range tc.msgs {
					in += emulator.CountTokens(m.Text)
				}
			}
			if u.InputTextTokens != fmt.Sprint(in) || u.CompletionTokens != fmt.Sprint(tc.wantOut) || u.TotalTokens != fmt.Sprint(in+tc.wantOut) {
				t.Errorf("usage %+v; want %d in, %d out", u, in, tc.wantOut)
			}
			if tc.faults == (emulator.Faults{}) {
				text, status, out := emulator.Completion(testModel, tc.msgs, tc.maxTokens)
				if text != tc.wantText || status != tc.wantStatus || out != tc.wantOut {
					t.Errorf("Completion = %q %s %d; the emulator answered %q %s %d", text, status, out, tc.wantText, tc.wantStatus, tc.wantOut)
				}
			}
			st := s.Stats()
			wantTrunc, wantFiltered, wantFault := 0, 0, 0
			switch tc.wantStatus {
			case emulator.StatusTruncatedFinal:
				wantTrunc = 1
			case emulator.StatusContentFilter:
				wantFiltered = 1
				if tc.faults.RateContentFilter > 0 {
					wantFault = 1
				}
			}
			if st.Truncated != int64(wantTrunc) || st.ContentFiltered != int64(wantFiltered) || st.Faults[emulator.FaultContentFilter] != int64(wantFault) {
				t.Errorf("stats: truncated %d, content filtered %d, fault %d", st.Truncated, st.ContentFiltered, st.Faults[emulator.FaultContentFilter])
			}
		})
	}
}

func TestTruncate(t *testing.T) {
	tests := []struct {
		in   string
		max  int64
		want string
		cut  bool
	}{
		{"one two three", 0, "one two three", false},
		{"one two three", 3, "one two three", false},
		{"one two three", 2, "one two", true},
		{"one  two\n three ", 1, "one", true},
		{"  lead two", 1, "  lead", true},
		{"привет, мир", 1, "привет,", true},
		{"", 1, "", false},
	}
	for _, tc := range tests {
		got, cut := emulator.Truncate(tc.in, tc.max)
		if got != tc.want || cut != tc.cut {
			t.Errorf("Truncate(%q, %d) = %q, %v; want %q, %v", tc.in, tc.max, got, cut, tc.want, tc.cut)
		}
		if cut && emulator.CountTokens(got) != tc.max {
			t.Errorf("Truncate(%q, %d) kept %d tokens", tc.in, tc.max, emulator.CountTokens(got))
		}
	}
}
