package emulator

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Fault kinds: the keys of Stats.Faults and of ParseFaults specs.
const (
	Fault429         = "429"
	Fault500         = "500"
	Fault503         = "503"
	FaultReset       = "reset"
	FaultSlow        = "slow"
	FaultGarbage     = "garbage"
	FaultOpError     = "op_error"
	FaultOpPermError = "op_perm_error"
	FaultFresh404    = "fresh404"
	FaultNoDone      = "no_done"
	FaultSubmitLost  = "submit_lost"
	// FaultContentFilter finishes an operation with ALTERNATIVE_STATUS_CONTENT_FILTER, as the
	// filter of the generated answer would (see ContentFilterTrigger for the prompt's).
	FaultContentFilter = "content_filter"
	FaultVanish        = "vanish"
)

// faultKinds lists the kinds in the order of the counters in Server.
var faultKinds = [...]string{
	Fault429, Fault500, Fault503, FaultReset, FaultSlow, FaultGarbage,
	FaultOpError, FaultOpPermError, FaultFresh404, FaultNoDone, FaultSubmitLost, FaultContentFilter, FaultVanish,
}

const (
	fault429 = iota
	fault500
	fault503
	faultReset
	faultSlow
	faultGarbage
	faultOpError
	faultOpPermError
	faultFresh404
	faultNoDone
	faultSubmitLost
	faultContentFilter
	faultVanish
	numFaults
)

// Faults are the probabilities of injected failures. The transport faults
// (429, 500, 503, reset, garbage) are exclusive and drawn once per submit or
// poll request; slow is drawn independently and delays whatever follows.
type Faults struct {
	Rate429, Rate500, Rate503 float64 // probability per submit/poll request of that HTTP error with the API's error bodies
	RateReset                 float64 // hijack and close the connection without a response
	RateSlow                  float64 // respond after SlowDelay (the request context is respected)
	SlowDelay                 time.Duration
	RateGarbage               float64 // 200 with a truncated JSON body; a submit still creates its operation
	RateOpError               float64 // operation finishes done:true with error code 13 or 14
	RateOpPermError           float64 // operation finishes done:true with error code 3 (permanent)
	RateFresh404              float64 // the first poll of a new operation answers 404 (docs/api.md §4: not on all replicas yet)
	RateNoDone                float64 // a running operation omits "done" instead of done:false (docs/api.md §3)
	RateSubmitLost            float64 // the operation IS created and counted, but the response is a 500 or a reset
	RateContentFilter         float64 // a successful operation finishes with ALTERNATIVE_STATUS_CONTENT_FILTER (docs/api.md §3)
	// RateVanish: the operation IS created and counted, but is gone at once: every poll answers
	// 404, as the API is expected to for an operation past the retention (docs/api.md §4, §5;
	// UNCONFIRMED). It stands in for a resume after days without waiting for them.
	RateVanish float64
}

// rates returns pointers to the rate fields keyed by fault kind.
func (f *Faults) rates() map[string]*float64 {
	return map[string]*float64{
		Fault429: &f.Rate429, Fault500: &f.Rate500, Fault503: &f.Rate503,
		FaultReset: &f.RateReset, FaultSlow: &f.RateSlow, FaultGarbage: &f.RateGarbage,
		FaultOpError: &f.RateOpError, FaultOpPermError: &f.RateOpPermError,
		FaultFresh404: &f.RateFresh404, FaultNoDone: &f.RateNoDone, FaultSubmitLost: &f.RateSubmitLost,
		FaultContentFilter: &f.RateContentFilter,
		FaultVanish:        &f.RateVanish,
	}
}

// ParseFaults parses a comma-separated list of kind=rate pairs, for example
// "429=0.05,reset=0.01,slow=0.1,slow_delay=3s". Kinds are the Fault*
// constants; slow_delay is a duration. An empty spec means no faults.
func ParseFaults(s string) (Faults, error) {
	var f Faults
	rates := f.rates()
	err := EachSpecItem(s, "faults", func(k, v string) error {
		if k == "slow_delay" {
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				return fmt.Errorf("parse faults: slow_delay %q is not a duration >= 0", v)
			}
			f.SlowDelay = d
			return nil
		}
		p, ok := rates[k]
		if !ok {
			return fmt.Errorf("parse faults: unknown kind %q (want one of %s, slow_delay)", k, strings.Join(faultKinds[:], ", "))
		}
		r, ok := ParseRate(v)
		if !ok {
			return fmt.Errorf("parse faults: %s rate %q is not a probability in [0, 1]", k, v)
		}
		*p = r
		return nil
	})
	if err != nil {
		return Faults{}, err
	}
	return f, nil
}

// EachSpecItem calls f with the trimmed kind and value of every kind=value item of a
// comma-separated spec, skipping empty items and stopping at f's first error; what names the spec
// in the error of an item without "=". The batch-mode emulator's faults are spelt the same way.
func EachSpecItem(spec, what string, f func(kind, value string) error) error {
	for item := range strings.SplitSeq(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		k, v, ok := strings.Cut(item, "=")
		if !ok {
			return fmt.Errorf("parse %s: %q is not kind=value", what, item)
		}
		if err := f(strings.TrimSpace(k), strings.TrimSpace(v)); err != nil {
			return err
		}
	}
	return nil
}

// ParseRate parses a probability in [0, 1].
func ParseRate(v string) (float64, bool) {
	r, err := strconv.ParseFloat(v, 64)
	return r, err == nil && !math.IsNaN(r) && r >= 0 && r <= 1
}

// transportFault picks the exclusive transport fault for a draw u in [0, 1);
// -1 means none.
func (f *Faults) transportFault(u float64) int {
	for _, c := range [...]struct {
		rate  float64
		fault int
	}{
		{f.Rate429, fault429}, {f.Rate500, fault500}, {f.Rate503, fault503},
		{f.RateReset, faultReset}, {f.RateGarbage, faultGarbage},
	} {
		if u < c.rate {
			return c.fault
		}
		u -= c.rate
	}
	return -1
}

func (f *Faults) anyTransport() bool {
	return f.Rate429 > 0 || f.Rate500 > 0 || f.Rate503 > 0 || f.RateReset > 0 || f.RateGarbage > 0
}
