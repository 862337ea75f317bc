package main

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batchgpt/batchgpt/internal/emulator"
)

// jsonLines parses stderr written with --log-format json: every line must be one JSON object.
func jsonLines(t *testing.T, stderr string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(stderr))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("with --log-format json, a stderr line is not a JSON object: %q\n%s", sc.Text(), stderr)
		}
		out = append(out, m)
	}
	return out
}

// With --log-format json, batchgpt's own messages are JSON too: input problems, an auth failure
// with its resume command.
func TestJSONLogFormatErrors(t *testing.T) {
	_, url := startEmulator(t, emulator.Config{})
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.jsonl")
	if err := os.WriteFile(bad, []byte("{\"id\":\"a\",\"prompt\":\"x\"}\n{\"id\":\"a\"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	res := runCmd(t, withKey(command(url, "run", "--log-format", "json", bad), testKey))
	if res.code != 2 {
		t.Fatalf("exit %d\n%s", res.code, res.stderr)
	}
	var problem map[string]any
	for _, m := range jsonLines(t, res.stderr) {
		if m["level"] == "ERROR" {
			problem = m
		}
	}
	if ps, _ := problem["problems"].([]any); len(ps) != 2 || problem["file"] != bad {
		t.Fatalf("input problems: %v", problem)
	}

	in := writeInput(t, dir, 5)
	res = runCmd(t, withKey(command(url, "run", "--log-format", "json", in), "AQVNwrong-key-0000"))
	if res.code != 4 {
		t.Fatalf("exit %d\n%s", res.code, res.stderr)
	}
	var resume any
	for _, m := range jsonLines(t, res.stderr) {
		if r, ok := m["resume"]; ok {
			resume = r
		}
	}
	if s, _ := resume.(string); !strings.HasPrefix(s, "batchgpt resume ") {
		t.Fatalf("no resume command in the JSON lines:\n%s", res.stderr)
	}
}

// --progress-interval 0 turns the progress lines off (it used to panic).
func TestProgressIntervalZero(t *testing.T) {
	_, url := startEmulator(t, emulator.Config{})
	in := writeInput(t, t.TempDir(), 20)
	res := runCmd(t, withKey(command(url, "run", "--progress-interval", "0", in), testKey))
	if res.code != 0 || strings.Contains(res.stderr, "msg=progress") {
		t.Fatalf("exit %d\n%s", res.code, res.stderr)
	}
	res = runCmd(t, withKey(command(url, "run", "--progress-interval", "-1s", in), testKey))
	if res.code != 2 {
		t.Fatalf("negative interval: exit %d\n%s", res.code, res.stderr)
	}
}
