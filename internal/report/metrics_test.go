package report

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/batchgpt/batchgpt/internal/version"
)

// parse reads a metrics file with client_golang's own text parser, as node_exporter does.
func parse(t *testing.T, path string) map[string]*dto.MetricFamily {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(f)
	if err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	return fams
}

// value returns the value of the series of name whose labels include want; ok is false when
// there is none.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	fam := fams[name]
	if fam == nil {
		return 0, false
	}
next:
	for _, m := range fam.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		}
	}
	return 0, false
}

func TestMetricsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "batchgpt.prom")
	const in = "/data/prompts.jsonl"
	build := version.Info{Version: "v1.2.3", Commit: "abc", Modified: true, GoVersion: "go1.26.0"}
	s := Snapshot{Input: in, Build: build, Succeeded: 5, Failed: 1, Pending: 3, NotSubmitted: 1,
		Submissions: 9, Polls: 14, Throttled: 2, PossibleDuplicates: 1, InputTokens: 100, OutputTokens: 40,
		Cost: 0.5, Currency: "RUB"}

	m, err := OpenMetricsFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Write(s); err != nil {
		t.Fatal(err)
	}
	fams := parse(t, path)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"batchgpt_rows", map[string]string{"state": "succeeded"}, 5},
		{"batchgpt_rows", map[string]string{"state": "failed"}, 1},
		{"batchgpt_rows", map[string]string{"state": "pending"}, 3},
		{"batchgpt_rows", map[string]string{"state": "not_submitted"}, 1},
		{"batchgpt_submissions_total", nil, 9},
		{"batchgpt_polls_total", nil, 14},
		{"batchgpt_throttled_total", nil, 2},
		{"batchgpt_possible_duplicates", nil, 1},
		{"batchgpt_tokens_total", map[string]string{"kind": "input"}, 100},
		{"batchgpt_tokens_total", map[string]string{"kind": "output"}, 40},
		{"batchgpt_cost_estimate", map[string]string{"currency": "RUB"}, 0.5},
		{"batchgpt_build_info", map[string]string{"version": "v1.2.3", "commit": "abc+dirty", "goversion": "go1.26.0"}, 1},
	} {
		labels := map[string]string{"input": in}
		for k, v := range c.labels {
			labels[k] = v
		}
		if got, ok := value(fams, c.name, labels); !ok || got != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, labels, got, ok, c.want)
		}
	}
	// While the first run runs, there is no last run.
	for _, name := range []string{"batchgpt_last_exit_code", "batchgpt_last_end_timestamp_seconds", "batchgpt_last_success_timestamp_seconds"} {
		if _, ok := fams[name]; ok {
			t.Errorf("%s written before any run ended", name)
		}
	}

	// The run ends with exit code 0.
	end := time.Date(2026, 11, 30, 1, 2, 3, 0, time.UTC)
	s.Exit = &Exit{Code: 0, End: end}
	if err := m.Write(s); err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"batchgpt_last_exit_code": 0, "batchgpt_last_end_timestamp_seconds": float64(end.Unix()),
		"batchgpt_last_success_timestamp_seconds": float64(end.Unix())}
	checkLast(t, parse(t, path), in, want)

	// The next night's run reads the file: while it runs, the last run is still the one before;
	// it fails (exit 3) and the last success stays.
	m, err = OpenMetricsFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s.Exit = nil
	if err := m.Write(s); err != nil {
		t.Fatal(err)
	}
	checkLast(t, parse(t, path), in, want)
	end2 := end.Add(24 * time.Hour)
	s.Exit = &Exit{Code: 3, End: end2}
	if err := m.Write(s); err != nil {
		t.Fatal(err)
	}
	checkLast(t, parse(t, path), in, map[string]float64{"batchgpt_last_exit_code": 3,
		"batchgpt_last_end_timestamp_seconds": float64(end2.Unix()), "batchgpt_last_success_timestamp_seconds": float64(end.Unix())})
	if got, ok := m.PreviousInput(); !ok || got != in {
		t.Errorf("PreviousInput = %q, %v", got, ok)
	}

	// Nothing but the file is left in the directory: the temp file was renamed over it.
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want the metrics file only", len(entries))
	}
}

func checkLast(t *testing.T, fams map[string]*dto.MetricFamily, in string, want map[string]float64) {
	t.Helper()
	for name, w := range want {
		if got, ok := value(fams, name, map[string]string{"input": in}); !ok || got != w {
			t.Errorf("%s = %v (found %v), want %v", name, got, ok, w)
		}
	}
}

// A file that is no metrics file is replaced, and said so.
func TestMetricsFileUnparsable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "batchgpt.prom")
	if err := os.WriteFile(path, []byte("this is { not metrics\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := OpenMetricsFile(path)
	if err == nil {
		t.Error("no error for a file that does not parse")
	}
	if err := m.Write(Snapshot{Input: "x", Exit: &Exit{Code: 1, End: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	if _, ok := value(parse(t, path), "batchgpt_last_exit_code", map[string]string{"input": "x"}); !ok {
		t.Error("no exit code written")
	}
}
