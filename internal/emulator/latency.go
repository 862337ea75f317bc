package emulator

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// Latency kinds.
const (
	LatencyFixed     = "fixed"
	LatencyUniform   = "uniform"
	LatencyLognormal = "lognormal"
)

// maxLatency caps sampled latencies so a wide lognormal cannot overflow.
const maxLatency = 365 * 24 * time.Hour

// Latency is the distribution of the time from an operation's creation to its
// completion.
//
//   - fixed: always Median (an empty Kind means fixed).
//   - uniform: uniform on [2*Median-Max, Max], that is centred on Median.
//   - lognormal: Median*exp(Sigma*N(0,1)), capped at Max when Max > 0.
type Latency struct {
	Kind   string
	Median time.Duration
	Max    time.Duration
	Sigma  float64
}

// ParseLatency parses a latency spec: "0", "2s" or "fixed:2s";
// "uniform:<min>:<max>"; "lognormal:<median>:<sigma>[:<max>]".
func ParseLatency(s string) (Latency, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Latency{}, errors.New("parse latency: empty spec")
	}
	parts := strings.Split(s, ":")
	kind := LatencyFixed
	args := parts
	switch parts[0] {
	case LatencyFixed, LatencyUniform, LatencyLognormal:
		kind, args = parts[0], parts[1:]
	default:
		if len(parts) > 1 {
			return Latency{}, fmt.Errorf("parse latency %q: unknown kind %q (want fixed, uniform or lognormal)", s, parts[0])
		}
	}
	switch kind {
	case LatencyFixed:
		if len(args) != 1 {
			return Latency{}, fmt.Errorf("parse latency %q: want a duration such as 2s", s)
		}
		d, err := parseLatencyDuration(args[0])
		if err != nil {
			return Latency{}, fmt.Errorf("parse latency %q: %w", s, err)
		}
		return Latency{Kind: LatencyFixed, Median: d}, nil
	case LatencyUniform:
		if len(args) != 2 {
			return Latency{}, fmt.Errorf("parse latency %q: want uniform:<min>:<max>", s)
		}
		lo, err := parseLatencyDuration(args[0])
		if err != nil {
			return Latency{}, fmt.Errorf("parse latency %q: min: %w", s, err)
		}
		hi, err := parseLatencyDuration(args[1])
		if err != nil {
			return Latency{}, fmt.Errorf("parse latency %q: max: %w", s, err)
		}
		if lo > hi {
			return Latency{}, fmt.Errorf("parse latency %q: min %v exceeds max %v", s, lo, hi)
		}
		return Latency{Kind: LatencyUniform, Median: lo + (hi-lo)/2, Max: hi}, nil
	default: // lognormal
		if len(args) != 2 && len(args) != 3 {
			return Latency{}, fmt.Errorf("parse latency %q: want lognormal:<median>:<sigma>[:<max>]", s)
		}
		med, err := parseLatencyDuration(args[0])
		if err != nil {
			return Latency{}, fmt.Errorf("parse latency %q: median: %w", s, err)
		}
		sigma, err := strconv.ParseFloat(args[1], 64)
		if err != nil || math.IsNaN(sigma) || math.IsInf(sigma, 0) || sigma < 0 {
			return Latency{}, fmt.Errorf("parse latency %q: sigma %q is not a finite number >= 0", s, args[1])
		}
		l := Latency{Kind: LatencyLognormal, Median: med, Sigma: sigma}
		if len(args) == 3 {
			if l.Max, err = parseLatencyDuration(args[2]); err != nil {
				return Latency{}, fmt.Errorf("parse latency %q: max: %w", s, err)
			}
			if l.Max < med {
				return Latency{}, fmt.Errorf("parse latency %q: max %v is below median %v", s, l.Max, med)
			}
		}
		return l, nil
	}
}

func parseLatencyDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	if d < 0 {
		return 0, fmt.Errorf("negative duration %v", d)
	}
	return d, nil
}

// String formats l in the syntax ParseLatency accepts.
func (l Latency) String() string {
	switch l.Kind {
	case LatencyUniform:
		return "uniform:" + l.uniformMin().String() + ":" + l.Max.String()
	case LatencyLognormal:
		s := "lognormal:" + l.Median.String() + ":" + strconv.FormatFloat(l.Sigma, 'g', -1, 64)
		if l.Max > 0 {
			s += ":" + l.Max.String()
		}
		return s
	default:
		return l.Median.String()
	}
}

func (l Latency) uniformMin() time.Duration {
	return max(2*l.Median-l.Max, 0)
}

// sample draws one latency; rng must not be used concurrently.
func (l Latency) sample(rng *rand.Rand) time.Duration {
	var d time.Duration
	switch l.Kind {
	case LatencyUniform:
		lo := l.uniformMin()
		if l.Max > lo {
			d = lo + time.Duration(rng.Int64N(int64(l.Max-lo)+1))
		} else {
			d = lo
		}
	case LatencyLognormal:
		f := float64(l.Median) * math.Exp(l.Sigma*rng.NormFloat64())
		if f >= float64(maxLatency) || math.IsNaN(f) {
			d = maxLatency
		} else {
			d = time.Duration(f)
		}
		if l.Max > 0 {
			d = min(d, l.Max)
		}
	default:
		d = l.Median
	}
	return min(max(d, 0), maxLatency)
}
