package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/batchgpt/batchgpt/internal/auth"
	"github.com/batchgpt/batchgpt/internal/job"
	"github.com/batchgpt/batchgpt/internal/report"
	"github.com/batchgpt/batchgpt/internal/version"
)

// summaryDoc is the summary JSON: --summary-json's file and the --notify webhook's body.
type summaryDoc struct {
	job.Summary
	ExitCode int          `json:"exit_code"`
	Error    string       `json:"error,omitempty"` // the error the run ended with, secrets redacted
	Build    version.Info `json:"build"`
}

// runReport tells the world outside a run how it goes: --metrics-file at every progress interval
// and at exit, --notify at exit. Its failures are logged, never returned: they change neither
// the results nor the exit code.
type runReport struct {
	rc      *runConfig
	build   version.Info
	logger  *slog.Logger
	metrics *report.MetricsFile // nil without --metrics-file
	warned  bool                // a failed write was logged
	// price is the run's price per 1,000 tokens (priceOK: one is known), looked up once.
	price                float64
	priceOK, priceLooked bool
}

func newRunReport(rc *runConfig, build version.Info, logger *slog.Logger) *runReport {
	r := &runReport{rc: rc, build: build, logger: logger}
	if rc.metricsFile != "" {
		m, err := report.OpenMetricsFile(rc.metricsFile)
		if err != nil {
			logger.Warn("could not read the metrics file an earlier run left; it is replaced", "metrics_file", rc.metricsFile, "err", err)
		}
		r.metrics = m
	}
	return r
}

// input is the value of the metrics' input label: the input file, absolute as the checkpoint
// records it. A resume learns it from the checkpoint (j.Input, once the job counts rows or has
// returned); one that stopped before that keeps the label the metrics file had, else names
// the checkpoint.
func (r *runReport) input(j *job.Job) string {
	in := r.rc.input
	if r.rc.resume && j != nil {
		in = j.Input()
	}
	if in == "" && r.metrics != nil {
		if prev, ok := r.metrics.PreviousInput(); ok {
			return prev
		}
	}
	if in == "" {
		in = r.rc.checkpoint
	}
	if abs, err := filepath.Abs(in); err == nil {
		return abs
	}
	return in
}

// tick writes the metrics of j while it runs; progress calls it every --progress-interval.
func (r *runReport) tick(j *job.Job) func() {
	if r.metrics == nil {
		return nil
	}
	return func() {
		pr := j.Progress()
		if pr.Rows == 0 {
			return // the job has not counted its rows yet
		}
		c := j.Counters()
		s := r.snapshot(j, c.Submissions, c.Polls, c.Throttled, c.InDoubt, c.InputTokens, c.OutputTokens)
		s.Succeeded, s.Failed = pr.Succeeded, pr.Failed
		s.Pending = max(0, pr.Submitted-pr.Resolved)
		s.NotSubmitted = max(0, pr.Rows-pr.Succeeded-pr.Failed-s.Pending)
		if !r.priceLooked {
			r.price, r.priceOK = r.rc.prices.For(j.ModelURI())
			r.priceLooked = true
		}
		if r.priceOK {
			s.Currency, s.Cost = job.DefaultCurrency, job.Cost(c.InputTokens+c.OutputTokens, r.price)
		}
		r.write(s)
	}
}

func (r *runReport) snapshot(j *job.Job, submissions, polls, throttled, inDoubt, in, out int64) report.Snapshot {
	return report.Snapshot{Input: r.input(j), Build: r.build, Submissions: submissions, Polls: polls, Throttled: throttled,
		PossibleDuplicates: inDoubt, InputTokens: in, OutputTokens: out}
}

func (r *runReport) write(s report.Snapshot) {
	if err := r.metrics.Write(s); err != nil {
		if s.Exit != nil || !r.warned {
			r.logger.Warn("could not write the metrics file", "metrics_file", r.rc.metricsFile, "err", err)
		}
		r.warned = true
	}
}

// finish writes the metrics of the ended run (j is nil when none was made) with its exit code,
// then posts doc to the webhook.
func (r *runReport) finish(kill context.Context, j *job.Job, sum job.Summary, code int, doc []byte) {
	if r.metrics != nil {
		s := r.snapshot(j, sum.Submissions, sum.Polls, sum.Throttled, sum.InDoubt, sum.InputTokens, sum.OutputTokens)
		if sum.Rows > 0 {
			s.Succeeded, s.Failed = int64(sum.Succeeded), int64(sum.Failed)
			pending := int64(sum.Pending)
			if j != nil { // rows with an operation not resolved; the rest was never submitted
				pr := j.Progress()
				s.Pending = min(pending, max(0, pr.Submitted-pr.Resolved))
			}
			s.NotSubmitted = pending - s.Pending
		}
		if sum.Currency != "" {
			s.Currency, s.Cost = sum.Currency, sum.EstimatedCost
		}
		s.Exit = &report.Exit{Code: code, End: time.Now()}
		r.write(s)
	}
	if w := r.rc.notify; w != nil {
		if err := w.Send(kill, doc); err != nil {
			r.logger.Warn("could not notify the webhook; the results and the exit code are not affected", "url", w.String(), "err", err)
		} else {
			r.logger.Info("notified the webhook", "url", w.String())
		}
	}
}

// writeSummary makes the summary JSON of a run that ended with err, and writes it to
// --summary-json when the run counted rows. A failed write becomes the run's error unless it
// already had one (rows failing beyond --max-failed excepted: that run's summary is lost).
func writeSummary(rc *runConfig, sum job.Summary, build version.Info, err error) ([]byte, error) {
	doc := func(err error) []byte {
		d := summaryDoc{Summary: sum, ExitCode: exitCode(err), Error: errorText(err), Build: build}
		b, merr := json.MarshalIndent(d, "", "  ")
		if merr != nil {
			panic(merr) // a Summary always marshals
		}
		return append(b, '\n')
	}
	b := doc(err)
	if rc.summaryJSON == "" || sum.Rows == 0 {
		return b, err
	}
	if werr := os.WriteFile(rc.summaryJSON, b, 0o600); werr != nil {
		var fe *FailedRowsError
		if err == nil || errors.As(err, &fe) {
			err = fmt.Errorf("write summary: %w", werr)
			b = doc(err)
		}
	}
	return b, err
}

// errorText is err's message for the summary, without the marker of an error already
// reported, secrets redacted.
func errorText(err error) string {
	if err == nil {
		return ""
	}
	var parts []string
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			if e != ErrReported {
				parts = append(parts, e.Error())
			}
		}
	} else {
		parts = []string{err.Error()}
	}
	return auth.Redact(strings.Join(parts, "; "))
}
