// Package retry is batchgpt's retry policy, in one place: what an error means (Classify, Of),
// how many tries a call gets and how far apart (Policy, Backoff, RetryAfter), when a failed
// operation is worth a new submission (Resubmit), when a run stops instead of failing rows
// (Streak), and what the poller does about a failed read (Poll).
//
// The sites that retry keep only their loops and call it: the API client per HTTP call
// (internal/api), the runner per row (internal/job), the poller per operation (poller, through
// the poller.Policy that Poll implements) and the token sources per token fetch (internal/auth,
// through Do). rclone's lib/pacer and restic's backend/retry are the models: one decision, many
// callers.
package retry

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/batchgpt/batchgpt/internal/codes"
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

// Classed is implemented by errors that know their class: those of the API client.
type Classed interface {
	RetryClass() Class
}

// Classify decides what to do about an error: the class of the first error in its tree that
// knows its class; any other failure (a connection reset, an unexpected EOF) is transient.
func Classify(err error) Class {
	if err == nil {
		return Permanent
	}
	var c Classed
	if errors.As(err, &c) {
		return c.RetryClass()
	}
	return Transient
}

// Of classifies an error answer of the API by its HTTP status and google.rpc.Code (0 when the
// body did not say); the gateway and the operations API report one or the other (docs/api.md §4).
func Of(httpStatus int, code codes.Code) Class {
	switch {
	case httpStatus == http.StatusTooManyRequests || code == codes.ResourceExhausted:
		return Quota
	case httpStatus == http.StatusUnauthorized || httpStatus == http.StatusForbidden ||
		code == codes.Unauthenticated || code == codes.PermissionDenied:
		return Auth
	case httpStatus == http.StatusNotFound:
		return NotFound
	case httpStatus >= 500, httpStatus == http.StatusRequestTimeout,
		code == codes.Unavailable, code == codes.DeadlineExceeded:
		return Transient
	}
	return Permanent
}

// TokenTransient reports whether an error answer of a token endpoint (IAM, the metadata
// service) is worth another fetch: 429 and 5xx. A token fetch has no pacer to wait a 429 out
// through, so it backs off as after a 5xx; anything else ends the fetch (Unrecoverable).
func TokenTransient(httpStatus int) bool {
	return httpStatus == http.StatusTooManyRequests || httpStatus >= 500
}

// Resubmit reports whether an operation that failed with code is worth a new submission of its
// row: the failure was the server's, not the request's.
func Resubmit(code codes.Code) bool {
	switch code {
	case codes.Internal, codes.Unavailable, codes.ResourceExhausted, codes.DeadlineExceeded:
		return true
	}
	return false
}

// Policy bounds the retries of one call.
type Policy struct {
	// Attempts bounds the tries of one call on transient errors. For API calls 429 answers do
	// not count: they are waited out through the shared pacer.
	Attempts int
	Backoff  Backoff
}

// Defaults of the API client, per HTTP call; DefaultAttempts also bounds the submissions of one
// row (the runner's MaxAttempts).
const (
	DefaultAttempts    = 8
	DefaultBackoffBase = 500 * time.Millisecond
	DefaultBackoffMax  = 30 * time.Second
)

// API returns p with the defaults of API calls where p leaves them unset.
func (p Policy) API() Policy {
	if p.Attempts <= 0 {
		p.Attempts = DefaultAttempts
	}
	if p.Backoff.Base <= 0 {
		p.Backoff.Base = DefaultBackoffBase
	}
	if p.Backoff.Max <= 0 {
		p.Backoff.Max = DefaultBackoffMax
	}
	return p
}

// Backoff is a capped exponential delay with jitter.
type Backoff struct {
	Base time.Duration // the delay before the second try, before jitter; doubled each try
	Max  time.Duration // cap of the delay, and of a Retry-After
}

// Delay is the wait after the n-th failed try (n >= 1): Base·2^(n-1), capped at Max, with full
// jitter on its upper half (so it lies in [d/2, d]).
func (b Backoff) Delay(n int) time.Duration {
	d := float64(b.Base) * math.Pow(2, float64(n-1))
	if d > float64(b.Max) {
		d = float64(b.Max)
	}
	return time.Duration(d/2 + rand.Float64()*d/2)
}

// RetryAfter is the wait a Retry-After header asks for (seconds or an HTTP date), capped at
// b.Max; def when the header is empty, unparseable or in the past.
func (b Backoff) RetryAfter(header string, def time.Duration) time.Duration {
	if header == "" {
		return def
	}
	var d time.Duration
	if s, err := strconv.ParseFloat(header, 64); err == nil {
		d = time.Duration(s * float64(time.Second))
	} else if t, err := http.ParseTime(header); err == nil {
		d = time.Until(t)
	} else {
		return def
	}
	if d <= 0 {
		return def
	}
	return min(d, b.Max)
}

// Sleep waits d or until ctx ends, whichever comes first.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// unrecoverable marks an error Do must not retry.
type unrecoverable struct{ err error }

func (e *unrecoverable) Error() string { return e.err.Error() }
func (e *unrecoverable) Unwrap() error { return e.err }

// Unrecoverable marks err as not worth another try of Do (nil stays nil).
func Unrecoverable(err error) error {
	if err == nil {
		return nil
	}
	return &unrecoverable{err}
}

// Do calls op until it succeeds, fails with an error marked Unrecoverable (returned unmarked), the
// context ends, or p.Attempts tries were made, waiting p.Backoff.Delay between tries. It serves
// calls without a pacer of their own (token fetches); API calls have theirs in the client.
func Do[T any](ctx context.Context, p Policy, op func(context.Context) (T, error)) (T, error) {
	var zero T
	var err error
	for attempt := range p.Attempts {
		if attempt > 0 {
			if serr := Sleep(ctx, p.Backoff.Delay(attempt)); serr != nil {
				return zero, fmt.Errorf("%w (last error: %w)", serr, err)
			}
		}
		var v T
		v, err = op(ctx)
		if err == nil {
			return v, nil
		}
		var perm *unrecoverable
		if errors.As(err, &perm) {
			return zero, perm.err
		}
		if ctx.Err() != nil {
			return zero, err
		}
	}
	return zero, fmt.Errorf("giving up after %d attempts: %w", p.Attempts, err)
}

// StopAfter is how many submissions in a row may give up after their attempts before the run
// stops (resumable) instead of failing more rows: one row that keeps failing is that row's
// problem, several in a row mean the API is down or unreachable.
const StopAfter = 3

// Streak counts the calls in a row that gave up after their attempts. It is safe for
// concurrent use.
type Streak struct{ n atomic.Int32 }

// GaveUp records a call that gave up and reports whether the run must stop.
func (s *Streak) GaveUp() (stop bool) { return s.n.Add(1) >= StopAfter }

// Succeeded ends the streak.
func (s *Streak) Succeeded() { s.n.Store(0) }
