package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/batchgpt/batchgpt/internal/emulator"
)

// withCacheFile points cmd's result cache at path.
func withCacheFile(cmd *exec.Cmd, path string) *exec.Cmd {
	cmd.Env = append(cmd.Env, "BATCHGPT_CACHE="+path)
	return cmd
}

// TestCacheAcrossRuns: a second run of the same requests, in another file, submits nothing; the
// dry run, status and the cache commands agree with what happened.
func TestCacheAcrossRuns(t *testing.T) {
	srv, url := startEmulator(t, emulator.Config{})
	dir := t.TempDir()
	cacheFile := filepath.Join(dir, "cache", "cache.db")
	const n = 60
	first := writeInputOf(t, filepath.Join(dir, "first.jsonl"), n, prompt)
	res := runCmd(t, withCacheFile(withKey(command(url, "run", first), testKey), cacheFile))
	if res.code != 0 || !strings.Contains(res.stderr, `msg="result cache" path=`+cacheFile) ||
		!strings.Contains(res.stderr, "answered from cache: 0 ") || !strings.Contains(res.stderr, "submitted: 60") {
		t.Fatalf("first run: exit %d\n%s", res.code, res.stderr)
	}
	if fi, err := os.Stat(cacheFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("cache file: %v %v", fi, err)
	}

	// The next night's file: the same 60 requests and 5 new ones.
	second := writeInputOf(t, filepath.Join(dir, "second.jsonl"), n+5, prompt)
	dry := runCmd(t, withCacheFile(command(url, "run", "--dry-run", second), cacheFile))
	for _, want := range []string{"cache:            60 rows answered by " + cacheFile, "to submit:        5 rows", "duplicates:       0 rows"} {
		if dry.code != 0 || !strings.Contains(dry.stdout, want) {
			t.Fatalf("dry run: exit %d, output lacks %q:\n%s%s", dry.code, want, dry.stdout, dry.stderr)
		}
	}
	before := srv.Stats().Submissions
	res = runCmd(t, withCacheFile(withKey(command(url, "run", second), testKey), cacheFile))
	if res.code != 0 || !strings.Contains(res.stderr, "answered from cache: 60 ") || !strings.Contains(res.stderr, "submitted: 5\n") {
		t.Fatalf("second run: exit %d\n%s", res.code, res.stderr)
	}
	if got := srv.Stats().Submissions - before; got != 5 {
		t.Fatalf("second run submitted %d requests, want 5", got)
	}
	checkResultsOf(t, filepath.Join(dir, "second.results.jsonl"), n+5, prompt)
	st := runCmd(t, command(url, "status", "--json", filepath.Join(dir, "second.checkpoint.json")))
	var status struct{ Cached, Succeeded int }
	if err := json.Unmarshal([]byte(st.stdout), &status); err != nil || status.Cached != n || status.Succeeded != n+5 {
		t.Fatalf("status: %+v %v\n%s", status, err, st.stdout)
	}

	stats := runCmd(t, withCacheFile(command(url, "cache", "stats", "--json"), cacheFile))
	var cs struct{ Entries int64 }
	if err := json.Unmarshal([]byte(stats.stdout), &cs); err != nil || cs.Entries != n+5 {
		t.Fatalf("cache stats: %+v %v\n%s%s", cs, err, stats.stdout, stats.stderr)
	}
	export := runCmd(t, withCacheFile(command(url, "cache", "export"), cacheFile))
	if lines := strings.Count(export.stdout, "\n"); export.code != 0 || lines != n+5 {
		t.Fatalf("cache export: exit %d, %d lines\n%s", export.code, lines, export.stderr)
	}
	prune := runCmd(t, withCacheFile(command(url, "cache", "prune", "--older-than", "1d"), cacheFile))
	if prune.code != 0 {
		t.Fatalf("cache prune: exit %d\n%s%s", prune.code, prune.stdout, prune.stderr)
	}

	// --no-cache neither reads nor writes: every row is submitted, and no file appears.
	other := filepath.Join(dir, "never", "cache.db")
	before = srv.Stats().Submissions
	res = runCmd(t, withCacheFile(withKey(command(url, "run", "--no-cache", "--force", second), testKey), other))
	if res.code != 0 || srv.Stats().Submissions-before != n+5 {
		t.Fatalf("--no-cache: exit %d, %d submissions\n%s", res.code, srv.Stats().Submissions-before, res.stderr)
	}
	if _, err := os.Stat(other); !os.IsNotExist(err) {
		t.Fatalf("--no-cache created a cache: %v", err)
	}
}

// TestBrokenCacheNeverFailsTheRun: a cache file that is corrupt, or cannot be created, is
// reported once; every row is still submitted and answered, and the summary says so.
func TestBrokenCacheNeverFailsTheRun(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir string) string
	}{
		{"corrupt", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "cache.db")
			if err := os.WriteFile(p, []byte(strings.Repeat("not a database ", 500)), 0o600); err != nil {
				t.Fatal(err)
			}
			return p
		}},
		{"unwritable", func(t *testing.T, dir string) string {
			// A path under a regular file: no directory can be made there, not even by root.
			p := filepath.Join(dir, "file")
			if err := os.WriteFile(p, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(p, "cache.db")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, url := startEmulator(t, emulator.Config{})
			dir := t.TempDir()
			cacheFile := tc.setup(t, dir)
			in := writeInput(t, dir, 30)
			res := runCmd(t, withCacheFile(withKey(command(url, "run", in), testKey), cacheFile))
			if res.code != 0 || !strings.Contains(res.stderr, "the result cache cannot be used; going on without it") ||
				!strings.Contains(res.stderr, "cache: not used: ") {
				t.Fatalf("exit %d\n%s", res.code, res.stderr)
			}
			if strings.Count(res.stderr, "cannot be used") != 1 {
				t.Fatalf("the cache problem must be reported once:\n%s", res.stderr)
			}
			checkResults(t, filepath.Join(dir, "in.results.jsonl"), 30)
			if got := srv.Stats().Submissions; got != 30 {
				t.Fatalf("%d submissions, want 30", got)
			}
		})
	}
}

// TestTwoProcessesShareOneCache: two runs at the same time store their answers in one new cache
// file; a third run over both files' requests submits nothing.
func TestTwoProcessesShareOneCache(t *testing.T) {
	lat, _ := emulator.ParseLatency("uniform:0s:50ms")
	srv, url := startEmulator(t, emulator.Config{Latency: lat})
	dir := t.TempDir()
	cacheFile := filepath.Join(dir, "shared.db")
	const n = 400
	a := writeInputOf(t, filepath.Join(dir, "a.jsonl"), n, prompt)
	b := writeInputOf(t, filepath.Join(dir, "b.jsonl"), n, func(i int) string { return prompt(n + i) })
	var wg sync.WaitGroup
	results := make([]result, 2)
	for i, in := range []string{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = runCmd(t, withCacheFile(withKey(command(url, "run", "--submit-rps", "2000", "--concurrency", "32", in), testKey), cacheFile))
		}()
	}
	wg.Wait()
	for i, res := range results {
		if res.code != 0 || strings.Contains(res.stderr, "cache: not used") {
			t.Fatalf("run %d: exit %d\n%s", i, res.code, res.stderr)
		}
	}
	all := writeInputOf(t, filepath.Join(dir, "all.jsonl"), 2*n, prompt)
	before := srv.Stats().Submissions
	res := runCmd(t, withCacheFile(withKey(command(url, "run", all), testKey), cacheFile))
	if res.code != 0 || srv.Stats().Submissions != before {
		t.Fatalf("third run: exit %d, %d submissions\n%s", res.code, srv.Stats().Submissions-before, res.stderr)
	}
	checkResultsOf(t, filepath.Join(dir, "all.results.jsonl"), 2*n, prompt)
}
