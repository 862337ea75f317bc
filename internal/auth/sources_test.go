package auth_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/internal/auth"
)

func TestAPIKey(t *testing.T) {
	const key = "AQVNzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"
	src := auth.APIKey(" " + key + "\n")
	h, err := src.Authorization(context.Background())
	if err != nil || h != "Api-Key "+key {
		t.Fatalf("got %q, %v", h, err)
	}
	src.Invalidate(h) // cannot refresh: no effect
	if h2, err := src.Authorization(context.Background()); err != nil || h2 != h {
		t.Errorf("after Invalidate: %q, %v", h2, err)
	}
	if _, err := auth.APIKey("  ").Authorization(context.Background()); !errors.Is(err, auth.ErrNoCredentials) {
		t.Errorf("empty key: %v, want ErrNoCredentials", err)
	}
}

func TestStaticToken(t *testing.T) {
	const tok = "t1.9euelZqSecretSecretSecret"
	tests := []struct {
		name       string
		in         string
		invalidate string
		wantErr    error
	}{
		{"fresh", tok, "", nil},
		{"with Bearer prefix", "Bearer " + tok + "\n", "", nil},
		{"other header ignored", tok, "Bearer t1.other", nil},
		{"api key header ignored", tok, "Api-Key x", nil},
		{"rejected", tok, "Bearer " + tok, auth.ErrExpired},
		{"empty", "", "", auth.ErrNoCredentials},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := auth.StaticToken(tc.in)
			src.Invalidate(tc.invalidate)
			h, err := src.Authorization(context.Background())
			if tc.wantErr == nil {
				if err != nil || h != "Bearer "+tok {
					t.Errorf("got %q, %v", h, err)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("err = %v, want %v", err, tc.wantErr)
			}
			assertNoSecret(t, err, tok, strings.TrimPrefix(tok, "t1."))
		})
	}
}

func TestMetadata(t *testing.T) {
	srv := newIAMServer(t, time.Hour, nil)
	m := auth.NewMetadata(srv.URL+"/", nil)
	ctx := context.Background()
	h, err := m.Authorization(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.CheckToken(bearer(t, h)); err != nil {
		t.Fatal(err)
	}
	if h2, _ := m.Authorization(ctx); h2 != h || m.Exchanges() != 1 {
		t.Errorf("token not cached (exchanges %d)", m.Exchanges())
	}

	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.Invalidate(h)
			if h2, err := m.Authorization(ctx); err != nil || h2 == h {
				t.Errorf("after Invalidate: %v (same token: %v)", err, h2 == h)
			}
		}()
	}
	wg.Wait()
	if m.Exchanges() != 2 {
		t.Errorf("exchanges = %d, want 2", m.Exchanges())
	}
}

func TestMetadataErrors(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		wantErr string
	}{
		{"forbidden", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"code":7,"message":"no service account attached"}`))
		}, "http 403 (code 7): no service account attached"},
		{"not JSON", func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(`<html>`))
		}, "invalid JSON"},
		{"no token", func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(`{"expires_in":100,"token_type":"Bearer"}`))
		}, "no access_token"},
		{"bad expires_in", func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(`{"access_token":"t1.secretsecret","expires_in":0,"token_type":"Bearer"}`))
		}, "invalid expires_in"},
		{"bad token type", func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(`{"access_token":"t1.secretsecret","expires_in":100,"token_type":"MAC"}`))
		}, "token_type"},
		{"gateway error body", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":{"grpcCode":16,"httpCode":401,"message":"bad Bearer t1.secretsecret","details":[]}}`))
		}, "http 401 (code 16): bad Bearer [REDACTED]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			m := auth.NewMetadata(srv.URL, nil)
			_, err := m.Authorization(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
			assertNoSecret(t, err, "t1.secretsecret")
			if m.Probe(context.Background(), time.Second) {
				t.Error("Probe succeeded against a failing service")
			}
		})
	}
}

func TestMetadataProbe(t *testing.T) {
	srv := newIAMServer(t, time.Hour, nil)
	m := auth.NewMetadata(srv.URL, nil)
	if !m.Probe(context.Background(), 5*time.Second) {
		t.Fatal("Probe failed against the emulator")
	}
	// The probed token is reused.
	if _, err := m.Authorization(context.Background()); err != nil || m.Exchanges() != 1 || srv.Exchanges() != 1 {
		t.Errorf("err %v, exchanges %d/%d, want the probed token reused", err, m.Exchanges(), srv.Exchanges())
	}

	// A service that does not answer in time.
	srv.holding.Store(true)
	defer close(srv.hold)
	if auth.NewMetadata(srv.URL, nil).Probe(context.Background(), 50*time.Millisecond) {
		t.Error("Probe succeeded against a hanging service")
	}
	if auth.NewMetadata("http://127.0.0.1:1", nil).Probe(context.Background(), time.Second) {
		t.Error("Probe succeeded against a closed port")
	}
	if auth.NewMetadata("::bad", nil).Probe(context.Background(), time.Second) {
		t.Error("Probe succeeded with an invalid URL")
	}
	if _, err := auth.NewMetadata("::bad", nil).Authorization(context.Background()); err == nil {
		t.Error("Authorization succeeded with an invalid URL")
	}
}

func TestFromConfig(t *testing.T) {
	srv := newIAMServer(t, time.Hour, nil)
	keyData, err := srv.GenerateKey(2048)
	if err != nil {
		t.Fatal(err)
	}
	kf := decodeKeyFile(t, keyData)
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "key.json")
	if err := os.WriteFile(keyPath, keyData, 0o600); err != nil {
		t.Fatal(err)
	}
	badPath := filepath.Join("testdata", "keyfiles", "missing-id.json")
	const apiKey = "AQVNapikeyapikeyapikeyapikey"
	const iamToken = "t1.statictokenstatictoken"
	closed := "http://127.0.0.1:1"

	tests := []struct {
		name     string
		cfg      auth.Config
		wantDesc string
		wantHdr  string // prefix of the header
		wantErr  string
		noCreds  bool
	}{
		{"key file wins", auth.Config{SAKeyFile: keyPath, APIKey: apiKey, IAMToken: iamToken, IAMEndpoint: srv.URL, UseMetadata: true},
			"service account " + kf.ServiceAccountID + " key " + kf.ID, "Bearer t1.", "", false},
		{"api key over token", auth.Config{APIKey: apiKey, IAMToken: iamToken, UseMetadata: true}, "API key", "Api-Key " + apiKey, "", false},
		{"token over metadata", auth.Config{IAMToken: iamToken, UseMetadata: true}, "IAM token", "Bearer " + iamToken, "", false},
		{"explicit metadata", auth.Config{UseMetadata: true, MetadataURL: srv.URL}, "VM metadata service", "Bearer t1.", "", false},
		{"auto metadata found", auth.Config{AutoMetadata: true, MetadataURL: srv.URL}, "(detected)", "Bearer t1.", "", false},
		{"auto metadata absent", auth.Config{AutoMetadata: true, MetadataURL: closed}, "", "", "YC_SERVICE_ACCOUNT_KEY_FILE", true},
		{"nothing", auth.Config{}, "", "", "YC_API_KEY, YC_IAM_TOKEN", true},
		{"blank values", auth.Config{APIKey: " ", IAMToken: "\n"}, "", "", "--metadata", true},
		{"missing key file", auth.Config{SAKeyFile: filepath.Join(dir, "nope.json"), APIKey: apiKey}, "", "", "no such file", false},
		{"bad key file", auth.Config{SAKeyFile: badPath}, "", "", `missing-id.json: service account key: missing field "id"`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src, desc, err := auth.FromConfig(context.Background(), tc.cfg, nil)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				if errors.Is(err, auth.ErrNoCredentials) != tc.noCreds {
					t.Errorf("errors.Is(err, ErrNoCredentials) = %v, want %v", !tc.noCreds, tc.noCreds)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(desc, tc.wantDesc) {
				t.Errorf("desc = %q, want %q", desc, tc.wantDesc)
			}
			for _, secret := range []string{apiKey, iamToken, "statictoken", "PRIVATE"} {
				if strings.Contains(desc, secret) {
					t.Errorf("desc %q contains a secret", desc)
				}
			}
			h, err := src.Authorization(context.Background())
			if err != nil || !strings.HasPrefix(h, tc.wantHdr) {
				t.Errorf("Authorization = %q, %v; want prefix %q", h, err, tc.wantHdr)
			}
		})
	}
}

// TestNeedsFolderID: only a static IAM token, usually a person's, asks for x-folder-id; service
// accounts (key file, metadata) and API keys must not send it (docs/api.md §6).
func TestNeedsFolderID(t *testing.T) {
	_, k2048, _ := generatedKeys(t)
	sa, err := auth.NewServiceAccount(k2048, "http://127.0.0.1:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	type folderScoped interface{ NeedsFolderID() bool }
	for name, tc := range map[string]struct {
		src  auth.Source
		want bool
	}{
		"static IAM token": {auth.StaticToken("t1.x"), true},
		"API key":          {auth.APIKey("AQVNx"), false},
		"service account":  {sa, false},
		"metadata":         {auth.NewMetadata("http://127.0.0.1:1", nil), false},
	} {
		fs, ok := tc.src.(folderScoped)
		if got := ok && fs.NeedsFolderID(); got != tc.want {
			t.Errorf("%s: NeedsFolderID %v, want %v", name, got, tc.want)
		}
	}
}
