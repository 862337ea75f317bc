package main

import (
	"strings"
	"testing"

	"github.com/batchgpt/batchgpt/internal/emulator"
)

// TestCheck: the preflight's lines and exit codes, and that it spends nothing.
func TestCheck(t *testing.T) {
	srv, url := startEmulator(t, emulator.Config{DeniedModels: []string{"gpt://" + testFolder + "/yandexgpt/latest"}})
	for _, tc := range []struct {
		name string
		key  string // "" for none
		url  string
		args []string
		code int
		want []string
	}{
		{"ok", testKey, url, nil, 0, []string{
			"credentials          ok     API key (YC_API_KEY)\n",
			"iam token            ok     not needed",
			"model                ok     gpt://" + testFolder + "/yandexgpt-lite/latest: the tokenizer at " + url + " answered (model version 18.01.2024)\n",
			"operations endpoint  ok     " + url + " answered\n"}},
		{"no credentials", "", url, nil, 4, []string{"credentials          FAILED no credentials configured", "model                skipped\n"}},
		{"refused key", "AQVNwrongkey", url, nil, 4, []string{"model                FAILED tokenize: HTTP 401 (code 16): Unknown api key", "operations endpoint  skipped\n"}},
		{"denied model", testKey, url, []string{"--model", "yandexgpt"}, 4, []string{
			"model                FAILED tokenize: HTTP 403 (code 7): Access to model gpt://" + testFolder + "/yandexgpt/latest denied"}},
		// The API refuses the model URI (a ds:// URI without a folder, which the emulator wants): 400.
		{"refused model", testKey, url, []string{"--model", "ds://abc"}, 4, []string{"model                FAILED tokenize: HTTP 400 (code 3)", "Failed to parse model URI"}},
		{"unreachable", testKey, "http://127.0.0.1:9", []string{"--request-timeout", "2s"}, 1, []string{"model                FAILED", "connection refused"}},
		{"no folder", testKey, url, []string{"--folder", ""}, 2, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := srv.Stats()
			cmd := command(tc.url, append([]string{"check"}, tc.args...)...)
			if tc.key != "" {
				cmd = withKey(cmd, tc.key)
			}
			if tc.name == "no folder" {
				cmd.Env = append(cmd.Env, "YC_FOLDER_ID=")
			}
			res := runCmd(t, cmd)
			if res.code != tc.code {
				t.Fatalf("exit %d, want %d\n%s%s", res.code, tc.code, res.stdout, res.stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(res.stdout, w) {
					t.Errorf("stdout lacks %q:\n%s", w, res.stdout)
				}
			}
			if strings.Contains(res.stdout+res.stderr, testKey) {
				t.Errorf("the key was printed")
			}
			st := srv.Stats()
			if st.Submissions != before.Submissions || st.OpsCreated != before.OpsCreated {
				t.Fatalf("check spent something: %+v", st)
			}
			if tc.code == 0 && (st.Tokenizes != before.Tokenizes+1 || st.Polls != before.Polls+1) {
				t.Fatalf("want one tokenizer call and one operation read: %+v", st)
			}
		})
	}
}
