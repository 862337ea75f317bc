package main

import (
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/batchgpt/batchgpt/internal/emulator"
)

// TestDryRunExactTokens: --exact-tokens counts the rows to submit with the emulator's tokenizer,
// each once, and submits nothing; the count is what a run is then billed.
func TestDryRunExactTokens(t *testing.T) {
	srv, url := startEmulator(t, emulator.Config{})
	dir := t.TempDir()
	const n, distinct = 30, 20
	promptOf := func(i int) string { return prompt(i%distinct) + strings.Repeat(" и ещё", i%distinct) }
	in := writeInputOf(t, filepath.Join(dir, "in.jsonl"), n, promptOf)
	var want int64
	for i := range distinct {
		want += emulator.CountTokens(promptOf(i))
	}
	res := runCmd(t, withKey(command(url, "run", "--dry-run", "--exact-tokens", in), testKey))
	m := regexp.MustCompile(`input tokens: +(\d+) for the rows to submit \(counted by the API's free tokenizer\)`).FindStringSubmatch(res.stdout)
	if res.code != 0 || m == nil || m[1] != strconv.FormatInt(want, 10) {
		t.Fatalf("exit %d, want %d tokens\n%s%s", res.code, want, res.stdout, res.stderr)
	}
	if st := srv.Stats(); st.Submissions != 0 || st.Tokenizes != distinct {
		t.Fatalf("emulator after the dry run: %+v", st)
	}
	// A run is billed exactly that many input tokens.
	if r := runCmd(t, withKey(command(url, "run", in), testKey)); r.code != 0 {
		t.Fatalf("run: exit %d\n%s", r.code, r.stderr)
	}
	if s := status(t, url, filepath.Join(dir, "in.checkpoint.json")); s.InputTokens != want {
		t.Fatalf("the run was billed %d input tokens, the dry run counted %d", s.InputTokens, want)
	}
	// Without credentials it is a usage mistake that says why.
	res = runCmd(t, command(url, "run", "--dry-run", "--exact-tokens", in))
	if res.code != 2 || !strings.Contains(res.stderr, "--exact-tokens asks the API's tokenizer, which needs credentials") {
		t.Fatalf("without credentials: exit %d\n%s", res.code, res.stderr)
	}
	// Without --dry-run it is a usage mistake too.
	if res := runCmd(t, withKey(command(url, "run", "--exact-tokens", in), testKey)); res.code != 2 {
		t.Fatalf("--exact-tokens without --dry-run: exit %d\n%s", res.code, res.stderr)
	}
}
