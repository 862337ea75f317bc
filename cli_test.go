package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/batchgpt/batchgpt/internal/emulator"
	"github.com/batchgpt/batchgpt/internal/job"
)

func withKey(cmd *exec.Cmd, key string) *exec.Cmd {
	cmd.Env = append(cmd.Env, "YC_API_KEY="+key)
	return cmd
}

func TestExitCodes(t *testing.T) {
	allFail, _ := emulator.ParseFaults("op_perm_error=1")
	allFiltered, _ := emulator.ParseFaults("content_filter=1")
	for _, tc := range []struct {
		name   string
		cfg    emulator.Config
		key    string
		args   []string
		code   int
		stderr string
	}{
		{"all succeed", emulator.Config{}, testKey, nil, 0, "succeeded: 20"},
		{"rows failed", emulator.Config{Faults: allFail}, testKey, nil, 3, "20 of 20 rows failed"},
		{"failures tolerated", emulator.Config{Faults: allFail}, testKey, []string{"--max-failed", "20"}, 0, "failed: 20"},
		{"failures tolerated as a share", emulator.Config{Faults: allFail}, testKey, []string{"--max-failed", "100%"}, 0, "failed: 20"},
		{"share exceeded", emulator.Config{Faults: allFail}, testKey, []string{"--max-failed", "50%"}, 3, "20 of 20 rows failed"},
		{"bad max-failed", emulator.Config{}, testKey, []string{"--max-failed", "lots"}, 2, `--max-failed "lots"`},
		{"content filtered rows failed", emulator.Config{Faults: allFiltered}, testKey, nil, 3, "content-filter=20"},
		{"content filtered within max-failed", emulator.Config{Faults: allFiltered}, testKey, []string{"--max-failed", "20"}, 0, "answers: 20 stopped by the content filter"},
		{"content filtered accepted", emulator.Config{Faults: allFiltered}, testKey, []string{"--accept-filtered"}, 0, "succeeded: 20  failed: 0"},
		{"bad api key", emulator.Config{}, "AQVNwrong-key-0000", nil, 4, "Unknown api key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, url := startEmulator(t, tc.cfg)
			dir := t.TempDir()
			in := writeInput(t, dir, 20)
			res := runCmd(t, withKey(command(url, append(append([]string{"run"}, tc.args...), in)...), tc.key))
			if res.code != tc.code || !strings.Contains(res.stderr, tc.stderr) {
				t.Fatalf("exit %d (want %d), stderr lacks %q?\n%s", res.code, tc.code, tc.stderr, res.stderr)
			}
			if strings.Contains(res.stderr, tc.key) {
				t.Fatalf("the API key leaked into the output:\n%s", res.stderr)
			}
			if tc.code == 4 && !strings.Contains(res.stderr, "batchgpt resume ") {
				t.Fatalf("an auth failure must say how to resume:\n%s", res.stderr)
			}
		})
	}
}

func TestLogLinesWithoutTerminal(t *testing.T) {
	lat, _ := emulator.ParseLatency("uniform:200ms:800ms")
	_, url := startEmulator(t, emulator.Config{Latency: lat})
	dir := t.TempDir()
	in := writeInput(t, dir, 200)
	sumPath := filepath.Join(dir, "summary.json")
	res := runCmd(t, withKey(command(url, "run", "--progress-interval", "100ms", "--log-format", "json",
		"--summary-json", sumPath, "--submit-rps", "300", in), testKey))
	if res.code != 0 {
		t.Fatalf("exit %d\n%s", res.code, res.stderr)
	}
	progressLines := 0
	var last, summary map[string]any
	for _, m := range jsonLines(t, res.stderr) {
		if m["msg"] == "summary" {
			summary, _ = m["summary"].(map[string]any)
		}
		if m["msg"] == "progress" {
			progressLines++
			for _, k := range []string{"rows", "submitted", "resolved", "succeeded", "failed", "eta"} {
				if _, ok := m[k]; !ok {
					t.Fatalf("progress line lacks %q: %v", k, m)
				}
			}
			last = m
		}
	}
	if progressLines < 3 || last["rows"].(float64) != 200 || last["submit_rate"] != "300.0/s" {
		t.Fatalf("%d progress lines, last %v:\n%s", progressLines, last, res.stderr)
	}
	if strings.Contains(res.stderr, "\033[") {
		t.Fatal("terminal escape codes written to a non-terminal")
	}
	if summary == nil || summary["succeeded"] != float64(200) {
		t.Fatalf("no summary line with 200 succeeded rows:\n%s", res.stderr)
	}
	var s job.Summary
	data, err := os.ReadFile(sumPath)
	if err != nil || json.Unmarshal(data, &s) != nil || s.Succeeded != 200 || s.Submissions != 200 {
		t.Fatalf("summary json %v: %s", err, data)
	}
}

func TestProgressBarsOnTerminal(t *testing.T) {
	lat, _ := emulator.ParseLatency("uniform:100ms:600ms")
	_, url := startEmulator(t, emulator.Config{Latency: lat})
	dir := t.TempDir()
	in := writeInput(t, dir, 300)
	cmd := withKey(command(url, "run", "--submit-rps", "300", in), testKey)
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal here: %v", err)
	}
	defer ptmx.Close()
	cmd.Stderr = tty
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close()
	var screen bytes.Buffer
	copied := make(chan struct{})
	go func() { io.Copy(&screen, ptmx); close(copied) }()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("run: %v\n%s", err, screen.String())
	}
	select {
	case <-copied:
	case <-time.After(5 * time.Second):
	}
	out := screen.String()
	for _, want := range []string{"submitted", "resolved", "/300", "rows/s", "\033[J", "succeeded: 300"} {
		if !strings.Contains(out, want) {
			t.Fatalf("terminal output lacks %q:\n%q", want, out)
		}
	}
}

func TestDryRunSendsNothing(t *testing.T) {
	srv, url := startEmulator(t, emulator.Config{})
	dir := t.TempDir()
	in := writeInput(t, dir, 1234)
	res := runCmd(t, command(url, "run", "--dry-run", "--max-tokens", "100", "--price", "yandexgpt-lite=2", in))
	if res.code != 0 {
		t.Fatalf("exit %d\n%s", res.code, res.stderr)
	}
	for _, want := range []string{"rows:             1234, all valid", "input tokens:", "at 2 per 1,000 tokens", "246.80 RUB more for 100 tokens per answer", "submission time:  2m3s at 10/s", "nothing was sent"} {
		if !strings.Contains(res.stdout, want) {
			t.Fatalf("dry run output lacks %q:\n%s", want, res.stdout)
		}
	}
	if st := srv.Stats(); st.Submissions != 0 {
		t.Fatalf("dry run sent %d requests", st.Submissions)
	}
	if _, err := os.Stat(filepath.Join(dir, "in.checkpoint.json")); !os.IsNotExist(err) {
		t.Fatal("dry run left a checkpoint")
	}
}

// TestDiskFullStopsCleanly writes results to /dev/full: the run must stop with an error naming
// the file, keep every operation id it was given, and say how to resume.
func TestDiskFullStopsCleanly(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	srv, url := startEmulator(t, emulator.Config{})
	dir := t.TempDir()
	in := writeInput(t, dir, 200)
	cp := filepath.Join(dir, "in.checkpoint.json")
	res := runCmd(t, withKey(command(url, "run", "--force", "-o", "/dev/full", "--submit-rps", "0", in), testKey))
	if res.code != 1 || !strings.Contains(res.stderr, "/dev/full") || !strings.Contains(res.stderr, "no space left on device") ||
		!strings.Contains(res.stderr, "batchgpt resume "+cp) {
		t.Fatalf("exit %d\n%s", res.code, res.stderr)
	}
	sres := runCmd(t, command(url, "status", "--json", cp))
	var status job.Status
	if err := json.Unmarshal([]byte(sres.stdout), &status); err != nil {
		t.Fatalf("status: %v\n%s", err, sres.stderr)
	}
	created := srv.Stats().OpsCreated
	if created == 0 || int64(status.Submitted) != created {
		t.Fatalf("the API created %d operations but the checkpoint holds %d", created, status.Submitted)
	}
}

// TestSecondSignalAbortsAtOnce: with requests hanging on the wire, a first SIGTERM waits for
// them; a second aborts them and exits promptly, every acknowledged operation id kept.
func TestSecondSignalAbortsAtOnce(t *testing.T) {
	srv, url := startEmulator(t, emulator.Config{})
	dir := t.TempDir()
	in := writeInput(t, dir, 400)
	cp := filepath.Join(dir, "in.checkpoint.json")
	cmd := withKey(command(url, "run", "--submit-rps", "100", "--request-timeout", "5m", in), testKey)
	stderr := start(t, cmd)
	for srv.Stats().OpsCreated < 30 {
		time.Sleep(5 * time.Millisecond)
	}
	// From now on every request hangs for a minute.
	srv.SetFaults(emulator.Faults{RateSlow: 1, SlowDelay: time.Minute})
	time.Sleep(200 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGTERM)
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("after two signals: %v\n%s", err, stderr.String())
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("the second signal took %s to stop the run", d)
	}
	st := runCmd(t, command(url, "status", "--json", cp))
	var status job.Status
	if err := json.Unmarshal([]byte(st.stdout), &status); err != nil {
		t.Fatalf("status: %v\n%s", err, st.stderr)
	}
	// Operations whose answer never arrived are in doubt; every one we were told of is kept.
	created := srv.Stats().OpsCreated
	if int64(status.Submitted+status.InDoubt+status.PossibleDuplicates) < created {
		t.Fatalf("the API created %d operations; the checkpoint holds %d ids, %d rows in doubt and %d possible duplicates", created, status.Submitted, status.InDoubt, status.PossibleDuplicates)
	}
}

// TestNoSecretsAnywhere runs with secrets in every credential variable and verbose logs, through
// errors, and looks for them in every file the run leaves and in everything it prints.
func TestNoSecretsAnywhere(t *testing.T) {
	faults, _ := emulator.ParseFaults("500=0.1,reset=0.05,op_perm_error=0.1")
	_, url := startEmulator(t, emulator.Config{Faults: faults})
	dir := t.TempDir()
	in := writeInput(t, dir, 100)
	cmd := withKey(command(url, "run", "--verbose", "--max-failed", "100%", in), testKey)
	cmd.Env = append(cmd.Env, "YC_IAM_TOKEN=t1.secretIamToken-do-not-leak")
	res := runCmd(t, cmd)
	if res.code != 0 {
		t.Fatalf("exit %d\n%s", res.code, res.stderr)
	}
	// And a rejected key, whose error travels through every error path.
	res2 := runCmd(t, withKey(command(url, "run", "--verbose", "--force", in), "AQVNrejected-secret-key-000"))
	secrets := []string{testKey, "secretIamToken", "AQVNrejected-secret-key-000"}
	texts := map[string]string{"stdout": res.stdout + res2.stdout, "stderr": res.stderr + res2.stderr}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		data, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		texts[e.Name()] = string(data)
	}
	if len(entries) < 3 {
		t.Fatalf("expected checkpoint and results files in %s, found %d entries", dir, len(entries))
	}
	for name, text := range texts {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Fatalf("secret %q found in %s", s, name)
			}
		}
	}
}
