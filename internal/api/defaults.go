package api

import "time"

// Defaults of a Config field left zero. job.DefaultTuning and the command line's flags take
// theirs from here, so that each is written once.
const (
	DefaultMaxAttempts    = 8
	DefaultRequestTimeout = time.Minute
	DefaultBackoffBase    = 500 * time.Millisecond
	DefaultBackoffMax     = 30 * time.Second
)
