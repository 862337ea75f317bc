package main

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/batchgpt/batchgpt/internal/emulator"
	"github.com/batchgpt/batchgpt/internal/version"
)

// readMetrics parses a --metrics-file with client_golang's own text parser, as node_exporter's
// textfile collector does. A missing file is nil.
func readMetrics(t *testing.T, path string) map[string]*dto.MetricFamily {
	t.Helper()
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(f)
	if err != nil {
		t.Fatalf("metrics file %s: %v", path, err)
	}
	return fams
}

// metric is the value of the one series of name whose labels include want.
func metric(t *testing.T, fams map[string]*dto.MetricFamily, name string, want ...string) (float64, bool) {
	t.Helper()
	found, v := 0, 0.0
	for _, m := range fams[name].GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		match := true
		for i := 0; i+1 < len(want); i += 2 {
			match = match && have[want[i]] == want[i+1]
		}
		if match {
			found++
			v = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	if found > 1 {
		t.Fatalf("%s%v: %d series", name, want, found)
	}
	return v, found == 1
}

// wantMetrics checks name=value pairs; a name may carry labels as name{k=v,...}.
func wantMetrics(t *testing.T, fams map[string]*dto.MetricFamily, input string, want map[string]float64) {
	t.Helper()
	for key, w := range want {
		name, labels, _ := strings.Cut(strings.TrimSuffix(key, "}"), "{")
		sel := []string{"input", input}
		for _, kv := range strings.Split(labels, ",") {
			if k, v, ok := strings.Cut(kv, "="); ok {
				sel = append(sel, k, v)
			}
		}
		if got, ok := metric(t, fams, name, sel...); !ok || got != w {
			t.Errorf("%s{input=%q}: %v (present: %v), want %v", key, input, got, ok, w)
		}
	}
}

// After a run the metrics file says what the summary says, with the exit code the process
// exited with and when it ended; the summary JSON, the first log line and the metrics name the
// binary's build. A run whose rows fail beyond --max-failed writes exit code 3 and keeps the
// time of the last success.
func TestMetricsFile(t *testing.T) {
	_, url := startEmulator(t, emulator.Config{})
	dir := t.TempDir()
	const n = 30
	in := writeInput(t, dir, n)
	prom, sumPath := filepath.Join(dir, "batchgpt.prom"), filepath.Join(dir, "summary.json")
	before := time.Now()
	res := runCmd(t, withKey(command(url, "run", "--metrics-file", prom, "--summary-json", sumPath,
		"--submit-rps", "0", in), testKey))
	after := time.Now()
	if res.code != 0 {
		t.Fatalf("exit %d\n%s", res.code, res.stderr)
	}
	checkResults(t, filepath.Join(dir, "in.results.jsonl"), n)
	build := binaryBuild(t, binary)
	first, _, _ := strings.Cut(res.stderr, "\n")
	if !strings.Contains(first, `msg="batchgpt starting" version=`+build.Version+" commit="+build.ShortCommit()) {
		t.Errorf("first log line %q does not name the build %+v", first, build)
	}
	var sum struct {
		Rows, Succeeded int
		Submissions     int64
		InputTokens     int64 `json:"input_tokens"`
		OutputTokens    int64 `json:"output_tokens"`
		ExitCode        *int  `json:"exit_code"`
		Build           version.Info
	}
	data, err := os.ReadFile(sumPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &sum); err != nil {
		t.Fatal(err)
	}
	if sum.Build != build || sum.ExitCode == nil || *sum.ExitCode != 0 || sum.Succeeded != n {
		t.Errorf("summary JSON: %s", data)
	}

	fams := readMetrics(t, prom)
	wantMetrics(t, fams, in, map[string]float64{
		"batchgpt_rows{state=succeeded}":     n,
		"batchgpt_rows{state=failed}":        0,
		"batchgpt_rows{state=pending}":       0,
		"batchgpt_rows{state=not_submitted}": 0,
		"batchgpt_submissions_total":         n,
		"batchgpt_possible_duplicates":       0,
		"batchgpt_tokens_total{kind=input}":  float64(sum.InputTokens),
		"batchgpt_tokens_total{kind=output}": float64(sum.OutputTokens),
		"batchgpt_last_exit_code":            0,
		"batchgpt_build_info{version=" + build.Version + ",goversion=" + build.GoVersion + "}": 1,
	})
	if v, _ := metric(t, fams, "batchgpt_polls_total", "input", in); v < n {
		t.Errorf("batchgpt_polls_total %v, want at least %d", v, n)
	}
	if _, ok := metric(t, fams, "batchgpt_cost_estimate", "input", in, "currency", "RUB"); !ok {
		t.Error("no batchgpt_cost_estimate")
	}
	end, _ := metric(t, fams, "batchgpt_last_end_timestamp_seconds", "input", in)
	success, _ := metric(t, fams, "batchgpt_last_success_timestamp_seconds", "input", in)
	if end < float64(before.Unix()) || end > float64(after.Unix()+1) || success != end {
		t.Errorf("end %v, success %v: want both within [%d, %d]", end, success, before.Unix(), after.Unix())
	}

	// Another input at the same path: 5 of its rows are stopped by the content filter.
	filtered := func(i int) string {
		if i%6 == 0 {
			return prompt(i) + " " + emulator.ContentFilterTrigger
		}
		return prompt(i)
	}
	writeInputOf(t, in, n, filtered)
	res = runCmd(t, withKey(command(url, "run", "--metrics-file", prom, "--submit-rps", "0", in), testKey))
	if res.code != 3 {
		t.Fatalf("exit %d, want 3\n%s", res.code, res.stderr)
	}
	fams = readMetrics(t, prom)
	wantMetrics(t, fams, in, map[string]float64{
		"batchgpt_rows{state=succeeded}": n - 5,
		"batchgpt_rows{state=failed}":    5,
		"batchgpt_last_exit_code":        3,
		// The last success is the first run's.
		"batchgpt_last_success_timestamp_seconds": success,
	})
	if end2, _ := metric(t, fams, "batchgpt_last_end_timestamp_seconds", "input", in); end2 < end {
		t.Errorf("last end %v before the first run's %v", end2, end)
	}
}

// During a long run the metrics file is rewritten at every --progress-interval, with --quiet
// too; interrupted, it says exit code 130, as the process does; the resume that finishes the
// run keeps the input label and says 0.
func TestMetricsDuringRun(t *testing.T) {
	lat, _ := emulator.ParseLatency("uniform:300ms:600ms")
	srv, url := startEmulator(t, emulator.Config{Latency: lat})
	dir := t.TempDir()
	const n = 400
	in := writeInput(t, dir, n)
	prom := filepath.Join(dir, "batchgpt.prom")
	cmd := withKey(command(url, "run", "--quiet", "--progress-interval", "50ms", "--metrics-file", prom,
		"--submit-rps", "200", in), testKey)
	stderr := start(t, cmd)
	var during map[string]*dto.MetricFamily
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		fams := readMetrics(t, prom)
		if v, _ := metric(t, fams, "batchgpt_rows", "input", in, "state", "succeeded"); v > 0 {
			during = fams
			break
		}
	}
	if during == nil {
		t.Fatalf("no metrics with succeeded rows while the run went on\n%s", stderr)
	}
	pending, _ := metric(t, during, "batchgpt_rows", "input", in, "state", "pending")
	notSubmitted, _ := metric(t, during, "batchgpt_rows", "input", in, "state", "not_submitted")
	succeeded, _ := metric(t, during, "batchgpt_rows", "input", in, "state", "succeeded")
	if succeeded+pending+notSubmitted != n || succeeded == n {
		t.Errorf("during the run: succeeded %v + pending %v + not submitted %v, want %d and some not succeeded", succeeded, pending, notSubmitted, n)
	}
	if _, ok := metric(t, during, "batchgpt_last_exit_code", "input", in); ok {
		t.Error("an exit code written while the first run runs")
	}
	for srv.Stats().Submissions < n/2 {
		time.Sleep(5 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("after SIGTERM: %v\n%s", err, stderr)
	}
	fams := readMetrics(t, prom)
	wantMetrics(t, fams, in, map[string]float64{"batchgpt_last_exit_code": 130})
	if _, ok := metric(t, fams, "batchgpt_last_success_timestamp_seconds", "input", in); ok {
		t.Error("a last success after an interrupted first run")
	}
	if v, _ := metric(t, fams, "batchgpt_rows", "input", in, "state", "succeeded"); v == n {
		t.Error("every row succeeded before the interruption: the test proves nothing")
	}

	r := runCmd(t, withKey(command(url, "resume", "--submit-rps", "0", "--poll-rps", "0", "--progress-interval", "10ms", "--metrics-file", prom, filepath.Join(dir, "in.checkpoint.json")), testKey))
	if r.code != 0 {
		t.Fatalf("resume: exit %d\n%s", r.code, r.stderr)
	}
	checkResults(t, filepath.Join(dir, "in.results.jsonl"), n)
	wantMetrics(t, readMetrics(t, prom), in, map[string]float64{"batchgpt_last_exit_code": 0, "batchgpt_rows{state=succeeded}": n})
}

// --notify posts the summary JSON, byte for byte the --summary-json file, to the webhook.
func TestNotify(t *testing.T) {
	_, url := startEmulator(t, emulator.Config{})
	bodies := make(chan []byte, 4)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Method == http.MethodPost && r.URL.Query().Get("token") == "hook-secret-42" {
			bodies <- b
		}
	}))
	defer hook.Close()
	dir := t.TempDir()
	in := writeInput(t, dir, 10)
	sumPath := filepath.Join(dir, "summary.json")
	res := runCmd(t, withKey(command(url, "run", "--notify", hook.URL+"/hook?token=hook-secret-42", "--summary-json", sumPath, in), testKey))
	if res.code != 0 {
		t.Fatalf("exit %d\n%s", res.code, res.stderr)
	}
	file, err := os.ReadFile(sumPath)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-bodies:
		if string(b) != string(file) {
			t.Errorf("webhook body\n%s\nis not the --summary-json file\n%s", b, file)
		}
	default:
		t.Fatalf("the webhook received nothing\n%s", res.stderr)
	}
	if strings.Contains(res.stderr, "hook-secret-42") {
		t.Errorf("the webhook's token is in the log:\n%s", res.stderr)
	}
}

// A webhook that fails (500s, or refuses connections) is tried a few times and logged; the
// run's exit code and results are those of the same run without it.
func TestNotifyFails(t *testing.T) {
	var tries atomic.Int32
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tries.Add(1)
		http.Error(w, "down", http.StatusInternalServerError)
	}))
	t.Cleanup(failing.Close) // after the parallel subtests
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + l.Addr().String()
	l.Close()
	for name, hook := range map[string]string{"500": failing.URL, "refused": refused} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, url := startEmulator(t, emulator.Config{})
			dir := t.TempDir()
			in := writeInput(t, dir, 10)
			res := runCmd(t, withKey(command(url, "run", "--notify", hook+"/hook?token=hook-secret-42", in), testKey))
			if res.code != 0 {
				t.Fatalf("exit %d\n%s", res.code, res.stderr)
			}
			checkResults(t, filepath.Join(dir, "in.results.jsonl"), 10)
			if !strings.Contains(res.stderr, "level=WARN") || !strings.Contains(res.stderr, "could not notify the webhook") {
				t.Errorf("no warning about the webhook:\n%s", res.stderr)
			}
			if strings.Contains(res.stderr, "hook-secret-42") {
				t.Errorf("the webhook's token is in the log:\n%s", res.stderr)
			}
		})
	}
	t.Cleanup(func() {
		if n := tries.Load(); n != 3 {
			t.Errorf("the failing webhook was tried %d times, want 3", n)
		}
	})
}
