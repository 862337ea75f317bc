package report

import (
	"errors"
	"io/fs"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/batchgpt/batchgpt/internal/version"
)

// Snapshot is the state of a run that the metrics file shows. Counts of "this process" start at
// zero in every process, as Prometheus counters may.
type Snapshot struct {
	Input string // the input file, the label that tells one job's series from another's
	Build version.Info

	// Rows by state; they add up to the input's rows. Pending rows have an operation that is
	// not resolved yet; NotSubmitted rows have none.
	Succeeded, Failed, Pending, NotSubmitted int64

	Submissions        int64 // completionAsync requests this process made that were accepted
	Polls              int64 // operation polls of this process
	Throttled          int64 // 429 answers this process got
	PossibleDuplicates int64 // tries of this process that may have been billed twice
	InputTokens        int64 // tokens of the rows this process resolved
	OutputTokens       int64

	// Cost estimates the tokens of this process at the price table, in Currency; without a
	// Currency (no price known for the model) there is no cost metric.
	Cost     float64
	Currency string

	// Exit is set in the file written when the run ends; while it runs it is nil and the last_*
	// metrics are those of the run before, read from the file at start.
	Exit *Exit
}

// Exit is how a run ended.
type Exit struct {
	Code int
	End  time.Time
}

// Metric names, documented in the README.
const (
	mRows        = "batchgpt_rows"
	mSubmissions = "batchgpt_submissions_total"
	mPolls       = "batchgpt_polls_total"
	mThrottled   = "batchgpt_throttled_total"
	mDuplicates  = "batchgpt_possible_duplicates"
	mTokens      = "batchgpt_tokens_total"
	mCost        = "batchgpt_cost_estimate"
	mExitCode    = "batchgpt_last_exit_code"
	mEnd         = "batchgpt_last_end_timestamp_seconds"
	mSuccess     = "batchgpt_last_success_timestamp_seconds"
	mBuild       = "batchgpt_build_info"
)

var (
	descRows = prometheus.NewDesc(mRows, "Rows of the input by state: succeeded, failed, pending (submitted, not resolved), not_submitted.",
		[]string{"input", "state"}, nil)
	descSubmissions = prometheus.NewDesc(mSubmissions, "completionAsync requests accepted in this process.", []string{"input"}, nil)
	descPolls       = prometheus.NewDesc(mPolls, "Operation polls made in this process.", []string{"input"}, nil)
	descThrottled   = prometheus.NewDesc(mThrottled, "429 answers received in this process.", []string{"input"}, nil)
	descDuplicates  = prometheus.NewDesc(mDuplicates, "Tries in this process that may have created an operation billed twice.", []string{"input"}, nil)
	descTokens      = prometheus.NewDesc(mTokens, "Tokens of the rows resolved in this process, by kind: input or output.", []string{"input", "kind"}, nil)
	descCost        = prometheus.NewDesc(mCost, "Estimated cost of the tokens of this process at the async price table.", []string{"input", "currency"}, nil)
	descExitCode    = prometheus.NewDesc(mExitCode, "Exit code of the last run that ended (see batchgpt --help).", []string{"input"}, nil)
	descEnd         = prometheus.NewDesc(mEnd, "When the last run ended, in seconds since the epoch.", []string{"input"}, nil)
	descSuccess     = prometheus.NewDesc(mSuccess, "When the last run with exit code 0 ended, in seconds since the epoch (kept across runs in this file).", []string{"input"}, nil)
	descBuild       = prometheus.NewDesc(mBuild, "The build of batchgpt that wrote this file; always 1.", []string{"input", "version", "commit", "goversion"}, nil)
)

// last are the last_* metrics of one input.
type last struct {
	code             float64
	end, success     float64
	hasExit, hasSucc bool
}

// MetricsFile is the Prometheus text file of a run. It keeps what the file said about earlier
// runs: the last exit code and end until this run ends, the last success until it succeeds.
type MetricsFile struct {
	path string
	prev map[string]last // by input, as read at start
}

// OpenMetricsFile prepares writing the metrics file at path, reading what an earlier run left
// there. A missing file is a first run; one that cannot be parsed is replaced, and its error
// returned beside a usable MetricsFile so the caller can say so.
func OpenMetricsFile(path string) (*MetricsFile, error) {
	m := &MetricsFile{path: path, prev: map[string]last{}}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return m, err
	}
	defer f.Close()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(f)
	if err != nil {
		return m, err
	}
	for name, fam := range fams {
		for _, mt := range fam.GetMetric() {
			input := ""
			for _, l := range mt.GetLabel() {
				if l.GetName() == "input" {
					input = l.GetValue()
				}
			}
			v := mt.GetGauge().GetValue()
			l := m.prev[input]
			switch name {
			case mExitCode:
				l.code, l.hasExit = v, true
			case mEnd:
				l.end = v
			case mSuccess:
				l.success, l.hasSucc = v, true
			default:
				continue
			}
			m.prev[input] = l
		}
	}
	return m, nil
}

// PreviousInput is the input label of the metrics the file held at start, when they were of one
// input.
func (m *MetricsFile) PreviousInput() (string, bool) {
	if len(m.prev) != 1 {
		return "", false
	}
	for in := range m.prev {
		return in, true
	}
	return "", false
}

// Write replaces the file with the metrics of s: a temp file in the same directory, renamed
// over the old one, so node_exporter never reads half a file.
func (m *MetricsFile) Write(s Snapshot) error {
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(&snapshotCollector{s: s, last: m.last(s)}); err != nil {
		return err
	}
	return prometheus.WriteToTextfile(m.path, reg)
}

// last returns the last_* metrics that s's file shows.
func (m *MetricsFile) last(s Snapshot) last {
	l := m.prev[s.Input]
	if s.Exit != nil {
		end := float64(s.Exit.End.UnixMilli()) / 1000
		l.code, l.end, l.hasExit = float64(s.Exit.Code), end, true
		if s.Exit.Code == 0 {
			l.success, l.hasSucc = end, true
		}
	}
	return l
}

// snapshotCollector turns a Snapshot into metrics.
type snapshotCollector struct {
	s    Snapshot
	last last
}

func (c *snapshotCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRows, descSubmissions, descPolls, descThrottled, descDuplicates,
		descTokens, descCost, descExitCode, descEnd, descSuccess, descBuild} {
		ch <- d
	}
}

func (c *snapshotCollector) Collect(ch chan<- prometheus.Metric) {
	s, in := c.s, c.s.Input
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{in}, labels...)...)
	}
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append([]string{in}, labels...)...)
	}
	gauge(descRows, float64(s.Succeeded), "succeeded")
	gauge(descRows, float64(s.Failed), "failed")
	gauge(descRows, float64(s.Pending), "pending")
	gauge(descRows, float64(s.NotSubmitted), "not_submitted")
	counter(descSubmissions, s.Submissions)
	counter(descPolls, s.Polls)
	counter(descThrottled, s.Throttled)
	gauge(descDuplicates, float64(s.PossibleDuplicates))
	counter(descTokens, s.InputTokens, "input")
	counter(descTokens, s.OutputTokens, "output")
	if s.Currency != "" {
		gauge(descCost, s.Cost, s.Currency)
	}
	if c.last.hasExit {
		gauge(descExitCode, c.last.code)
		gauge(descEnd, c.last.end)
	}
	if c.last.hasSucc {
		gauge(descSuccess, c.last.success)
	}
	b := s.Build
	commit := b.Commit
	if b.Modified {
		commit += "+dirty"
	}
	gauge(descBuild, 1, b.Version, commit, b.GoVersion)
}
