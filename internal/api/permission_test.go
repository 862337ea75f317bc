package api

import (
	"testing"

	"github.com/batchgpt/batchgpt/internal/emulator"
	"github.com/batchgpt/batchgpt/internal/retry"
)

// TestPermissionDenied: the emulator's 403 for a denied model is an Auth error that
// PermissionDenied recognizes, with the API's message; a 401 or a 400 is not one.
func TestPermissionDenied(t *testing.T) {
	denied := "gpt://" + emuFolder + "/yandexgpt/rc"
	_, base := startEmulator(t, emulator.Config{APIKeys: []string{testKey}, DeniedModels: []string{denied}})
	tests := []struct {
		name   string
		creds  Credentials
		body   string
		denied bool
		class  retry.Class
	}{
		{"denied model", keyCreds(testKey), `{"modelUri":"` + denied + `","messages":[{"role":"user","text":"hi"}]}`, true, retry.Auth},
		{"unknown key", keyCreds("AQVNunknown"), string(prompt("hi")), false, retry.Auth},
		{"bad role", keyCreds(testKey), `{"modelUri":"` + denied + `x","messages":[{"role":"robot","text":"hi"}]}`, false, retry.Permanent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := emuClient(t, base, func(cfg *Config) { cfg.Credentials = tc.creds })
			_, err := c.Submit(t.Context(), []byte(tc.body), nil)
			if err == nil || retry.Classify(err) != tc.class || PermissionDenied(err) != tc.denied {
				t.Fatalf("Submit = %v (class %v, permission denied %v), want class %v, permission denied %v",
					err, retry.Classify(err), PermissionDenied(err), tc.class, tc.denied)
			}
			if tc.denied {
				if ae := err.(*Error); ae.HTTPStatus != 403 || ae.Code != 7 || ae.Message != "Access to model "+denied+" denied" {
					t.Errorf("error %+v, want the API's 403 with its message", ae)
				}
			}
		})
	}
}
