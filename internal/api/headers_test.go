package api

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/batchgpt/batchgpt/internal/emulator"
	"github.com/batchgpt/batchgpt/internal/retry"
)

// recordingEmulator serves the emulator on loopback and keeps the headers of every request it
// receives, so that tests see what the server sees.
type recordingEmulator struct {
	*emulator.Server
	URL string

	mu      sync.Mutex
	headers []http.Header
}

func startRecordingEmulator(t *testing.T, cfg emulator.Config) *recordingEmulator {
	t.Helper()
	re := &recordingEmulator{Server: emulator.New(cfg)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		re.mu.Lock()
		re.headers = append(re.headers, r.Header.Clone())
		re.mu.Unlock()
		re.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	re.URL = srv.URL
	return re
}

func (re *recordingEmulator) received() []http.Header {
	re.mu.Lock()
	defer re.mu.Unlock()
	return append([]http.Header(nil), re.headers...)
}

// TestClientRequestIDIsUUIDv4 checks the x-client-request-id the emulator receives: a UUID of
// version 4 and variant 10 (RFC 9562), different on every request.
func TestClientRequestIDIsUUIDv4(t *testing.T) {
	emu := startRecordingEmulator(t, emulator.Config{APIKeys: []string{testKey}})
	c := emuClient(t, emu.URL, nil)
	for i := range 16 {
		sub, err := c.Submit(t.Context(), prompt("uuid "+strconv.Itoa(i)), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Operation(t.Context(), sub.OpID); err != nil {
			t.Fatal(err)
		}
	}
	got := emu.received()
	if len(got) != 32 {
		t.Fatalf("the emulator received %d requests, want 32", len(got))
	}
	seen := map[string]bool{}
	for _, h := range got {
		id := h.Get("X-Client-Request-Id")
		if !uuidRE.MatchString(id) {
			t.Fatalf("x-client-request-id %q is not a lowercase UUID", id)
		}
		if id[14] != '4' {
			t.Errorf("x-client-request-id %q: version %c, want 4", id, id[14])
		}
		if v := id[19]; v != '8' && v != '9' && v != 'a' && v != 'b' {
			t.Errorf("x-client-request-id %q: variant nibble %c, want 8, 9, a or b", id, v)
		}
		if seen[id] {
			t.Errorf("x-client-request-id %q sent twice", id)
		}
		seen[id] = true
	}
}

// staticCreds behaves as auth.StaticToken: one bearer token, refused for good after a 401.
type staticCreds struct {
	token       string
	folderScope bool // NeedsFolderID: a person's token

	mu      sync.Mutex
	refused bool
}

func (s *staticCreds) Authorization(context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refused {
		return "", errors.New("static iam token refused: it cannot be refreshed")
	}
	return "Bearer " + s.token, nil
}

func (s *staticCreds) Invalidate(string) {
	s.mu.Lock()
	s.refused = true
	s.mu.Unlock()
}

// saCreds is a bearer token that does not name its folder (a service account's).
type saCreds struct{ staticCreds }

func (s *staticCreds) NeedsFolderID() bool { return s.folderScope }

const userToken = "t1.userAccountSECRET0123456789"

// TestFolderHeaderForUserAccounts: credentials of a person's account send x-folder-id, the folder
// of the request's model, on completionAsync only; other credentials never send it.
func TestFolderHeaderForUserAccounts(t *testing.T) {
	const otherFolder = "b1gotherfolder"
	bodyIn := func(folder string) []byte {
		return []byte(`{"modelUri":"gpt://` + folder + `/yandexgpt/rc","messages":[{"role":"user","text":"hi"}]}`)
	}
	tests := []struct {
		name       string
		creds      Credentials
		body       []byte
		wantFolder string // x-folder-id of the submission; "" for none
		wantErr    string // "" for success
	}{
		{"user token", &staticCreds{token: userToken, folderScope: true}, prompt("user"), emuFolder, ""},
		{"user token, model of another folder", &staticCreds{token: userToken, folderScope: true}, bodyIn(otherFolder), otherFolder, ""},
		{"api key", keyCreds(testKey), prompt("key"), "", ""},
		{"user token not named a person's", &staticCreds{token: userToken}, prompt("unscoped"), "",
			"You have to specify folder ID for user account"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			emu := startRecordingEmulator(t, emulator.Config{APIKeys: []string{testKey}, UserTokens: []string{userToken}})
			c := testClient(t, emu.URL, func(cfg *Config) { cfg.Credentials = tc.creds })
			sub, err := c.Submit(t.Context(), tc.body, nil)
			got := emu.received()
			if len(got) == 0 {
				t.Fatal("the emulator received nothing")
			}
			if f := got[0].Get("X-Folder-Id"); f != tc.wantFolder {
				t.Errorf("x-folder-id %q, want %q", f, tc.wantFolder)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || retry.Classify(err) != retry.Auth {
					t.Fatalf("Submit = %v, want an auth error saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Operation(t.Context(), sub.OpID); err != nil {
				t.Fatal(err)
			}
			if h := emu.received()[1]; h.Get("X-Folder-Id") != "" {
				t.Errorf("a poll sent x-folder-id %q", h.Get("X-Folder-Id"))
			}
		})
	}
}

// TestAuthErrorKeepsServerMessage: when credentials cannot replace a header the API refused with
// 401, the error is the API's, with its message and request id, not a guess that the token expired.
func TestAuthErrorKeepsServerMessage(t *testing.T) {
	emu := startRecordingEmulator(t, emulator.Config{UserTokens: []string{userToken}})
	c := testClient(t, emu.URL, func(cfg *Config) { cfg.Credentials = &saCreds{staticCreds{token: userToken}} })
	_, err := c.Submit(t.Context(), prompt("refused"), nil)
	var ae *Error
	if !errors.As(err, &ae) || retry.Classify(err) != retry.Auth {
		t.Fatalf("Submit = %v, want an auth *Error", err)
	}
	if ae.HTTPStatus != 401 || ae.Code != 16 || ae.Message != "You have to specify folder ID for user account" || ae.RequestID == "" {
		t.Errorf("error %+v, want the API's 401 with its message and request id", ae)
	}
	if msg := err.Error(); !strings.Contains(msg, "You have to specify folder ID for user account") ||
		!strings.Contains(msg, "cannot be refreshed") || strings.Contains(msg, userToken) {
		t.Errorf("message %q: want the API's reason and the credentials' note, never the token", msg)
	}
	// Another worker, which never got the 401 itself, learns the same reason.
	_, err2 := c.Submit(t.Context(), prompt("another worker"), nil)
	if !errors.As(err2, &ae) || ae.Message != "You have to specify folder ID for user account" {
		t.Errorf("second Submit = %v, want the API's 401 as the reason", err2)
	}
	if n := len(emu.received()); n != 1 {
		t.Errorf("%d requests, want 1: a refused static token is not sent again", n)
	}
}
