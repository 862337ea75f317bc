package job

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/batchgpt/batchgpt/batch"
)

// Plan is what a run of an input would do, as a dry run finds it: nothing is sent.
type Plan struct {
	Input        batch.Summary
	Duplicates   int   // rows that send the same request as an earlier row: not submitted
	CacheHits    int   // rows the cache answers: not submitted
	ToSubmit     int   // the rest
	SubmitTokens int64 // input tokens of the rows to submit: estimated, or counted (ExactTokens)
	// ExactTokens: SubmitTokens were counted by the API's tokenizer, row by row.
	ExactTokens  bool
	CacheProblem string
	// Estimate is the tokens, input and output, the rows to submit are estimated to bill, as the
	// spend limits estimate a row before any answer (see estimate), and EstimatedCost their cost
	// at the price of each row's model. FitRows of the rows to submit, in input order, go out
	// before the first that would cross the limits of the run's settings (all of them without).
	Estimate      int64
	EstimatedCost float64
	FitRows       int
}

// DryRun validates the input and finds the rows that would not be submitted: duplicates of an
// earlier row and rows the cache answers (c may be nil). It sends nothing and writes nothing.
func DryRun(ctx context.Context, path string, s Settings, c ResultCache, ttl time.Duration, maxErrors int) (Plan, error) {
	return DryRunWith(ctx, path, s, c, ttl, maxErrors, DryRunOptions{})
}

// DryRunOptions are what a dry run may do beyond DryRun: count the input tokens with the API's free
// tokenizer (Count, see tokens.go; nil estimates them), and price the estimates (Prices, nil:
// DefaultPrices).
type DryRunOptions struct {
	Count  TokenCounter
	Prices Prices
}

// DryRunWith is DryRun with options. Only the rows that would be submitted are counted, each once.
func DryRunWith(ctx context.Context, path string, s Settings, c ResultCache, ttl time.Duration, maxErrors int, o DryRunOptions) (Plan, error) {
	count, prices := o.Count, o.Prices
	scope := s.KeyScope()
	var limits Limits
	if s.Limits != nil {
		limits = *s.Limits
	}
	b := newBudget(limits, prices, slog.New(slog.DiscardHandler))
	fits := true
	sum, dups, err := validate(path, s, maxErrors)
	if err != nil {
		return Plan{}, err
	}
	p := Plan{Input: sum, Duplicates: dups.Count()}
	follower := make([]uint64, (sum.Rows+63)/64) // a bit per row: a map costs ~40 B a follower
	dups.Groups(func(_ int, fs []batch.Pos) bool {
		for _, f := range fs {
			follower[f.Index/64] |= 1 << (f.Index % 64)
		}
		return true
	})
	var cu *cacheUse
	if c != nil && !s.NoCache && !s.Refresh {
		cu = &cacheUse{c: c, log: slog.New(slog.DiscardHandler), ttl: ttl, acceptFiltered: s.AcceptFiltered}
	}
	rd, err := batch.Open(path, s.Input)
	if err != nil {
		return p, fmt.Errorf("open input: %w", err)
	}
	defer rd.Close()
	var keys []batch.Key
	var chars []int
	var bodies [][]byte // with count only
	var ests []int64
	var costs []float64
	var submitChars int64
	var toCount [][]byte
	flush := func() error {
		var hits = make([]bool, len(keys))
		if cu != nil {
			for i, e := range cu.lookup(ctx, keys) {
				hits[i] = e != nil
			}
		}
		toCount = toCount[:0]
		for i := range keys {
			if hits[i] {
				p.CacheHits++
			} else {
				p.ToSubmit++
				submitChars += int64(chars[i])
				p.Estimate += ests[i]
				p.EstimatedCost += costs[i]
				fits = fits && (limits.MaxTotalTokens <= 0 || p.Estimate <= limits.MaxTotalTokens) &&
					(limits.MaxCost <= 0 || p.EstimatedCost <= limits.MaxCost)
				if fits {
					p.FitRows++
				}
				if count != nil {
					toCount = append(toCount, bodies[i])
				}
			}
		}
		keys, chars, bodies, ests, costs = keys[:0], chars[:0], bodies[:0], ests[:0], costs[:0]
		if count == nil {
			return nil
		}
		n, err := countTokens(ctx, toCount, count)
		p.SubmitTokens += n
		return err
	}
	for {
		row, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return p, fmt.Errorf("read input: %w", err)
		}
		if follower[row.Index/64]&(1<<(row.Index%64)) != 0 {
			continue
		}
		keys = append(keys, batch.RequestKey(scope, row.Body))
		chars = append(chars, row.PromptChars)
		if count != nil {
			bodies = append(bodies, row.Body)
		}
		est := estimate(row, 0) // before any answer
		ests = append(ests, est)
		costs = append(costs, Cost(est, b.price(batch.ModelOf(row.Body))))
		if len(keys) == lookupBatch {
			if err := flush(); err != nil {
				return p, err
			}
		}
	}
	if err := flush(); err != nil {
		return p, err
	}
	if cu != nil {
		p.CacheProblem = cu.why
	}
	if count == nil {
		p.SubmitTokens = batch.EstimateTokens(submitChars)
	}
	p.ExactTokens = count != nil
	return p, nil
}
