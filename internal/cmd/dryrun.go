package cmd

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/batchgpt/batchgpt/batch"
	"github.com/batchgpt/batchgpt/internal/job"
)

// dryRun validates the input and prints what a run would cost and take, without credentials and
// without sending anything; with --exact-tokens the API's free tokenizer counts the input tokens
// of the rows to submit (credentials needed; no completion is sent).
func (e *env) dryRun(ctx context.Context, rc *runConfig) error {
	input, s, prices := rc.input, rc.settings, rc.prices
	s.Limits = rc.limits.Apply(nil)
	logger := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn, ReplaceAttr: redactAttr}))
	oc := e.openCache(rc.cache, logger, s.NoCache, true)
	defer oc.close()
	var rcache job.ResultCache
	if oc.cache != nil {
		rcache = oc.cache
	}
	var count job.TokenCounter
	if rc.exactTokens {
		c, stop, err := e.tokenCounter(ctx, rc, logger)
		if err != nil {
			return err
		}
		defer stop()
		count = c
	}
	pl, err := job.DryRunWith(ctx, input, s, rcache, oc.ttl, 50, job.DryRunOptions{Count: count, Prices: prices})
	if err != nil {
		return err
	}
	sum := pl.Input
	w := e.stdout
	fmt.Fprintf(w, "input:            %s (%s, %d bytes)\n", input, sum.Format, sum.Size)
	fmt.Fprintf(w, "rows:             %d, all valid\n", sum.Rows)
	switch {
	case s.NoDedup:
		fmt.Fprintf(w, "duplicates:       not looked for (--no-dedup)\n")
	default:
		fmt.Fprintf(w, "duplicates:       %d rows send the same request as an earlier row (not submitted)\n", pl.Duplicates)
	}
	switch {
	case s.NoCache:
		fmt.Fprintf(w, "cache:            off (--no-cache)\n")
	case s.Refresh:
		fmt.Fprintf(w, "cache:            not read (--refresh)\n")
	case pl.CacheProblem != "" || oc.problem != "":
		fmt.Fprintf(w, "cache:            not used: %s%s\n", oc.problem, pl.CacheProblem)
	default:
		fmt.Fprintf(w, "cache:            %d rows answered by %s (not submitted)\n", pl.CacheHits, oc.path)
	}
	fmt.Fprintf(w, "to submit:        %d rows\n", pl.ToSubmit)
	if pl.ExactTokens {
		fmt.Fprintf(w, "input tokens:     %d for the rows to submit (counted by the API's free tokenizer)\n", pl.SubmitTokens)
	} else {
		fmt.Fprintf(w, "input tokens:     ~%d for the rows to submit (estimate: characters / 4; Russian text usually needs more; --exact-tokens counts them)\n", pl.SubmitTokens)
	}
	uri, _ := batch.ModelURI(s.Input.Folder, s.Input.Model)
	if price, ok := prices.For(uri); ok {
		fmt.Fprintf(w, "input cost:       ~%.2f %s at %g per 1,000 tokens (async); answers are billed too", job.Cost(pl.SubmitTokens, price), job.DefaultCurrency, price)
		if s.Input.MaxTokens != nil {
			fmt.Fprintf(w, ": at most %.2f %s more for %d tokens per answer", job.Cost(int64(pl.ToSubmit)**s.Input.MaxTokens, price), job.DefaultCurrency, *s.Input.MaxTokens)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprint(w, dryRunLimits(pl, s.Limits))
	eta := job.SubmitETA(pl.ToSubmit, 0, rc.tuning.SubmitRPS, rc.tuning.SubmitPerHour)
	fmt.Fprintf(w, "submission time:  %s at %g/s and %d/hour, plus the operations' own time (minutes to hours)\n",
		eta.Round(time.Second), rc.tuning.SubmitRPS, rc.tuning.SubmitPerHour)
	if pl.ExactTokens {
		fmt.Fprintln(w, "nothing was submitted (--dry-run); only the free tokenizer was asked")
	} else {
		fmt.Fprintln(w, "nothing was sent (--dry-run)")
	}
	return nil
}
