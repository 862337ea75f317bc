package retry

import (
	"time"

	"github.com/batchgpt/batchgpt/poller"
)

// Poll is the policy of the poller (a poller.Policy): what a failed read of an operation means,
// once the API client's own retries are spent, and how long to wait before the next one.
var Poll poller.Policy = pollPolicy{}

type pollPolicy struct{}

// Verdict: an ended context is no poll; an auth failure stops polling (the run stops, every
// operation id kept); a 404 may be a fresh operation; a permanent error is the operation's
// outcome; anything else (transient, quota) is tried again later: the operation id is safe.
func (pollPolicy) Verdict(err error) poller.Verdict {
	switch Classify(err) {
	case Canceled:
		return poller.Interrupted
	case Auth:
		return poller.Fatal
	case NotFound:
		return poller.Missing
	case Permanent:
		return poller.GiveUp
	}
	return poller.Retry
}

// RetryDelay grows by a second with each failure in a row, up to a minute: the client has
// already backed off within the call.
func (pollPolicy) RetryDelay(failures int) time.Duration {
	return min(time.Duration(failures)*time.Second, time.Minute)
}
