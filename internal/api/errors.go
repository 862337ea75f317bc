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
)

// Class says what a caller should do about an error.
type Class int

const (
	// Permanent errors fail the row (a 400, an unknown model): sending it again would fail again.
	Permanent Class = iota
	// Transient errors (5xx, connection resets, timeouts, garbage bodies) are retried with back-off.
	Transient
	// Quota errors (429) are retried after slowing the shared pacer.
	Quota
	// Auth errors (401, 403) stop the run unless the credentials can be refreshed.
	Auth
	// NotFound is a 404 for an operation: fresh (not visible yet) or purged after retention.
	NotFound
	// Canceled means the context ended.
	Canceled
	// Local is a failure on our side before anything was sent (the journal could not be written).
	Local
)

func (c Class) String() string {
	switch c {
	case Permanent:
		return "permanent"
	case Transient:
		return "transient"
	case Quota:
		return "quota"
	case Auth:
		return "auth"
	case NotFound:
		return "not-found"
	case Canceled:
		return "canceled"
	case Local:
		return "local"
	}
	return "unknown"
}

// Error is an error answer of the API. It carries both the HTTP status and the gRPC code because
// the gateway (llm.api) and the generic Yandex Cloud REST body (operation.api) report them differently.
type Error struct {
	Op         string // "submit" or "get operation"
	HTTPStatus int
	Code       int // google.rpc.Code; 0 when the body did not say
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

// Classify decides what to do about an error returned by this package. It is the one place where
// the retry policy is decided.
func Classify(err error) Class {
	if err == nil {
		return Permanent
	}
	if errors.Is(err, errContext) {
		return Canceled
	}
	var le *buildError
	if errors.As(err, &le) {
		return Local
	}
	var ae *Error
	if errors.As(err, &ae) {
		switch {
		case ae.HTTPStatus == http.StatusTooManyRequests || ae.Code == 8:
			return Quota
		case ae.HTTPStatus == http.StatusUnauthorized || ae.HTTPStatus == http.StatusForbidden || ae.Code == 16 || ae.Code == 7:
			return Auth
		case ae.HTTPStatus == http.StatusNotFound:
			return NotFound
		case ae.HTTPStatus >= 500, ae.HTTPStatus == http.StatusRequestTimeout, ae.Code == 14, ae.Code == 4:
			return Transient
		}
		return Permanent
	}
	var be *BodyError
	if errors.As(err, &be) {
		return Transient
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return Transient
	}
	// Connection resets, unexpected EOFs and other transport failures.
	return Transient
}

// PermissionDenied reports whether err is the API refusing what the request asks for (403,
// PERMISSION_DENIED): a model that needs access on request, a folder the credentials cannot use
// (docs/api.md §4). It is an Auth error; whether it concerns the run or one row is the caller's call.
func PermissionDenied(err error) bool {
	var ae *Error
	return errors.As(err, &ae) && (ae.HTTPStatus == http.StatusForbidden || ae.Code == 7)
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

// TransientOperationCode reports whether a failed operation's google.rpc.Code is worth a new
// submission: INTERNAL, UNAVAILABLE, RESOURCE_EXHAUSTED and DEADLINE_EXCEEDED.
func TransientOperationCode(code int) bool {
	switch code {
	case 13, 14, 8, 4:
		return true
	}
	return false
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
