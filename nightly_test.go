package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/internal/emulator"
	"github.com/batchgpt/batchgpt/internal/job"
)

// night is one night's export: row id -> prompt, and the ids in file order.
type night struct {
	ids     []string
	prompts map[string]string
}

func (n night) write(t *testing.T, path string) {
	t.Helper()
	var b strings.Builder
	for _, id := range n.ids {
		line, _ := json.Marshal(map[string]string{"id": id, "prompt": n.prompts[id]})
		b.Write(line)
		b.WriteByte('\n')
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// edit returns the next night's export: rows whose index change picks get a new prompt, rows
// drop picks are gone, and add new rows follow.
func (n night) edit(tag string, change, drop func(int) bool, add int) night {
	out := night{prompts: map[string]string{}}
	for i, id := range n.ids {
		if drop(i) {
			continue
		}
		p := n.prompts[id]
		if change(i) {
			p += " (" + tag + ")"
		}
		out.ids, out.prompts[id] = append(out.ids, id), p
	}
	for i := range add {
		id := fmt.Sprintf("%s-new-%03d", tag, i)
		out.ids, out.prompts[id] = append(out.ids, id), fmt.Sprintf("New on %s: question %d?", tag, i)
	}
	return out
}

// answers reads a results file into id -> result.
func answers(t *testing.T, path string) map[string]job.Result {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]job.Result{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if line == "" {
			continue
		}
		var r job.Result
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("%s: %q: %v", path, line, err)
		}
		if _, dup := out[r.ID]; dup {
			t.Fatalf("%s: row %s written twice", path, r.ID)
		}
		out[r.ID] = r
	}
	return out
}

// TestThreeNights plays the nightly pattern on one file name: night 1 the full file; night 2 a
// re-export with rows changed and new, stopped (kill -9, or SIGTERM as systemd does) while
// operations are pending; night 3 another re-export, run with the same command; night 4 the
// same file again.
func TestThreeNights(t *testing.T) {
	if testing.Short() {
		t.Skip("long")
	}
	for _, stop := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		t.Run(stop.String(), func(t *testing.T) { threeNights(t, stop) })
	}
}

func threeNights(t *testing.T, stop syscall.Signal) {
	lat, _ := emulator.ParseLatency("uniform:500ms:2500ms")
	srv, url := startEmulator(t, emulator.Config{Latency: lat, Seed: 11})
	dir := t.TempDir()
	in := filepath.Join(dir, "prompts.jsonl")
	cacheFile := filepath.Join(dir, "cache.db")
	uri := "gpt://" + testFolder + "/yandexgpt-lite/latest"
	run := func() *exec.Cmd {
		return withCacheFile(withKey(command(url, "run", "--submit-rps", "40", in), testKey), cacheFile)
	}
	checkNight := func(n night, results map[string]job.Result) {
		t.Helper()
		if len(results) != len(n.ids) {
			t.Fatalf("%d results, want %d", len(results), len(n.ids))
		}
		for _, id := range n.ids {
			want := emulator.Answer(uri, []emulator.Message{{Role: "user", Text: n.prompts[id]}})
			if r := results[id]; r.Status != job.StatusSucceeded || r.Text != want {
				t.Fatalf("row %s: %+v, want %q", id, r, want)
			}
		}
	}

	// Night 1.
	n1 := night{prompts: map[string]string{}}
	for i := range 200 {
		id := fmt.Sprintf("r%03d", i)
		n1.ids, n1.prompts[id] = append(n1.ids, id), prompt(i)
	}
	n1.write(t, in)
	if res := runCmd(t, run()); res.code != 0 {
		t.Fatalf("night 1: exit %d\n%s", res.code, res.stderr)
	}
	checkNight(n1, answers(t, filepath.Join(dir, "prompts.results.jsonl")))

	// Night 2: 20 rows changed, 50 new; stopped while operations are pending.
	n2 := n1.edit("night2", func(i int) bool { return i%10 == 0 }, func(int) bool { return false }, 50)
	n2.write(t, in)
	cmd := run()
	stderr := start(t, cmd)
	// Stopped once an operation is pending: a fixed wait found none pending now and then on a
	// loaded machine, where validating and answering from the cache took longer.
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var st job.Status
		out := runCmd(t, command(url, "status", "--json", filepath.Join(dir, "prompts.checkpoint.json")))
		if json.Unmarshal([]byte(out.stdout), &st) == nil && st.Submitted > st.Succeeded+st.Failed && st.Rows == len(n2.ids) {
			break
		}
	}
	cmd.Process.Signal(stop)
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("night 2 was not stopped (%v): it finished before the signal\n%s", err, stderr)
	}
	st2 := runCmd(t, command(url, "status", "--json", filepath.Join(dir, "prompts.checkpoint.json")))
	var status2 job.Status
	if err := json.Unmarshal([]byte(st2.stdout), &status2); err != nil {
		t.Fatalf("night 2 status: %v\n%s", err, st2.stdout)
	}
	if status2.Pending == 0 || status2.Submitted == status2.Succeeded+status2.Failed {
		t.Fatalf("night 2 was stopped with no operation pending: the test tested little: %+v", status2)
	}
	night2Ops := map[string]int{}
	for _, id := range n2.ids {
		night2Ops[id] = srv.OperationsFor(uri, []emulator.Message{{Role: "user", Text: n2.prompts[id]}})
	}

	// Night 3: 15 more rows changed, 10 of night 2's new rows gone, 30 new; the same command.
	n3 := n2.edit("night3", func(i int) bool { return i%13 == 5 }, func(i int) bool { return i >= 240 }, 30)
	n3.write(t, in)
	res := runCmd(t, run())
	if res.code != 0 || !strings.Contains(res.stderr, "collected the outstanding operations of the earlier run") ||
		!strings.Contains(res.stderr, "archived the earlier run") {
		t.Fatalf("night 3: exit %d\n%s", res.code, res.stderr)
	}
	checkNight(n3, answers(t, filepath.Join(dir, "prompts.results.jsonl")))
	if !strings.Contains(res.stderr, "answered from cache: ") {
		t.Fatalf("night 3 summary:\n%s", res.stderr)
	}

	// Night 2's operations: every one that was created is in night 2's (archived) results, and
	// none was created again.
	archived, _ := filepath.Glob(filepath.Join(dir, "prompts.*-*-*.results.jsonl"))
	if len(archived) != 2 { // night 1's and night 2's
		t.Fatalf("archived results: %v", archived)
	}
	collected := map[string]job.Result{}
	for _, a := range archived {
		for id, r := range answers(t, a) {
			collected[id+"\x00"+r.Text] = r
		}
	}
	inDoubt := 0
	for _, ck := range []string{"prompts.*-*-*.checkpoint.json", "prompts.checkpoint.json"} {
		paths, _ := filepath.Glob(filepath.Join(dir, ck))
		for _, p := range paths {
			var st job.Status
			out := runCmd(t, command(url, "status", "--json", p))
			if err := json.Unmarshal([]byte(out.stdout), &st); err != nil {
				t.Fatalf("status %s: %v\n%s", p, err, out.stdout)
			}
			inDoubt += st.InDoubt + st.PossibleDuplicates
		}
	}
	for _, id := range n2.ids {
		if night2Ops[id] == 0 {
			continue
		}
		want := emulator.Answer(uri, []emulator.Message{{Role: "user", Text: n2.prompts[id]}})
		if _, ok := collected[id+"\x00"+want]; !ok {
			t.Fatalf("night 2 row %s was submitted but its answer is in no night's results", id)
		}
	}
	stats := srv.Stats()
	if stats.DuplicateSubmissions > int64(inDoubt) {
		t.Fatalf("%d duplicate submissions over three nights, but only %d in doubt", stats.DuplicateSubmissions, inDoubt)
	}
	// Submissions: the first file, then only the changed and new rows of each night.
	if want := int64(200 + 20 + 50 + 15 + 30 + inDoubt); stats.Submissions > want {
		t.Fatalf("%d submissions over three nights, want at most %d", stats.Submissions, want)
	}

	// Night 4: the same file again: nothing to do.
	before := srv.Stats().Submissions
	res = runCmd(t, run())
	if res.code != 0 || !strings.Contains(res.stderr, "nothing to do") || srv.Stats().Submissions != before {
		t.Fatalf("night 4: exit %d, %d submissions\n%s", res.code, srv.Stats().Submissions-before, res.stderr)
	}
}
