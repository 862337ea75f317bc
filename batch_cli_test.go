package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/internal/auth"
	"github.com/batchgpt/batchgpt/internal/batchapi"
	"github.com/batchgpt/batchgpt/internal/emulator"
	"github.com/batchgpt/batchgpt/internal/emulator/batchmode"
	"github.com/batchgpt/batchgpt/internal/job"
)

// TestBatchKill runs the binary with --backend batch and SIGKILLs it right after each B record
// of its checkpoint appears (the first, the second, ...), then resumes it: every row has exactly
// one result line with the emulator's answer, and the run has one dataset, one upload and one
// task whatever the step it was killed at.
func TestBatchKill(t *testing.T) {
	const rows = 200
	for kill := 1; kill <= 9; kill++ {
		t.Run(fmt.Sprintf("after-step-%d", kill), func(t *testing.T) {
			srv := batchmode.New(batchmode.Config{BatchSize: 50, RowsPerSecond: 2000, StepDelay: 30 * time.Millisecond,
				Authorize: emulator.New(emulator.Config{APIKeys: []string{testKey}}).Authorize})
			target, _, err := srv.Start("127.0.0.1:0", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { srv.Close() })
			dir := t.TempDir()
			in := filepath.Join(dir, "in.jsonl")
			var b strings.Builder
			for i := range rows {
				fmt.Fprintf(&b, `{"id":"r%d","prompt":"question %d"}`+"\n", i, i%150) // rows 150+ repeat earlier ones
			}
			if err := os.WriteFile(in, []byte(b.String()), 0o600); err != nil {
				t.Fatal(err)
			}
			ckpt := filepath.Join(dir, "in.checkpoint.json")
			env := func(args ...string) []string {
				return append([]string{"--batch-endpoint", target, "--batch-poll", "20ms", "--no-cache"}, args...)
			}
			cmd := command("http://127.0.0.1:9", append([]string{"run", "--backend", "batch"}, env(in)...)...)
			cmd.Env = append(cmd.Env, "YC_API_KEY="+testKey)
			stderr := start(t, cmd)
			killed := waitSteps(t, ckpt, kill, cmd.Process.Pid)
			_ = cmd.Wait()
			if !killed {
				t.Logf("the run ended before its step %d: %s", kill, stderr)
			}
			res := command("http://127.0.0.1:9", append([]string{"resume"}, env(ckpt)...)...)
			res.Env = append(res.Env, "YC_API_KEY="+testKey)
			r := runCmd(t, res)
			if r.code != 0 {
				t.Fatalf("resume: exit %d\n%s", r.code, r.stderr)
			}
			// Neither the credentials nor a presigned URL reach the checkpoint, the results or
			// the logs.
			journal, _ := os.ReadFile(ckpt)
			results, _ := os.ReadFile(filepath.Join(dir, "in.results.jsonl"))
			for what, text := range map[string]string{"checkpoint": string(journal), "results": string(results),
				"run's log": stderr.String(), "resume's log": r.stderr + r.stdout} {
				if strings.Contains(text, testKey) || strings.Contains(text, "http://127.0.0.1") {
					t.Fatalf("the %s holds a secret or a presigned URL:\n%s", what, text)
				}
			}
			data, err := os.ReadFile(filepath.Join(dir, "in.results.jsonl"))
			if err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			for _, line := range bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n")) {
				var r job.Result
				if err := json.Unmarshal(line, &r); err != nil {
					t.Fatal(err)
				}
				if seen[r.ID] {
					t.Fatalf("row %s has two result lines", r.ID)
				}
				seen[r.ID] = true
				var i int
				fmt.Sscanf(r.ID, "r%d", &i)
				want, _, _ := emulator.Completion("gpt://"+testFolder+"/yandexgpt-lite/latest",
					[]emulator.Message{{Role: "user", Text: fmt.Sprintf("question %d", i%150)}}, 0)
				if r.Status != job.StatusSucceeded || r.Text != want {
					t.Fatalf("row %s: %+v", r.ID, r)
				}
			}
			if len(seen) != rows {
				t.Fatalf("%d rows have results, want %d", len(seen), rows)
			}
			c, err := batchapi.Dial(context.Background(), batchapi.Config{Endpoint: target, Insecure: true, Credentials: auth.APIKey(testKey), FolderID: testFolder})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ds, err := c.FindDatasets(context.Background(), map[string]string{})
			if err != nil {
				t.Fatal(err)
			}
			sources, tasks := 0, 0
			for _, d := range ds {
				if _, ok := d.Labels["batchgpt_run"]; !ok {
					continue
				}
				sources++
				if d.Rows != 150 {
					t.Fatalf("dataset %s has %d rows, want the 150 distinct requests", d.ID, d.Rows)
				}
				ts, err := c.FindTasks(context.Background(), d.ID)
				if err != nil {
					t.Fatal(err)
				}
				tasks += len(ts)
			}
			if sources != 1 || tasks != 1 {
				t.Fatalf("%d datasets, %d tasks; want one of each", sources, tasks)
			}
		})
	}
}

// waitSteps SIGKILLs pid as soon as the checkpoint holds n B records; false if the process
// ended first.
func waitSteps(t *testing.T, ckpt string, n, pid int) bool {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		data, _ := os.ReadFile(ckpt)
		if bytes.Count(data, []byte("\nB ")) >= n {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			return true
		}
		if syscall.Kill(pid, 0) != nil {
			return false
		}
		time.Sleep(200 * time.Microsecond)
	}
	t.Fatal("the run never reached its step")
	return false
}

// TestBatchCLI: run --backend batch with the in-process emulator, then status, a dry run, and an
// input a batch task cannot carry.
func TestBatchCLI(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.jsonl")
	if err := os.WriteFile(in, []byte(`{"id":"a","prompt":"one"}`+"\n"+`{"id":"b","prompt":"two"}`+"\n"+`{"id":"c","prompt":"one"}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := runCmd(t, command("http://127.0.0.1:9", "run", "--backend", "batch", "--emulator", "--batch-poll", "10ms", "--no-cache", in)); r.code != 0 {
		t.Fatalf("run: exit %d\n%s", r.code, r.stderr)
	}
	r := runCmd(t, command("http://127.0.0.1:9", "status", "--json", filepath.Join(dir, "in.checkpoint.json")))
	var st struct {
		Backend   string `json:"backend"`
		Succeeded int    `json:"succeeded"`
		Batch     struct {
			Task, Dataset, Step, Status string
		} `json:"batch"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || r.code != 0 {
		t.Fatalf("status: exit %d, %v\n%s%s", r.code, err, r.stdout, r.stderr)
	}
	if st.Backend != "batch" || st.Succeeded != 3 || st.Batch.Task == "" || st.Batch.Step != "results_fetched" || st.Batch.Status != "COMPLETED" {
		t.Fatalf("status: %+v", st)
	}
	r = runCmd(t, command("http://127.0.0.1:9", "run", "--backend", "batch", "--emulator", "--dry-run", "--no-cache", in))
	if r.code != 0 || !strings.Contains(r.stdout, "upload:     2 rows") || !strings.Contains(r.stdout, "cost:       unknown") {
		t.Fatalf("dry run: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	bad := filepath.Join(dir, "bad.jsonl")
	if err := os.WriteFile(bad, []byte(`{"id":"a","prompt":"one"}`+"\n"+`{"id":"b","prompt":"two","completionOptions":{"temperature":0.9}}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = runCmd(t, command("http://127.0.0.1:9", "run", "--backend", "batch", "--emulator", "--no-cache", bad))
	if r.code != 2 || !strings.Contains(r.stderr, "bad.jsonl:2") || !strings.Contains(r.stderr, "one set of completion options") {
		t.Fatalf("a row with its own temperature: exit %d\n%s", r.code, r.stderr)
	}
}
