package auth

import (
	"time"

	"github.com/batchgpt/batchgpt/internal/retry"
)

// SetFastRetries shortens back-off delays and the error cool-down for tests.
func SetFastRetries() {
	fetchPolicy.Backoff = retry.Backoff{Base: time.Millisecond, Max: 5 * time.Millisecond}
	errCooldown = 0
	autoProbeTimeout = 2 * time.Second
}

// SetAudience makes s sign JWTs for aud, to test IAM rejecting it.
func SetAudience(s *ServiceAccount, aud string) { s.audience = aud }

// FetchAttempts is how many times a transient failure is tried.
func FetchAttempts() int { return fetchPolicy.Attempts }
