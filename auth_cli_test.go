package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batchgpt/batchgpt/internal/emulator"
	"github.com/batchgpt/batchgpt/internal/job"
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

// writeRows writes JSONL rows r00000...: prompt(i), and modelUri model(i) when not "".
func writeRows(t *testing.T, dir string, n int, model func(int) string) string {
	t.Helper()
	var b strings.Builder
	for i := range n {
		row := map[string]string{"id": fmt.Sprintf("r%05d", i), "prompt": prompt(i)}
		if m := model(i); m != "" {
			row["modelUri"] = m
		}
		line, _ := json.Marshal(row)
		b.Write(line)
		b.WriteByte('\n')
	}
	p := filepath.Join(dir, "in.jsonl")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func readResults(t *testing.T, path string) map[string]job.Result {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]job.Result{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var r job.Result
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("results line %q: %v", line, err)
		}
		if _, dup := out[r.ID]; dup {
			t.Fatalf("row %s appears twice", r.ID)
		}
		out[r.ID] = r
	}
	return out
}

// TestPerRowModelDenied: a 403 for a model that some rows ask for fails those rows, with kind
// permission-denied and the API's message, and the run goes on; a 403 for the run's own model
// stops the run with exit 4, and once access is granted, resume finishes it.
func TestPerRowModelDenied(t *testing.T) {
	const n = 12
	denied := "gpt://" + testFolder + "/yandexgpt/rc"
	t.Run("rows with their own model", func(t *testing.T) {
		emu, url := startEmulator(t, emulator.Config{DeniedModels: []string{denied}})
		dir := t.TempDir()
		in := writeRows(t, dir, n, func(i int) string {
			if i%4 == 3 {
				return denied
			}
			return ""
		})
		res := runCmd(t, withKey(command(url, "run", "--no-progress", in), testKey))
		if res.code != 3 || !strings.Contains(res.stderr, "permission-denied=3") {
			t.Fatalf("exit %d, want 3 with 3 rows failed as permission-denied\n%s", res.code, res.stderr)
		}
		results := readResults(t, filepath.Join(dir, "in.results.jsonl"))
		if len(results) != n {
			t.Fatalf("%d results, want %d", len(results), n)
		}
		for i := range n {
			r := results[fmt.Sprintf("r%05d", i)]
			if i%4 != 3 {
				if r.Status != job.StatusSucceeded {
					t.Errorf("row %s: %s %+v, want succeeded", r.ID, r.Status, r.Error)
				}
				continue
			}
			if r.Status != job.StatusFailed || r.Error == nil || r.Error.Kind != "permission-denied" || r.Error.Code != 7 ||
				r.Error.Message != "Access to model "+denied+" denied" || r.Error.RequestID == "" {
				t.Errorf("row %s: %s %+v, want failed, permission-denied with the API's message", r.ID, r.Status, r.Error)
			}
		}
		if st := emu.Stats(); st.PermissionDenied != 3 || st.OpsCreated != n-3 {
			t.Errorf("emulator: %d denied, %d operations; want 3 and %d", st.PermissionDenied, st.OpsCreated, n-3)
		}
	})
	t.Run("the run's own model", func(t *testing.T) {
		own := "gpt://" + testFolder + "/yandexgpt-lite/latest"
		emu, url := startEmulator(t, emulator.Config{DeniedModels: []string{own}})
		dir := t.TempDir()
		in := writeRows(t, dir, n, func(i int) string {
			if i%4 == 3 {
				return "gpt://" + testFolder + "/yandexgpt/latest" // allowed: only the default is denied
			}
			return ""
		})
		res := runCmd(t, withKey(command(url, "run", "--no-progress", in), testKey))
		if res.code != 4 || !strings.Contains(res.stderr, "Access to model "+own+" denied") || !strings.Contains(res.stderr, "batchgpt resume ") {
			t.Fatalf("exit %d, want 4 with the API's message and the resume command\n%s", res.code, res.stderr)
		}
		emu.SetDeniedModels(nil) // access granted
		res = runCmd(t, withKey(command(url, "resume", "--no-progress", filepath.Join(dir, "in.checkpoint.json")), testKey))
		if res.code != 0 {
			t.Fatalf("resume: exit %d\n%s", res.code, res.stderr)
		}
		results := readResults(t, filepath.Join(dir, "in.results.jsonl"))
		if len(results) != n {
			t.Fatalf("%d results after resume, want %d", len(results), n)
		}
		for id, r := range results {
			if r.Status != job.StatusSucceeded {
				t.Errorf("row %s: %s %+v after resume", id, r.Status, r.Error)
			}
		}
	})
}
