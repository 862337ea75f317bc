package job

import (
	"time"

	"github.com/batchgpt/batchgpt/internal/api"
	"github.com/batchgpt/batchgpt/internal/retry"
	"github.com/batchgpt/batchgpt/poller"
)

// Tuning may change between run and resume.
type Tuning struct {
	Concurrency    int     // submissions in flight
	SubmitRPS      float64 // 0 = unlimited
	SubmitPerHour  int     // 0 = unlimited
	PollRPS        float64 // 0 = unlimited
	PollWorkers    int
	MaxAttempts    int // per HTTP call on transient errors, and submissions per row
	RequestTimeout time.Duration
	BackoffBase    time.Duration
	Schedule       *poller.Schedule // nil = default
}

// DefaultTuning is the tuning of a run that chooses none: the command line's defaults, and what
// New gives a Config whose Concurrency or MaxAttempts is zero. The rates are the default quotas
// of a folder (docs/api.md §5); the retry defaults are the API client's own.
func DefaultTuning() Tuning {
	return Tuning{
		Concurrency:    16,
		SubmitRPS:      10,
		SubmitPerHour:  5000,
		PollRPS:        50,
		PollWorkers:    poller.DefaultConcurrency,
		MaxAttempts:    retry.DefaultAttempts,
		RequestTimeout: api.DefaultRequestTimeout,
		BackoffBase:    retry.DefaultBackoffBase,
	}
}
