package auth

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/batchgpt/batchgpt/internal/retry"
)

// Tunables; variables so tests can shorten them.
var (
	// fetchPolicy retries a token fetch that failed transiently (a transport error, 429 or 5xx;
	// anything else is retry.Unrecoverable): 4 tries, 250 ms apart and doubling, up to 4 s.
	fetchPolicy = retry.Policy{Attempts: 4, Backoff: retry.Backoff{Base: 250 * time.Millisecond, Max: 4 * time.Second}}
	// fetchTimeout bounds one refresh, retries included. A refresh is shared
	// by all callers, so it does not run under any one caller's context.
	fetchTimeout = time.Minute
	// errCooldown is how long a failed refresh is reported to new callers
	// before another one is tried, so failures do not hammer the server.
	errCooldown = time.Second
)

// Refresh schedule. A token is refreshed ahead of time once 2/3 of its
// lifetime passed, but at least hourly as Yandex Cloud recommends for its
// 12 h tokens; callers keep using the old token meanwhile. It stops being
// handed out a safety margin before it expires (1/5 of the lifetime, at most
// a minute). This works for 12 h tokens (refresh after 1 h) as well as for
// emulator tokens living 2 s (refresh after 1.3 s, stop using at 1.6 s).
func refreshAfter(lifetime time.Duration) time.Duration {
	return min(lifetime*2/3, time.Hour)
}

func safetyMargin(lifetime time.Duration) time.Duration {
	return min(lifetime/5, time.Minute)
}

// fetchFunc obtains a fresh token and its lifetime.
type fetchFunc func(ctx context.Context) (token string, lifetime time.Duration, err error)

// flight is one refresh in progress; done closes when it finishes.
type flight struct {
	done  chan struct{}
	token string
	err   error
}

// tokenCache holds a bearer token and shares one refresh among all callers.
type tokenCache struct {
	fetch fetchFunc
	now   func() time.Time

	mu        sync.Mutex
	token     string
	refreshAt time.Time // start a background refresh from here on
	staleAt   time.Time // stop handing the token out from here on
	flight    *flight
	lastErr   error
	lastErrAt time.Time
}

func newTokenCache(fetch fetchFunc) *tokenCache {
	return &tokenCache{fetch: fetch, now: time.Now}
}

// get returns a usable token, waiting for a refresh only when the cached
// token is missing or about to expire.
func (c *tokenCache) get(ctx context.Context) (string, error) {
	c.mu.Lock()
	now := c.now()
	if c.token != "" && now.Before(c.staleAt) {
		tok := c.token
		if !now.Before(c.refreshAt) && c.flight == nil && !c.coolingDown(now) {
			c.startLocked(ctx)
		}
		c.mu.Unlock()
		return tok, nil
	}
	if c.flight == nil {
		if c.coolingDown(now) {
			err := c.lastErr
			c.mu.Unlock()
			return "", err
		}
		c.startLocked(ctx)
	}
	f := c.flight
	c.mu.Unlock()

	select {
	case <-f.done:
		return f.token, f.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func (c *tokenCache) coolingDown(now time.Time) bool {
	return c.lastErr != nil && now.Sub(c.lastErrAt) < errCooldown
}

// startLocked starts a refresh; c.mu must be held.
func (c *tokenCache) startLocked(ctx context.Context) {
	f := &flight{done: make(chan struct{})}
	c.flight = f
	// Keep the caller's values (tracing) but not its cancellation: other
	// callers wait for this refresh too.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fetchTimeout)
	go func() {
		defer cancel()
		tok, lifetime, err := c.fetch(fctx)
		c.mu.Lock()
		if err == nil {
			c.storeLocked(tok, lifetime)
			c.lastErr = nil
		} else {
			c.lastErr, c.lastErrAt = err, c.now()
		}
		f.token, f.err = tok, err
		c.flight = nil
		c.mu.Unlock()
		close(f.done)
	}()
}

// store caches a token obtained outside a flight (a probe).
func (c *tokenCache) store(tok string, lifetime time.Duration) {
	c.mu.Lock()
	c.storeLocked(tok, lifetime)
	c.mu.Unlock()
}

func (c *tokenCache) storeLocked(tok string, lifetime time.Duration) {
	now := c.now()
	c.token = tok
	c.refreshAt = now.Add(refreshAfter(lifetime))
	c.staleAt = now.Add(lifetime - safetyMargin(lifetime))
}

// invalidate drops tok if it is still the cached token, so the next get
// refreshes; calls for older tokens are ignored, which makes many callers
// hitting the same 401 cause one refresh.
func (c *tokenCache) invalidate(tok string) {
	if tok == "" {
		return
	}
	c.mu.Lock()
	if c.token == tok {
		c.token = ""
	}
	c.mu.Unlock()
}

// bearerToken extracts the token from a "Bearer <token>" header.
func bearerToken(header string) string {
	if len(header) > 7 && strings.EqualFold(header[:7], "Bearer ") {
		return strings.TrimSpace(header[7:])
	}
	return ""
}

// fetched is one token fetch's answer, as retry.Do returns it.
type fetched struct {
	token    string
	lifetime time.Duration
}

// tokenOf adapts a one-try token fetch to retry.Do.
func tokenOf(op func(context.Context) (string, time.Duration, error)) func(context.Context) (fetched, error) {
	return func(ctx context.Context) (fetched, error) {
		tok, lifetime, err := op(ctx)
		return fetched{tok, lifetime}, err
	}
}
