package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/internal/emulator"
	"github.com/batchgpt/batchgpt/internal/job"
)

// These tests drive the real binary against the emulator on loopback.

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "batchgpt-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "batchgpt")
	tmpDir = dir
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	testFolder = "b1gclitestfolder0000"
	testKey    = "AQVNsecretTestKey-do-not-leak-0123456789"
)

func startEmulator(t *testing.T, cfg emulator.Config) (*emulator.Server, string) {
	t.Helper()
	if cfg.APIKeys == nil {
		cfg.APIKeys = []string{testKey}
	}
	srv := emulator.New(cfg)
	url, err := srv.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv, url
}

// tmpDir holds the binary and the default result caches of the commands.
var tmpDir string

// command prepares the binary with a clean environment pointing at the emulator. Each command
// gets a result cache of its own (never the user's): tests that share one say so.
func command(url string, args ...string) *exec.Cmd {
	cmd := exec.Command(binary, args...)
	cacheHome, err := os.MkdirTemp(tmpDir, "cache")
	if err != nil {
		panic(err)
	}
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "XDG_CACHE_HOME=" + cacheHome,
		"BATCHGPT_ENDPOINT=" + url, "BATCHGPT_OPERATIONS_ENDPOINT=" + url, "YC_FOLDER_ID=" + testFolder,
		// With no credentials batchgpt probes the VM metadata service: keep that probe on loopback.
		"BATCHGPT_METADATA_URL=http://127.0.0.1:9"}
	return cmd
}

// start launches cmd in the background, its stderr collected in the returned buffer.
func start(t *testing.T, cmd *exec.Cmd) *bytes.Buffer {
	t.Helper()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return &stderr
}

type result struct {
	code           int
	stdout, stderr string
}

func runCmd(t *testing.T, cmd *exec.Cmd) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatal(err)
		}
		code = ee.ExitCode()
	}
	return result{code, stdout.String(), stderr.String()}
}

func prompt(i int) string {
	return fmt.Sprintf("Row %d: переведи «%d» на английский", i, i)
}

func writeInput(t *testing.T, dir string, n int) string {
	t.Helper()
	return writeInputOf(t, filepath.Join(dir, "in.jsonl"), n, prompt)
}

// writeInputOf writes n rows with ids r00000... whose prompts promptOf gives.
func writeInputOf(t *testing.T, p string, n int, promptOf func(int) string) string {
	t.Helper()
	var b strings.Builder
	for i := range n {
		line, _ := json.Marshal(map[string]string{"id": fmt.Sprintf("r%05d", i), "prompt": promptOf(i)})
		b.Write(line)
		b.WriteByte('\n')
	}
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// checkResults asserts that each of n rows appears exactly once with the emulator's answer.
func checkResults(t *testing.T, path string, n int) {
	t.Helper()
	checkResultsOf(t, path, n, prompt)
}

// checkResultsOf is checkResults for rows whose prompts promptOf gives; it returns the results
// by id.
func checkResultsOf(t *testing.T, path string, n int, promptOf func(int) string) map[string]job.Result {
	t.Helper()
	all := map[string]job.Result{}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	uri := "gpt://" + testFolder + "/yandexgpt-lite/latest"
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		var r job.Result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("results line %q: %v", sc.Text(), err)
		}
		if seen[r.ID] {
			t.Fatalf("row %s appears twice in the results", r.ID)
		}
		seen[r.ID] = true
		var i int
		fmt.Sscanf(r.ID, "r%05d", &i)
		want := emulator.Answer(uri, []emulator.Message{{Role: "user", Text: promptOf(i)}})
		if r.Status != job.StatusSucceeded || r.Text != want {
			t.Fatalf("row %s: %q %q %+v, want %q", r.ID, r.Status, r.Text, r.Error, want)
		}
		all[r.ID] = r
	}
	if len(seen) != n {
		t.Fatalf("%d rows in the results, want %d", len(seen), n)
	}
	return all
}

func TestValidationErrorsSendNothing(t *testing.T) {
	for _, tc := range []struct {
		name, file, content string
		args                []string
		want                []string
	}{
		{"unknown field", "in.jsonl", "{\"id\":\"a\",\"prompt\":\"hi\"}\n{\"id\":\"b\",\"promt\":\"hi\"}\n", nil,
			[]string{`in.jsonl: 2 input problem(s); nothing was sent:`, `in.jsonl:2: unknown field "promt" (known fields: id, prompt, system, messages, modelUri, completionOptions, jsonSchema, jsonObject)`,
				`in.jsonl:2: field "prompt": missing prompt (or messages)`}},
		{"duplicate id", "in.jsonl", "{\"id\":\"a\",\"prompt\":\"hi\"}\n{\"id\":\"a\",\"prompt\":\"ho\"}\n", nil,
			[]string{`in.jsonl:2: field "id": duplicate id "a" (first on line 1)`}},
		{"empty prompt", "in.jsonl", "{\"prompt\":\"  \"}\n", nil, []string{`in.jsonl:1: field "prompt": empty prompt`}},
		{"bad role", "in.jsonl", "{\"messages\":[{\"role\":\"bot\",\"text\":\"x\"}]}\n", nil,
			[]string{`in.jsonl:1: field "messages[0].role": invalid role "bot" (want system, user or assistant)`}},
		{"invalid utf-8", "in.jsonl", "{\"prompt\":\"\xff\"}\n", nil, []string{`in.jsonl:1: field "prompt": invalid UTF-8`}},
		{"not json", "in.jsonl", "{\"prompt\":\"ok\"}\nnope\n", nil, []string{`in.jsonl:2: invalid JSON at column 2`}},
		{"csv empty prompt", "in.csv", "id,prompt\r\n1,hello\r\n2,\r\n", nil, []string{`in.csv:3: field "prompt": empty prompt`}},
		{"csv bad quote", "in.csv", "id,prompt\n1,\"open\n", nil, []string{`in.csv:2: column`}},
		{"csv template column", "in.csv", "id,text\n1,hello\n", []string{"--template", "Say {{.txt}}"},
			[]string{`in.csv:1: field "template": refers to column "txt", which the header does not have (columns: "id", "text")`}},
		{"bad temperature", "in.jsonl", "{\"prompt\":\"x\"}\n", []string{"--temperature", "1.5"}, []string{`--temperature 1.5: want a number from 0 to 1`}},
		{"unknown extension", "in.txt", "hello\n", nil, []string{`cannot tell the input format from the extension ".txt"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, url := startEmulator(t, emulator.Config{})
			dir := t.TempDir()
			in := filepath.Join(dir, tc.file)
			if err := os.WriteFile(in, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := withKey(command(url, append(append([]string{"run"}, tc.args...), in)...), testKey)
			res := runCmd(t, cmd)
			if res.code != 2 {
				t.Fatalf("exit %d, want 2; stderr:\n%s", res.code, res.stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(res.stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, res.stderr)
				}
			}
			if st := srv.Stats(); st.Submissions != 0 || st.Polls != 0 {
				t.Fatalf("the emulator received requests: %+v", st)
			}
			if _, err := os.Stat(filepath.Join(dir, strings.TrimSuffix(tc.file, filepath.Ext(tc.file))+".checkpoint.json")); !os.IsNotExist(err) {
				t.Fatalf("a checkpoint was left behind: %v", err)
			}
		})
	}
}

func TestNoCredentials(t *testing.T) {
	_, url := startEmulator(t, emulator.Config{})
	dir := t.TempDir()
	in := writeInput(t, dir, 3)
	res := runCmd(t, command(url, "run", in))
	if res.code != 2 || !strings.Contains(res.stderr, "set YC_API_KEY, YC_IAM_TOKEN or YC_SERVICE_ACCOUNT_KEY_FILE") ||
		strings.Contains(res.stderr, "resume") {
		t.Fatalf("exit %d, stderr:\n%s", res.code, res.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "in.checkpoint.json")); !os.IsNotExist(err) {
		t.Fatal("a run without credentials left a checkpoint")
	}
	// Bad input is reported before credentials are even looked for.
	bad := filepath.Join(dir, "bad.jsonl")
	os.WriteFile(bad, []byte("{\"promt\":\"x\"}\n"), 0o600)
	if res := runCmd(t, command(url, "run", bad)); res.code != 2 || !strings.Contains(res.stderr, `unknown field "promt"`) {
		t.Fatalf("bad input without credentials: exit %d\n%s", res.code, res.stderr)
	}
}

func TestRunStatusAndLocking(t *testing.T) {
	lat, _ := emulator.ParseLatency("uniform:500ms:1500ms")
	srv, url := startEmulator(t, emulator.Config{Latency: lat})
	dir := t.TempDir()
	const n = 300
	in := writeInput(t, dir, n)
	cp := filepath.Join(dir, "in.checkpoint.json")
	cmd := withKey(command(url, "run", "--submit-rps", "0", in), testKey)
	stderr := start(t, cmd)
	// Wait until the run has created its checkpoint, then try a second process on it.
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(cp); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no checkpoint appeared")
		}
		time.Sleep(10 * time.Millisecond)
	}
	second := withKey(command(url, "resume", cp), testKey)
	res := runCmd(t, second)
	if res.code != 5 || !strings.Contains(res.stderr, "another batchgpt process") {
		t.Errorf("second process: exit %d, stderr:\n%s", res.code, res.stderr)
	}
	st := runCmd(t, command(url, "status", "--json", cp))
	if st.code != 0 {
		t.Errorf("status during the run: exit %d\n%s", st.code, st.stderr)
	}
	var s job.Status
	if err := json.Unmarshal([]byte(st.stdout), &s); err != nil || s.Rows != n {
		t.Errorf("status during the run: %v %+v", err, s)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	checkResults(t, filepath.Join(dir, "in.results.jsonl"), n)
	if got := srv.Stats().Submissions; got != n {
		t.Fatalf("emulator saw %d submissions, want %d", got, n)
	}
	// A finished checkpoint resumes to nothing, successfully.
	again := withKey(command(url, "resume", cp), testKey)
	if res := runCmd(t, again); res.code != 0 {
		t.Fatalf("resume of a finished run: exit %d\n%s", res.code, res.stderr)
	}
	if got := srv.Stats().Submissions; got != n {
		t.Fatalf("resume of a finished run submitted again: %d", got)
	}
	// run on the same input finds its run complete: nothing to do, nothing sent.
	rerun := withKey(command(url, "run", in), testKey)
	if res := runCmd(t, rerun); res.code != 0 || !strings.Contains(res.stderr, "nothing to do") || srv.Stats().Submissions != n {
		t.Fatalf("second run: exit %d, %d submissions\n%s", res.code, srv.Stats().Submissions, res.stderr)
	}
}

func TestInterruptPrintsResume(t *testing.T) {
	lat, _ := emulator.ParseLatency("uniform:1s:3s")
	srv, url := startEmulator(t, emulator.Config{Latency: lat})
	dir := t.TempDir()
	const n = 400
	in := writeInput(t, dir, n)
	cp := filepath.Join(dir, "in.checkpoint.json")
	cmd := withKey(command(url, "run", "--submit-rps", "200", in), testKey)
	stderr := start(t, cmd)
	for srv.Stats().Submissions < 50 {
		time.Sleep(5 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("after SIGTERM: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "batchgpt resume "+cp) {
		t.Fatalf("no resume command printed:\n%s", stderr.String())
	}
	res := withKey(command(url, "resume", cp), testKey)
	if r := runCmd(t, res); r.code != 0 {
		t.Fatalf("resume: exit %d\n%s", r.code, r.stderr)
	}
	checkResults(t, filepath.Join(dir, "in.results.jsonl"), n)
	if st := srv.Stats(); st.Submissions != n || st.DuplicateSubmissions != 0 {
		t.Fatalf("emulator: %+v", st)
	}
}

// TestKill9Torture kills the real binary with SIGKILL at random moments, resumes it each time,
// and checks that every row ends up exactly once in the results, and that the API saw no more
// duplicate submissions than the rows reported in doubt.
func TestKill9Torture(t *testing.T) {
	if testing.Short() {
		t.Skip("long")
	}
	lat, _ := emulator.ParseLatency("uniform:0s:400ms")
	faults, _ := emulator.ParseFaults("submit_lost=0.01,500=0.02,reset=0.01")
	srv, url := startEmulator(t, emulator.Config{Latency: lat, Faults: faults, Seed: 7})
	dir := t.TempDir()
	// With the result cache and deduplication on: rows 2400.. repeat the requests of rows 0..599,
	// and a first run has put the answers of rows 0..299 in the cache.
	const n, distinct, warm = 3000, 2400, 300
	promptOf := func(i int) string { return prompt(i % distinct) }
	cacheFile := filepath.Join(dir, "cache.db")
	withCache := func(cmd *exec.Cmd) *exec.Cmd { return withCacheFile(cmd, cacheFile) }
	warmIn := writeInputOf(t, filepath.Join(dir, "warm.jsonl"), warm, prompt)
	if res := runCmd(t, withCache(withKey(command(url, "run", "--submit-rps", "1500", warmIn), testKey))); res.code != 0 {
		t.Fatalf("warm-up run: exit %d\n%s", res.code, res.stderr)
	}
	uri := "gpt://" + testFolder + "/yandexgpt-lite/latest"
	opsOf := func(i int) int { return srv.OperationsFor(uri, []emulator.Message{{Role: "user", Text: prompt(i)}}) }
	warmOps := make([]int, warm)
	for i := range warm {
		warmOps[i] = opsOf(i)
	}
	before := srv.Stats()
	in := writeInputOf(t, filepath.Join(dir, "in.jsonl"), n, promptOf)
	cp := filepath.Join(dir, "in.checkpoint.json")
	rng := rand.New(rand.NewPCG(7, 7))
	inDoubtLine := regexp.MustCompile(`in doubt`)

	var mu sync.Mutex
	inDoubt := 0
	kills := 0
	finished := false
	for i := 0; i < 40 && !finished; i++ {
		args := []string{"resume", "--submit-rps", "1500", "--concurrency", "32", cp}
		if i == 0 {
			args = []string{"run", "--submit-rps", "1500", "--concurrency", "32", in}
		}
		cmd := withCache(withKey(command(url, args...), testKey))
		stderr := start(t, cmd)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		kill := i < 25
		var err error
		if kill {
			select {
			case err = <-done:
			case <-time.After(time.Duration(50+rng.IntN(700)) * time.Millisecond):
				cmd.Process.Signal(syscall.SIGKILL)
				err = <-done
				kills++
			}
		} else {
			err = <-done
		}
		mu.Lock()
		inDoubt += len(inDoubtLine.FindAllString(stderr.String(), -1))
		mu.Unlock()
		var ee *exec.ExitError
		switch {
		case err == nil:
			finished = true
		case errors.As(err, &ee) && ee.ExitCode() == -1: // killed
		default:
			t.Fatalf("attempt %d: %v\n%s", i, err, stderr.String())
		}
	}
	if !finished {
		t.Fatal("the run never finished")
	}
	results := checkResultsOf(t, filepath.Join(dir, "in.results.jsonl"), n, promptOf)
	for i := distinct; i < n; i++ {
		id, leader := fmt.Sprintf("r%05d", i), fmt.Sprintf("r%05d", i-distinct)
		if r := results[id]; r.DeduplicatedFrom != leader || r.OperationID != results[leader].OperationID {
			t.Fatalf("row %s: %+v, want the answer of %s", id, r, leader)
		}
	}
	for i := range warm {
		if got := opsOf(i); got != warmOps[i] || !results[fmt.Sprintf("r%05d", i)].Cached {
			t.Fatalf("row %d, answered by the cache, was submitted again (%d operations, %d before)", i, got, warmOps[i])
		}
	}
	for i := warm; i < distinct; i++ {
		if opsOf(i) == 0 {
			t.Fatalf("row %d was never submitted", i)
		}
	}
	st := srv.Stats()
	st.Submissions -= before.Submissions
	st.DuplicateSubmissions -= before.DuplicateSubmissions
	// The checkpoint keeps a durable count of submissions that may have been billed twice.
	sres := runCmd(t, command(url, "status", "--json", cp))
	var status job.Status
	if err := json.Unmarshal([]byte(sres.stdout), &status); err != nil {
		t.Fatalf("status: %v\n%s%s", err, sres.stdout, sres.stderr)
	}
	t.Logf("kills survived: %d; emulator: %d submissions, %d duplicates; in doubt: %d in the checkpoint, %d in the logs; faults: %v",
		kills, st.Submissions, st.DuplicateSubmissions, status.PossibleDuplicates, inDoubt, st.Faults)
	if kills < 5 {
		t.Fatalf("only %d kills landed: the test tested little", kills)
	}
	if st.DuplicateSubmissions > int64(status.PossibleDuplicates) {
		t.Fatalf("%d duplicate submissions but only %d recorded in doubt", st.DuplicateSubmissions, status.PossibleDuplicates)
	}
	if status.Succeeded != n || status.InDoubt != 0 || status.Cached != warm || status.Deduplicated != n-distinct {
		t.Fatalf("final status %+v", status)
	}
}
