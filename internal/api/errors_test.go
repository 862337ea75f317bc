package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unicode/utf8"

	"github.com/batchgpt/batchgpt/internal/retry"
)

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "errors", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseError(t *testing.T) {
	longText := strings.Repeat("line of a proxy page\n", 50)
	tests := []struct {
		name       string
		status     int
		body       []byte
		header     map[string]string
		wantCode   int
		wantMsg    string // exact, unless wantMsgSub
		wantMsgSub string
		wantClass  retry.Class
	}{
		{
			name: "gateway 429 (docs/api.md §4)", status: 429, body: readTestdata(t, "gateway-429.json"),
			wantCode: 8, wantMsg: "ai.textGenerationCompletionSessionsCount.count gauge quota limit exceed: allowed 1 requests",
			wantClass: retry.Quota,
		},
		{
			name: "gateway 400 bad role", status: 400, body: readTestdata(t, "gateway-400-role.json"),
			wantCode: 3, wantMsgSub: "invalid message role 'robot'", wantClass: retry.Permanent,
		},
		{
			name: "gateway 500", status: 500,
			body:     []byte(`{"error":{"grpcCode":13,"httpCode":500,"message":"Internal error","httpStatus":"Internal Server Error","details":[]}}`),
			wantCode: 13, wantMsg: "Internal error", wantClass: retry.Transient,
		},
		{
			name: "gateway 503", status: 503,
			body:     []byte(`{"error":{"grpcCode":14,"httpCode":503,"message":"Service is temporarily unavailable"}}`),
			wantCode: 14, wantMsg: "Service is temporarily unavailable", wantClass: retry.Transient,
		},
		{
			name: "gateway 504 deadline", status: 504,
			body:     []byte(`{"error":{"grpcCode":4,"httpCode":504,"message":"deadline exceeded"}}`),
			wantCode: 4, wantMsg: "deadline exceeded", wantClass: retry.Transient,
		},
		{
			name: "gateway without grpcCode", status: 400,
			body:     []byte(`{"error":{"message":"something odd"}}`),
			wantCode: 0, wantMsg: "something odd", wantClass: retry.Permanent,
		},
		{
			name: "gateway grpcCode as string is tolerated", status: 429,
			body:     []byte(`{"error":{"grpcCode":"8","message":"quota"}}`),
			wantCode: 0, wantMsgSub: `"grpcCode":"8"`, wantClass: retry.Quota,
		},
		{
			name: "generic 401 (docs/api.md §4)", status: 401, body: readTestdata(t, "generic-401.json"),
			wantCode: 16, wantMsg: "Token is invalid or has expired.", wantClass: retry.Auth,
		},
		{
			name: "generic 403", status: 403,
			body:     []byte(`{"code":7,"message":"Permission denied","details":[]}`),
			wantCode: 7, wantMsg: "Permission denied", wantClass: retry.Auth,
		},
		{
			name: "generic 404", status: 404,
			body:     []byte(`{"code":5,"message":"Operation not found","details":[]}`),
			wantCode: 5, wantMsg: "Operation not found", wantClass: retry.NotFound,
		},
		{
			name: "generic code as a string", status: 401,
			body:     []byte(`{"code":"16","message":"Unknown api key"}`),
			wantCode: 16, wantMsg: "Unknown api key", wantClass: retry.Auth,
		},
		{
			name: "generic without message", status: 500,
			body:     []byte(`{"code":13}`),
			wantCode: 13, wantMsg: `{"code":13}`, wantClass: retry.Transient,
		},
		{
			name: "unmarshal error body (docs/api.md §4)", status: 400, body: readTestdata(t, "unmarshal-400.json"),
			wantCode: 3, wantMsg: "invalid character 'x' looking for beginning of value", wantClass: retry.Permanent,
		},
		{
			name: "unmarshal error body, empty message", status: 400,
			body:     []byte(`{"error":"proto: syntax error (line 1:2): unexpected token","code":3,"message":"","details":[]}`),
			wantCode: 3, wantMsg: "proto: syntax error (line 1:2): unexpected token", wantClass: retry.Permanent,
		},
		{
			name: "non-JSON proxy page", status: 502, body: readTestdata(t, "html-502.html"),
			wantCode: 0, wantMsgSub: "<title>502 Bad Gateway</title>", wantClass: retry.Transient,
		},
		{
			name: "long non-JSON body is cut", status: 500, body: []byte(longText),
			wantCode: 0, wantMsgSub: "line of a proxy page line of", wantClass: retry.Transient,
		},
		{
			// 2-byte runes at an odd offset: a cut at a fixed byte count would split one.
			name: "long non-JSON body in Russian is cut at a rune", status: 502, body: []byte("xy" + strings.Repeat("шлюз недоступен ", 20)),
			wantCode: 0, wantMsgSub: "xyшлюз недоступен", wantClass: retry.Transient,
		},
		{
			name: "empty body", status: 503, body: nil,
			wantCode: 0, wantMsg: "", wantClass: retry.Transient,
		},
		{
			name: "JSON array", status: 400, body: []byte(`[1,2]`),
			wantCode: 0, wantMsg: "[1,2]", wantClass: retry.Permanent,
		},
		{
			name: "headers are kept", status: 429, body: []byte(`{"code":8,"message":"slow down"}`),
			header:   map[string]string{"x-request-id": "req-1", "Retry-After": "3"},
			wantCode: 8, wantMsg: "slow down", wantClass: retry.Quota,
		},
		{
			name: "408 is transient", status: 408, body: []byte(`{}`),
			wantCode: 0, wantMsg: "{}", wantClass: retry.Transient,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := &http.Response{StatusCode: tt.status, Header: http.Header{}}
			for k, v := range tt.header {
				resp.Header.Set(k, v)
			}
			e := parseError("submit", resp, tt.body)
			if e.Op != "submit" || e.HTTPStatus != tt.status {
				t.Errorf("op, status = %q, %d; want submit, %d", e.Op, e.HTTPStatus, tt.status)
			}
			if e.Code != tt.wantCode {
				t.Errorf("code = %d, want %d", e.Code, tt.wantCode)
			}
			if tt.wantMsgSub != "" {
				if !strings.Contains(e.Message, tt.wantMsgSub) {
					t.Errorf("message = %q, want it to contain %q", e.Message, tt.wantMsgSub)
				}
			} else if e.Message != tt.wantMsg {
				t.Errorf("message = %q, want %q", e.Message, tt.wantMsg)
			}
			if strings.Contains(e.Message, "\n") || len(e.Message) > 203 || !utf8.ValidString(e.Message) {
				t.Errorf("message is not one short line of text: %q", e.Message)
			}
			if got := e.RequestID; got != tt.header["x-request-id"] {
				t.Errorf("request id = %q, want %q", got, tt.header["x-request-id"])
			}
			if got := e.RetryAfter; got != tt.header["Retry-After"] {
				t.Errorf("retry-after = %q, want %q", got, tt.header["Retry-After"])
			}
			if got := retry.Classify(e); got != tt.wantClass {
				t.Errorf("Classify = %v, want %v", got, tt.wantClass)
			}
			// The wrapped error is classified the same way.
			if got := retry.Classify(fmt.Errorf("row 7: %w", e)); got != tt.wantClass {
				t.Errorf("retry.Classify(wrapped) = %v, want %v", got, tt.wantClass)
			}
		})
	}
}

func TestErrorString(t *testing.T) {
	tests := []struct {
		err  *Error
		want string
	}{
		{&Error{Op: "submit", HTTPStatus: 400, Code: 3, Message: "bad role"}, "submit: HTTP 400 (code 3): bad role"},
		{&Error{Op: "submit", HTTPStatus: 503}, "submit: HTTP 503: Service Unavailable"},
		{&Error{Op: "get operation x", HTTPStatus: 404, Code: 5, Message: "Operation not found", RequestID: "r1"},
			"get operation x: HTTP 404 (code 5): Operation not found [x-request-id r1]"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

// dialError is what the transport returns when nothing listens on the port.
func dialError() error {
	return &url.Error{Op: "Post", URL: "http://127.0.0.1:1/x", Err: &net.OpError{
		Op: "dial", Net: "tcp", Err: &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED},
	}}
}

func TestClassify(t *testing.T) {
	apiErr := func(status, code int) error { return &Error{Op: "submit", HTTPStatus: status, Code: code} }
	tests := []struct {
		name string
		err  error
		want retry.Class
	}{
		{"400 invalid argument", apiErr(400, 3), retry.Permanent},
		{"400 without code", apiErr(400, 0), retry.Permanent},
		{"409", apiErr(409, 0), retry.Permanent},
		{"413", apiErr(413, 3), retry.Permanent},
		{"401", apiErr(401, 16), retry.Auth},
		{"401 without code", apiErr(401, 0), retry.Auth},
		{"403", apiErr(403, 7), retry.Auth},
		{"code 16 on a 400", apiErr(400, 16), retry.Auth},
		{"code 7 on a 400", apiErr(400, 7), retry.Auth},
		{"404", apiErr(404, 5), retry.NotFound},
		{"404 without code", apiErr(404, 0), retry.NotFound},
		{"408", apiErr(408, 0), retry.Transient},
		{"429", apiErr(429, 8), retry.Quota},
		{"429 without code", apiErr(429, 0), retry.Quota},
		{"code 8 on a 400", apiErr(400, 8), retry.Quota},
		{"500", apiErr(500, 13), retry.Transient},
		{"502 without body", apiErr(502, 0), retry.Transient},
		{"503", apiErr(503, 14), retry.Transient},
		{"504", apiErr(504, 4), retry.Transient},
		{"code 14 on a 400", apiErr(400, 14), retry.Transient},
		{"code 4 on a 400", apiErr(400, 4), retry.Transient},
		{"body error", &BodyError{Op: "submit", Err: io.ErrUnexpectedEOF}, retry.Transient},
		{"too many attempts keeps the last class", fmt.Errorf("%w (3 tries): %w", ErrTooManyAttempts, apiErr(503, 14)), retry.Transient},
		{"connection refused", dialError(), retry.Transient},
		{"connection reset", &url.Error{Op: "Post", URL: "u", Err: syscall.ECONNRESET}, retry.Transient},
		{"unexpected EOF", &url.Error{Op: "Post", URL: "u", Err: io.ErrUnexpectedEOF}, retry.Transient},
		{"plain error", errors.New("something"), retry.Transient},
		{"context ended", &ctxError{context.Canceled}, retry.Canceled},
		{"context ended, wrapped", fmt.Errorf("row 3: %w", &ctxError{context.DeadlineExceeded}), retry.Canceled},
		{"local", &buildError{errors.New("journal full")}, retry.Local},
		{"local, wrapped", fmt.Errorf("x: %w", &buildError{errors.New("journal full")}), retry.Local},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := retry.Classify(tt.err); got != tt.want {
				t.Errorf("retry.Classify(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestReachedServer(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"connection refused", dialError(), false},
		{"dns failure", &url.Error{Op: "Post", URL: "u", Err: &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "x"}}}, false},
		{"dial timeout", &url.Error{Op: "Post", URL: "u", Err: &net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}}, false},
		{"dial error wrapped by do", fmt.Errorf("submit: %w", dialError()), false},
		{"reset while reading", &url.Error{Op: "Post", URL: "u", Err: &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}}, true},
		{"unexpected EOF", &url.Error{Op: "Post", URL: "u", Err: io.ErrUnexpectedEOF}, true},
		{"request timeout", &url.Error{Op: "Post", URL: "u", Err: context.DeadlineExceeded}, true},
		{"500", &Error{HTTPStatus: 500, Code: 13}, true},
		{"503", &Error{HTTPStatus: 503, Code: 14}, true},
		{"504", &Error{HTTPStatus: 504}, true},
		{"400", &Error{HTTPStatus: 400, Code: 3}, false},
		{"401", &Error{HTTPStatus: 401, Code: 16}, false},
		{"403", &Error{HTTPStatus: 403, Code: 7}, false},
		{"429", &Error{HTTPStatus: 429, Code: 8}, false},
		{"garbage 200", &BodyError{Op: "submit", Err: io.ErrUnexpectedEOF}, true},
		{"local", &buildError{errors.New("journal")}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := reachedServer(tt.err); got != tt.want {
				t.Errorf("reachedServer(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

// FuzzParseError checks that no body makes parseError panic or lose the status, and that the
// message stays one bounded line.
func FuzzParseError(f *testing.F) {
	for _, s := range []string{
		`{"error":{"grpcCode":8,"httpCode":429,"message":"quota"}}`,
		`{"code":16,"message":"Token is invalid or has expired.","details":[]}`,
		`{"error":"invalid character","code":3,"message":"","details":[]}`,
		`{"error":null,"code":null}`,
		`{"code":1e400}`,
		`{"code":"abc"}`,
		`null`, `[]`, `"text"`, ``, "<html>\n</html>", "\xff\xfe",
	} {
		f.Add(503, []byte(s))
	}
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		e := parseError("submit", &http.Response{StatusCode: status, Header: http.Header{}}, body)
		if e.HTTPStatus != status {
			t.Fatalf("status = %d, want %d", e.HTTPStatus, status)
		}
		_ = e.Error()
		_ = retry.Classify(e)
		if json.Valid(body) {
			return // the server's own message is kept as sent
		}
		// An unparseable body is shown as a short one-line snippet.
		if strings.Contains(e.Message, "\n") || len(e.Message) > 203 {
			t.Fatalf("snippet is not one short line: %q", e.Message)
		}
		if utf8.Valid(body) && !utf8.ValidString(e.Message) {
			t.Fatalf("snippet of valid UTF-8 is not valid UTF-8: %q", e.Message)
		}
	})
}
