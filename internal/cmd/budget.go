package cmd

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/batchgpt/batchgpt/internal/job"
)

// The spend limits of a run: --max-cost and --max-total-tokens on run and resume, kept
// in the checkpoint; the run stops submitting at them and exits ExitSpendLimit.

// limitFlags are the spend limits (run and resume).
func limitFlags() []cli.Flag {
	return []cli.Flag{
		&cli.Float64Flag{Name: "max-cost", Usage: "spend limit of the whole run, in the currency of the price table (see --price): " +
			"a row is submitted only if the spend so far plus the estimates of the rows in flight and of that row stay within it; " +
			"otherwise nothing more is submitted, the run writes what is in flight and exits 6, resumable. Kept in the checkpoint: resume without it keeps it, " +
			"resume --max-cost `AMOUNT` raises it, 0 removes it"},
		&cli.Int64Flag{Name: "max-total-tokens", Usage: "token budget of the whole run: at most `N` billed input + output tokens, as --max-cost (0 removes it). " +
			"Not --max-tokens, which caps the length of each answer (completionOptions.maxTokens) and keeps that meaning"},
	}
}

// parseLimits reads the spend limit flags: only those given change the checkpoint's.
func parseLimits(c *cli.Context) (job.LimitChange, error) {
	var l job.LimitChange
	if c.IsSet("max-cost") {
		v := c.Float64("max-cost")
		if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			return l, usagef("--max-cost %v: want an amount of 0 or more (0: no limit)", v)
		}
		l.MaxCost = &v
	}
	if c.IsSet("max-total-tokens") {
		v := c.Int64("max-total-tokens")
		if v < 0 {
			return l, usagef("--max-total-tokens %d: want a number of tokens of 0 or more (0: no limit)", v)
		}
		l.MaxTotalTokens = &v
	}
	return l, nil
}

// SpendLimitError says the run stopped submitting at its spend limit: exit code 6. The message
// and the resume command were printed already.
type SpendLimitError struct{ Err error }

func (e *SpendLimitError) Error() string { return e.Err.Error() }
func (e *SpendLimitError) Unwrap() error { return e.Err }

// stoppedAtLimit reports a run that stopped at its spend limit: what it spent, and how to go on.
func (e *env) stoppedAtLimit(sum job.Summary, checkpoint string, err error) error {
	sp := sum.Spend
	if sp == nil {
		sp = &job.Spend{}
	}
	var flags []string
	if sp.MaxCost > 0 {
		flags = append(flags, "--max-cost AMOUNT")
	}
	if sp.MaxTotalTokens > 0 {
		flags = append(flags, "--max-total-tokens N")
	}
	resumeCmd := "batchgpt resume " + strings.Join(append(flags, shellQuote(checkpoint)), " ")
	msg := fmt.Sprintf("%v: spent %s; %d rows not submitted", err, spentText(sp), sp.NotSubmitted)
	e.console.Error(msg+"; every operation id is saved",
		fmt.Sprintf("batchgpt: %s\nbatchgpt: every operation id is saved; to continue, resume with a higher limit (0 removes it):\n    %s\n", msg, resumeCmd),
		"resume", resumeCmd, "spend", sp)
	return errors.Join(&SpendLimitError{Err: err}, ErrReported)
}

// spentText is the spend against the limits, e.g. "0.05 RUB of --max-cost 0.06, 500 tokens".
func spentText(sp *job.Spend) string {
	cost := fmt.Sprintf("%.4g %s", sp.Cost, sp.Currency)
	if sp.MaxCost > 0 {
		cost += fmt.Sprintf(" of --max-cost %g", sp.MaxCost)
	}
	tokens := fmt.Sprintf("%d tokens", sp.Tokens)
	if sp.MaxTotalTokens > 0 {
		tokens += fmt.Sprintf(" of --max-total-tokens %d", sp.MaxTotalTokens)
	}
	return cost + ", " + tokens
}

// spendLine is the summary's line about the limits ("" without any).
func spendLine(s job.Summary) string {
	if s.Spend == nil {
		return ""
	}
	line := "spend of the run: " + spentText(s.Spend)
	if s.StoppedAtLimit {
		line += fmt.Sprintf("; stopped at the limit: %d rows not submitted", s.Spend.NotSubmitted)
	}
	return line + "\n"
}

// dryRunLimits is the dry run's line about the limits ("" without any).
func dryRunLimits(pl job.Plan, l *job.Limits) string {
	if l == nil {
		return ""
	}
	var set []string
	if l.MaxCost > 0 {
		set = append(set, fmt.Sprintf("--max-cost %g %s", l.MaxCost, job.DefaultCurrency))
	}
	if l.MaxTotalTokens > 0 {
		set = append(set, fmt.Sprintf("--max-total-tokens %d", l.MaxTotalTokens))
	}
	est := fmt.Sprintf("~%d tokens, ~%.2f %s estimated for the rows to submit (input; output at maxTokens, else as much as the input)",
		pl.Estimate, pl.EstimatedCost, job.DefaultCurrency)
	if pl.FitRows >= pl.ToSubmit {
		return fmt.Sprintf("limits:           %s: the run fits: %s\n", strings.Join(set, ", "), est)
	}
	return fmt.Sprintf("limits:           %s: the run does not fit: %s; about %d of the %d rows to submit go out before it stops (exit 6)\n",
		strings.Join(set, ", "), est, pl.FitRows, pl.ToSubmit)
}
