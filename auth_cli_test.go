package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/batchgpt/batchgpt/internal/emulator"
)

// TestStaticUserToken runs with YC_IAM_TOKEN set to a person's token, which the API serves only
// with x-folder-id; and with a token the API refuses, whose message must reach the user as the
// API wrote it, with the resume command, and without the token.
func TestStaticUserToken(t *testing.T) {
	const user = "t1.personalToken-do-not-leak-0123"
	_, url := startEmulator(t, emulator.Config{UserTokens: []string{user}})
	for _, tc := range []struct {
		name, token string
		code        int
		stderr      []string
	}{
		{"a person's token", user, 0, []string{"succeeded: 10"}},
		{"a refused token", "t1.unknownToken-do-not-leak-4567", 4,
			[]string{"Token is invalid or has expired.", "cannot be refreshed", "batchgpt resume "}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			in := writeInput(t, dir, 10)
			cmd := command(url, "run", "--no-progress", in)
			cmd.Env = append(cmd.Env, "YC_IAM_TOKEN="+tc.token)
			res := runCmd(t, cmd)
			if res.code != tc.code {
				t.Fatalf("exit %d, want %d\n%s", res.code, tc.code, res.stderr)
			}
			for _, s := range tc.stderr {
				if !strings.Contains(res.stderr, s) {
					t.Errorf("stderr lacks %q:\n%s", s, res.stderr)
				}
			}
			if strings.Contains(res.stderr+res.stdout, strings.TrimPrefix(tc.token, "t1.")) {
				t.Errorf("the token leaked into the output:\n%s", res.stderr)
			}
			if tc.code == 0 {
				checkResults(t, filepath.Join(dir, "in.results.jsonl"), 10)
			}
		})
	}
}
