package retry_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/internal/codes"
	"github.com/batchgpt/batchgpt/internal/retry"
)

func TestClassString(t *testing.T) {
	want := map[retry.Class]string{
		retry.Permanent: "permanent", retry.Transient: "transient", retry.Quota: "quota", retry.Auth: "auth",
		retry.NotFound: "not-found", retry.Canceled: "canceled", retry.Local: "local", retry.Class(99): "unknown",
	}
	for c, s := range want {
		if got := c.String(); got != s {
			t.Errorf("Class(%d).String() = %q, want %q", int(c), got, s)
		}
	}
}

func TestOf(t *testing.T) {
	tests := []struct {
		status int
		code   codes.Code
		want   retry.Class
	}{
		{400, codes.InvalidArgument, retry.Permanent},
		{400, codes.OK, retry.Permanent},
		{409, codes.OK, retry.Permanent},
		{401, codes.Unauthenticated, retry.Auth},
		{403, codes.PermissionDenied, retry.Auth},
		{400, codes.Unauthenticated, retry.Auth},
		{400, codes.PermissionDenied, retry.Auth},
		{404, codes.NotFound, retry.NotFound},
		{404, codes.OK, retry.NotFound},
		{408, codes.OK, retry.Transient},
		{429, codes.OK, retry.Quota},
		{400, codes.ResourceExhausted, retry.Quota},
		{500, codes.Internal, retry.Transient},
		{502, codes.OK, retry.Transient},
		{400, codes.Unavailable, retry.Transient},
		{400, codes.DeadlineExceeded, retry.Transient},
	}
	for _, tt := range tests {
		if got := retry.Of(tt.status, tt.code); got != tt.want {
			t.Errorf("Of(%d, %v) = %v, want %v", tt.status, tt.code, got, tt.want)
		}
	}
}

// classed is an error that knows its class, as the API client's errors do.
type classed retry.Class

func (c classed) Error() string           { return retry.Class(c).String() }
func (c classed) RetryClass() retry.Class { return retry.Class(c) }

func TestClassify(t *testing.T) {
	if got := retry.Classify(fmt.Errorf("row 3: %w", classed(retry.Auth))); got != retry.Auth {
		t.Errorf("Classify(wrapped Auth) = %v", got)
	}
	if got := retry.Classify(errors.New("connection reset")); got != retry.Transient {
		t.Errorf("Classify(plain error) = %v, want transient", got)
	}
}

func TestTokenTransient(t *testing.T) {
	for status, want := range map[int]bool{400: false, 401: false, 403: false, 404: false, 408: false, 429: true, 500: true, 503: true} {
		if got := retry.TokenTransient(status); got != want {
			t.Errorf("TokenTransient(%d) = %v, want %v", status, got, want)
		}
	}
}

func TestResubmit(t *testing.T) {
	for code := range codes.Code(20) {
		want := code == codes.DeadlineExceeded || code == codes.ResourceExhausted || code == codes.Internal || code == codes.Unavailable
		if got := retry.Resubmit(code); got != want {
			t.Errorf("Resubmit(%v) = %v, want %v", code, got, want)
		}
	}
}

func TestBackoffDelay(t *testing.T) {
	b := retry.Backoff{Base: 100 * time.Millisecond, Max: time.Second}
	for n, full := range []time.Duration{100, 200, 400, 800, 1000, 1000, 1000} {
		full *= time.Millisecond
		for range 50 {
			if d := b.Delay(n + 1); d < full/2 || d > full {
				t.Fatalf("Delay(%d) = %v, want in [%v, %v]", n+1, d, full/2, full)
			}
		}
	}
	if d := b.Delay(1000); d < 500*time.Millisecond || d > time.Second {
		t.Errorf("Delay(1000) = %v, want capped", d)
	}
}

func TestBackoffRetryAfter(t *testing.T) {
	b := retry.Backoff{Max: time.Minute}
	const def = 123 * time.Millisecond
	future := time.Now().Add(30 * time.Second).UTC().Format(http.TimeFormat)
	tests := []struct {
		header   string
		min, max time.Duration
	}{
		{"", def, def},
		{"2", 2 * time.Second, 2 * time.Second},
		{"86400", time.Minute, time.Minute},
		{"0", def, def},
		{"soon", def, def},
		{future, 28 * time.Second, 30 * time.Second},
	}
	for _, tt := range tests {
		if got := b.RetryAfter(tt.header, def); got < tt.min || got > tt.max {
			t.Errorf("RetryAfter(%q) = %v, want in [%v, %v]", tt.header, got, tt.min, tt.max)
		}
	}
}

func TestPolicyAPIDefaults(t *testing.T) {
	p := retry.Policy{}.API()
	if p.Attempts != retry.DefaultAttempts || p.Backoff.Base != retry.DefaultBackoffBase || p.Backoff.Max != retry.DefaultBackoffMax {
		t.Errorf("defaults %+v", p)
	}
	if p := (retry.Policy{Attempts: 2}).API(); p.Attempts != 2 {
		t.Errorf("Attempts 2 became %d", p.Attempts)
	}
}

func TestDo(t *testing.T) {
	fast := retry.Policy{Attempts: 4, Backoff: retry.Backoff{Base: time.Millisecond, Max: 2 * time.Millisecond}}
	flaky := errors.New("503")
	t.Run("succeeds after transient failures", func(t *testing.T) {
		calls := 0
		v, err := retry.Do(t.Context(), fast, func(context.Context) (int, error) {
			calls++
			if calls < 3 {
				return 0, flaky
			}
			return 7, nil
		})
		if v != 7 || err != nil || calls != 3 {
			t.Errorf("Do = %v, %v after %d calls", v, err, calls)
		}
	})
	t.Run("gives up", func(t *testing.T) {
		calls := 0
		_, err := retry.Do(t.Context(), fast, func(context.Context) (int, error) { calls++; return 0, flaky })
		if !errors.Is(err, flaky) || calls != 4 || !strings.Contains(err.Error(), "giving up after 4 attempts") {
			t.Errorf("Do = %v after %d calls", err, calls)
		}
	})
	t.Run("unrecoverable", func(t *testing.T) {
		calls := 0
		bad := errors.New("400")
		_, err := retry.Do(t.Context(), fast, func(context.Context) (int, error) { calls++; return 0, retry.Unrecoverable(bad) })
		if err != bad || calls != 1 {
			t.Errorf("Do = %v after %d calls, want the unmarked error at once", err, calls)
		}
	})
	t.Run("context ends while waiting", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
		defer cancel()
		slow := retry.Policy{Attempts: 4, Backoff: retry.Backoff{Base: time.Hour, Max: time.Hour}}
		_, err := retry.Do(ctx, slow, func(context.Context) (int, error) { return 0, flaky })
		if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, flaky) {
			t.Errorf("Do = %v, want canceled with the last error", err)
		}
	})
	if retry.Unrecoverable(nil) != nil {
		t.Error("Unrecoverable(nil) != nil")
	}
}

func TestStreak(t *testing.T) {
	var s retry.Streak
	for i := 1; i < retry.StopAfter; i++ {
		if s.GaveUp() {
			t.Fatalf("stop after %d", i)
		}
	}
	s.Succeeded()
	for i := 1; i < retry.StopAfter; i++ {
		if s.GaveUp() {
			t.Fatalf("stop after %d once reset", i)
		}
	}
	if !s.GaveUp() {
		t.Errorf("no stop after %d in a row", retry.StopAfter)
	}
}
