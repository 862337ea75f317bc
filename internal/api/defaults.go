package api

import "time"

// DefaultRequestTimeout bounds one HTTP request when Config.RequestTimeout is zero. The retry
// defaults (attempts, backoff) are the retry package's; job.DefaultTuning and the command line's
// flags take theirs from there and from here, so that each is written once.
const DefaultRequestTimeout = time.Minute
