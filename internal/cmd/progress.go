package cmd

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/batchgpt/batchgpt/internal/job"
)

// isTerminal reports whether w is a terminal (progress bars) rather than a file or pipe (log lines).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// bars draws two progress bars (submitted, resolved) at the bottom of a terminal and lets log
// lines scroll above them: every write clears the bars, prints, and redraws them.
type bars struct {
	mu        sync.Mutex
	out       io.Writer
	submitted *progressbar.ProgressBar
	resolved  *progressbar.ProgressBar
	drawn     bool
}

func newBars(out io.Writer) *bars { return &bars{out: out} }

// ensure creates the bars once the total is known (a bar made with a zero total never moves).
func (b *bars) ensure(total int64) {
	if b.submitted != nil {
		return
	}
	opts := func(desc string) []progressbar.Option {
		return []progressbar.Option{
			progressbar.OptionSetWriter(io.Discard), // rendered by draw, two bars at once
			progressbar.OptionSetDescription(desc),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("rows"),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionSetElapsedTime(true),
			progressbar.OptionThrottle(0),
			progressbar.OptionSetWidth(30),
			progressbar.OptionSetRenderBlankState(true),
		}
	}
	b.submitted = progressbar.NewOptions64(total, opts("submitted")...)
	b.resolved = progressbar.NewOptions64(total, opts("resolved ")...)
}

// clearLocked erases the bars; the cursor rests at the start of the first bar line.
func (b *bars) clearLocked() {
	if b.drawn {
		io.WriteString(b.out, "\r\033[J")
		b.drawn = false
	}
}

func (b *bars) drawLocked() {
	line := func(s string) string { return strings.TrimLeft(s, "\r") }
	fmt.Fprintf(b.out, "\r\033[J%s\n%s\r\033[1A", line(b.submitted.String()), line(b.resolved.String()))
	b.drawn = true
}

func (b *bars) update(p job.Progress, eta time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ensure(p.Rows)
	_ = b.submitted.Set64(p.Submitted)
	_ = b.resolved.Set64(p.Resolved)
	desc := "resolved "
	if eta > 0 {
		desc = fmt.Sprintf("resolved (eta %s)", eta.Round(time.Second))
	}
	b.resolved.Describe(desc)
	b.drawLocked()
}

func (b *bars) finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.clearLocked()
}

// Write prints a log line above the bars.
func (b *bars) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	redraw := b.drawn
	b.clearLocked()
	n, err := b.out.Write(p)
	if redraw {
		b.drawLocked()
	}
	return n, err
}

// progressSource is a run that reports how far it is: a job of either backend.
type progressSource interface{ Progress() job.Progress }

// progress is how a run shows that it moves: bars on a terminal, a log line at a steady interval
// otherwise (cron, pipes), nothing with --quiet.
type progress struct {
	logOut io.Writer // where log lines go: through the bars on a terminal
	bars   *bars
	stop   func()
}

func (e *env) newProgress(rc *runConfig) *progress {
	p := &progress{logOut: e.stderr, stop: func() {}}
	if !rc.quiet && !rc.noProgress && isTerminal(e.stderr) {
		p.bars = newBars(e.stderr)
		p.logOut = p.bars
	}
	return p
}

// start begins reporting j's progress until stop is called: bars redrawn four times a second on a
// terminal, and every --progress-interval a log line (not on a terminal, not with --quiet) and
// a call of each (the metrics file, whatever stderr is). --progress-interval 0 turns the
// interval off.
func (p *progress) start(rc *runConfig, j progressSource, logger *slog.Logger, each func()) {
	bars := p.bars != nil
	logLines := !rc.quiet && !bars
	interval := rc.progressInterval > 0 && (logLines || each != nil)
	if !bars && !interval {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		var barTick, lineTick <-chan time.Time
		if bars {
			t := time.NewTicker(250 * time.Millisecond)
			defer t.Stop()
			barTick = t.C
		}
		if interval {
			t := time.NewTicker(rc.progressInterval)
			defer t.Stop()
			lineTick = t.C
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-barTick:
				if pr := j.Progress(); pr.Rows > 0 {
					p.bars.update(pr, pr.ETA)
				}
			case <-lineTick:
				if each != nil {
					each()
				}
				pr := j.Progress()
				if !logLines || pr.Rows == 0 {
					continue
				}
				logger.Info("progress", "rows", pr.Rows, "submitted", pr.Submitted, "resolved", pr.Resolved,
					"succeeded", pr.Succeeded, "failed", pr.Failed, "cached", pr.Cached, "deduplicated", pr.Deduplicated, "polling", pr.Pending,
					"submit_rate", submitRate(pr.SubmitRate), "eta", etaText(pr))
			}
		}
	}()
	p.stop = func() {
		cancel()
		<-done
		if p.bars != nil {
			p.bars.finish()
		}
	}
}

// submitRate is the submission limit of a progress line: the pacer's 0 means no limit, and
// "0.0/s" read as if nothing were being sent.
func submitRate(limit float64) string {
	if limit <= 0 {
		return "unlimited"
	}
	return fmt.Sprintf("%.1f/s", limit)
}

// etaText is the ETA of a progress line. Progress says 0 both when nothing is left and when it
// cannot tell yet (no quota to go by and no pace observed: the first line of a run without limits),
// and "0s" would promise the end.
func etaText(p job.Progress) string {
	if p.ETA <= 0 && p.Resolved < p.Rows {
		return "unknown"
	}
	return p.ETA.Round(time.Second).String()
}
