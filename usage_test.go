package main

import (
	"bytes"
	"strings"
	"testing"
)

// Bad usage is one line on stderr that names the problem and the help to read, and exit code 2 —
// never the whole help text, and never 3, which means "rows failed" to a cron monitor.
func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--bogus", "in.jsonl"}, "batchgpt: run: unknown flag --bogus (see batchgpt run --help)"},
		{[]string{"frobnicate"}, `batchgpt: unknown command "frobnicate" (see batchgpt --help)`},
		{[]string{"--bogus"}, "batchgpt: unknown flag --bogus (see batchgpt --help)"},
		{[]string{"run", "--concurrency", "many", "in.jsonl"}, `batchgpt: run: invalid value "many" for --concurrency (see batchgpt run --help)`},
		{[]string{"cache", "frob"}, `batchgpt: cache: unknown command "frob" (see batchgpt cache --help)`},
		{[]string{"cache", "stats", "--bogus"}, "batchgpt: cache stats: unknown flag --bogus (see batchgpt cache stats --help)"},
		{[]string{"status", "a", "b"}, "batchgpt: status: want exactly one CHECKPOINT file, got 2 arguments (see batchgpt status --help)"},
		{[]string{"run"}, "batchgpt: run: want exactly one INPUT file, got 0 arguments (see batchgpt run --help)"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(append([]string{"batchgpt"}, tc.args...), &stdout, &stderr)
			if code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			if got := strings.TrimSuffix(stderr.String(), "\n"); got != tc.want {
				t.Errorf("stderr:\n%s\nwant one line:\n%s", stderr.String(), tc.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout is not empty:\n%s", stdout.String())
			}
		})
	}
}

// Completion keeps working after a positional argument (`batchgpt run in.jsonl --con<TAB>`).
// It runs the binary: urfave/cli reads the word to complete from os.Args.
func TestCompletionAfterPositional(t *testing.T) {
	res := runCmd(t, command("http://127.0.0.1:9", "run", "in.jsonl", "--con", "--generate-bash-completion"))
	if res.code != 0 || !strings.Contains(res.stdout, "--concurrency") {
		t.Fatalf("exit %d, stdout %q, stderr %q: want --concurrency offered", res.code, res.stdout, res.stderr)
	}
}
