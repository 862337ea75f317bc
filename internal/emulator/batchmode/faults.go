package batchmode

import (
	"fmt"
	"strconv"

	"github.com/batchgpt/batchgpt/internal/emulator"
)

// Faults are the failures the emulator injects.
type Faults struct {
	// InvalidLines are 1-based input lines that Validate reports as errors whatever they hold.
	InvalidLines []int64
	// FailBatch is the 1-based batch whose processing fails, and with it the task (FAILED, with a
	// batch error); 0 is none.
	FailBatch int64
	// UnavailableRate is the probability that a gRPC call answers UNAVAILABLE before doing
	// anything.
	UnavailableRate float64
	// StopAfterBatches stops every task's processing for good after that many batches, as a
	// crashed worker would: the task stays IN_PROGRESS; 0 is never.
	StopAfterBatches int64
}

// ParseFaults parses a comma-separated list such as
// "invalid_line=3,invalid_line=7,fail_batch=2,unavailable=0.1,stop_after=3". An empty spec means
// no faults.
func ParseFaults(spec string) (Faults, error) {
	var f Faults
	err := emulator.EachSpecItem(spec, "batch faults", func(k, v string) error {
		if k == "unavailable" {
			r, ok := emulator.ParseRate(v)
			if !ok {
				return fmt.Errorf("parse batch faults: unavailable rate %q is not a probability in [0, 1]", v)
			}
			f.UnavailableRate = r
			return nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			return fmt.Errorf("parse batch faults: %s %q is not a number >= 1", k, v)
		}
		switch k {
		case "invalid_line":
			f.InvalidLines = append(f.InvalidLines, n)
		case "fail_batch":
			f.FailBatch = n
		case "stop_after":
			f.StopAfterBatches = n
		default:
			return fmt.Errorf("parse batch faults: unknown kind %q (want invalid_line, fail_batch, unavailable, stop_after)", k)
		}
		return nil
	})
	if err != nil {
		return Faults{}, err
	}
	return f, nil
}
