// Package api is the HTTP client of the YandexGPT async API: submitting completionAsync requests,
// reading operations, classifying errors and retrying what can be retried, with one shared pacer
// per quota so that the whole process backs off together.
package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"unicode/utf8"

	"github.com/batchgpt/batchgpt/internal/codes"
	"github.com/batchgpt/batchgpt/internal/retry"
)

// Error is an error answer of the API. It carries both the HTTP status and the gRPC code because
// the gateway (llm.api) and the generic Yandex Cloud REST body (operation.api) report them differently.
type Error struct {
	Op         string // "submit" or "get operation"
	HTTPStatus int
	Code       int // google.rpc.Code (see internal/codes); 0 when the body did not say
	Message    string
	RequestID  string // x-request-id of the answer, for support
	RetryAfter string // raw Retry-After header, if any
	// credentials is set when the credentials source failed and nothing was sent.
	credentials bool
}

func (e *Error) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.HTTPStatus)
	}
	s := fmt.Sprintf("%s: HTTP %d", e.Op, e.HTTPStatus)
	if e.Code != 0 {
		s += fmt.Sprintf(" (code %d)", e.Code)
	}
	s += ": " + msg
	if e.RequestID != "" {
		s += " [x-request-id " + e.RequestID + "]"
	}
	return s
}

// BodyError is a 2xx answer whose body could not be understood (truncated or not JSON).
// It is transient: a proxy or an overloaded server produced it.
type BodyError struct {
	Op  string
	Err error
}

func (e *BodyError) Error() string { return fmt.Sprintf("%s: unreadable answer: %v", e.Op, e.Err) }
func (e *BodyError) Unwrap() error { return e.Err }

// ErrTooManyAttempts wraps the last error when a call gave up after its attempt limit.
var ErrTooManyAttempts = errors.New("gave up after the attempt limit")

// The errors of this package know their class (retry.Classed), so that retry.Classify decides
// what to do about any of them; what each class means is the retry package's.

// RetryClass is the class of an error answer: retry.Of its HTTP status and gRPC code.
func (e *Error) RetryClass() retry.Class { return retry.Of(e.HTTPStatus, codes.Code(e.Code)) }

// RetryClass: an unreadable answer is transient, a proxy or an overloaded server produced it.
func (e *BodyError) RetryClass() retry.Class { return retry.Transient }

// RetryClass: nothing was sent, and sending it would not help.
func (e *buildError) RetryClass() retry.Class { return retry.Local }

// RetryClass: the caller's context ended.
func (e *ctxError) RetryClass() retry.Class { return retry.Canceled }

// PermissionDenied reports whether err is the API refusing what the request asks for (403,
// PERMISSION_DENIED): a model that needs access on request, a folder the credentials cannot use
// (docs/api.md §4). It is an Auth error; whether it concerns the run or one row is the caller's call.
func PermissionDenied(err error) bool {
	var ae *Error
	return errors.As(err, &ae) && (ae.HTTPStatus == http.StatusForbidden || codes.Code(ae.Code) == codes.PermissionDenied)
}

// reachedServer reports whether a failed submission may have created an operation on the server.
// Only a failure to connect at all proves it did not; everything else (a 5xx, a reset after the
// request was written, a timeout, a garbage answer) may hide a created, billed operation.
func reachedServer(err error) bool {
	var le *buildError
	if errors.As(err, &le) {
		return false
	}
	var ae *Error
	if errors.As(err, &ae) {
		// The gateway rejects 4xx (429 included) before creating anything.
		return ae.HTTPStatus >= 500
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return false
	}
	return true
}

// parseError builds an *Error from an error answer. Both body shapes of docs/api.md §4 are understood:
// the gateway's {"error":{"grpcCode","httpCode","message"}} and the generic {"code","message"};
// also {"error":"text","code":3,"message":..} for malformed JSON.
func parseError(op string, resp *http.Response, body []byte) *Error {
	e := &Error{Op: op, HTTPStatus: resp.StatusCode, RequestID: resp.Header.Get("x-request-id"), RetryAfter: resp.Header.Get("Retry-After")}
	var raw struct {
		Error   json.RawMessage `json:"error"`
		Code    json.Number     `json:"code"`
		Message string          `json:"message"`
	}
	if json.Unmarshal(body, &raw) != nil {
		e.Message = snippet(body)
		return e
	}
	e.Message = raw.Message
	if c, err := strconv.Atoi(raw.Code.String()); err == nil {
		e.Code = c
	}
	if len(raw.Error) > 0 {
		var gw struct {
			GRPCCode int    `json:"grpcCode"`
			Message  string `json:"message"`
		}
		var text string
		switch {
		case json.Unmarshal(raw.Error, &gw) == nil:
			if gw.GRPCCode != 0 {
				e.Code = gw.GRPCCode
			}
			if gw.Message != "" {
				e.Message = gw.Message
			}
		case json.Unmarshal(raw.Error, &text) == nil && e.Message == "":
			e.Message = text
		}
	}
	if e.Message == "" {
		e.Message = snippet(body)
	}
	return e
}

// snippet keeps an unparseable body short and on one line for an error message.
func snippet(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) > 200 {
		n := 200
		for n > 0 && !utf8.RuneStart(b[n]) {
			n-- // do not split a rune
		}
		b = append(b[:n:n], "..."...)
	}
	return string(bytes.ReplaceAll(b, []byte("\n"), []byte(" ")))
}
