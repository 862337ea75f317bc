package cmd

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/batchgpt/batchgpt/internal/job"
)

// printSummary prints the summary of a run or resume to stderr (one JSON log line with
// --log-format json).
func (e *env) printSummary(s job.Summary) {
	if l := e.console.jsonLogger(); l != nil {
		l.Info("summary", "summary", s)
		return
	}
	w := e.stderr
	if s.NothingToDo {
		fmt.Fprintf(w, "nothing to do: the run of this input is complete (rows: %d  succeeded: %d  failed: %d)\nresults: %s\ncheckpoint: %s\n",
			s.Rows, s.Succeeded, s.Failed, s.Results, s.Checkpoint)
		return
	}
	fmt.Fprintf(w, "rows: %d  succeeded: %d  failed: %d  pending: %d\n", s.Rows, s.Succeeded, s.Failed, s.Pending)
	if len(s.FailedByKind) > 0 {
		parts := make([]string, 0, len(s.FailedByKind))
		for k, v := range s.FailedByKind {
			parts = append(parts, k+"="+strconv.Itoa(v))
		}
		fmt.Fprintf(w, "failed by kind: %s\n", strings.Join(parts, " "))
	}
	if s.ContentFiltered > 0 || s.Truncated > 0 {
		fmt.Fprintf(w, "answers: %d stopped by the content filter, %d truncated at max tokens\n", s.ContentFiltered, s.Truncated)
	}
	fmt.Fprintf(w, "answered from cache: %d (no submission", s.CacheHits)
	if s.Currency != "" && s.SavedTokens > 0 {
		fmt.Fprintf(w, "; ≈ %.2f %s not spent", s.SavedCost, s.Currency)
	}
	fmt.Fprintf(w, ")  deduplicated: %d  submitted: %d\n", s.Deduplicated, s.Submissions)
	fmt.Fprintf(w, "this process: %d submissions, %d resubmitted, %d in doubt, %d polls, %d throttled (429)\n",
		s.Submissions, s.Resubmitted, s.InDoubt, s.Polls, s.Throttled)
	fmt.Fprintf(w, "tokens: %d in, %d out", s.InputTokens, s.OutputTokens)
	if s.Currency != "" {
		fmt.Fprintf(w, "  estimated cost: %.2f %s (async prices; see --price)", s.EstimatedCost, s.Currency)
	}
	fmt.Fprintf(w, "  elapsed: %s\n", s.Elapsed.Round(time.Millisecond))
	fmt.Fprint(w, spendLine(s))
	fmt.Fprintf(w, "results: %s\ncheckpoint: %s\n", s.Results, s.Checkpoint)
	switch {
	case s.CacheProblem != "":
		fmt.Fprintf(w, "cache: not used: %s\n", s.CacheProblem)
	case s.Cache != "":
		fmt.Fprintf(w, "cache: %s\n", s.Cache)
	}
}
