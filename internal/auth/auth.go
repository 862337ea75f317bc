// Package auth supplies the Authorization header for Yandex Cloud API calls.
//
// Four credential kinds are supported: an API key, a static IAM token, a
// service account authorized key (signed JWT exchanged for IAM tokens) and the
// VM metadata service. Refreshing sources cache their token, refresh it ahead
// of expiry with a single request shared by all callers, and refresh once more
// when the API rejects a token (Invalidate).
package auth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
)

// Default endpoints of the real services.
const (
	DefaultIAMEndpoint = "https://iam.api.cloud.yandex.net"
	DefaultMetadataURL = "http://169.254.169.254"
)

var (
	// ErrNoCredentials means no credential was configured.
	ErrNoCredentials = errors.New("no credentials configured")
	// ErrExpired means the API refused a static IAM token, which cannot be refreshed. Why it
	// refused (expiry, a missing folder, ...) is in the API's answer, not here.
	ErrExpired = errors.New("static iam token refused")
)

// Source supplies the Authorization header value for API calls. Safe for concurrent use.
type Source interface {
	// Authorization returns a header value such as "Api-Key xxx" or "Bearer t1...".
	Authorization(ctx context.Context) (string, error)
	// Invalidate reports that the API answered 401 for a request sent with
	// header; the source refreshes once, shared by all callers.
	Invalidate(header string)
}

type apiKey struct{ header string }

// APIKey returns a Source sending "Api-Key <key>". An API key cannot be
// refreshed, so Invalidate does nothing.
func APIKey(key string) Source {
	key = strings.TrimSpace(key)
	if key == "" {
		return apiKey{}
	}
	return apiKey{header: "Api-Key " + key}
}

func (a apiKey) Authorization(context.Context) (string, error) {
	if a.header == "" {
		return "", fmt.Errorf("%w: empty API key", ErrNoCredentials)
	}
	return a.header, nil
}

func (apiKey) Invalidate(string) {}

type staticToken struct {
	header string

	mu       sync.Mutex
	rejected bool
}

// StaticToken returns a Source sending "Bearer <token>". After Invalidate
// with its header, Authorization fails with an error wrapping ErrExpired.
func StaticToken(token string) Source {
	token = strings.TrimSpace(token)
	token = strings.TrimSpace(strings.TrimPrefix(token, "Bearer "))
	if token == "" {
		return &staticToken{}
	}
	return &staticToken{header: "Bearer " + token}
}

func (s *staticToken) Authorization(context.Context) (string, error) {
	if s.header == "" {
		return "", fmt.Errorf("%w: empty IAM token", ErrNoCredentials)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rejected {
		return "", fmt.Errorf("%w: it cannot be refreshed; if it expired (it lives at most 12 h), "+
			"create a new one, or use a service account key, which is refreshed automatically", ErrExpired)
	}
	return s.header, nil
}

// NeedsFolderID is true: a token of a person's account (`yc iam create-token`, the usual static
// token) is refused without x-folder-id (docs/api.md §6). batchgpt cannot tell it from a service
// account's token; the header names the folder of the request's own model.
func (s *staticToken) NeedsFolderID() bool { return true }

func (s *staticToken) Invalidate(header string) {
	if header == "" || header != s.header {
		return
	}
	s.mu.Lock()
	s.rejected = true
	s.mu.Unlock()
}

// Config selects credentials; FromConfig applies the precedence
// SAKeyFile > APIKey > IAMToken > metadata.
type Config struct {
	APIKey      string
	IAMToken    string
	SAKeyFile   string // path of a service account authorized-key JSON file
	IAMEndpoint string // default DefaultIAMEndpoint
	MetadataURL string // default DefaultMetadataURL
	UseMetadata bool   // use the VM metadata service without probing
	// AutoMetadata uses the metadata service when nothing else is configured
	// and it answers within a short probe.
	AutoMetadata bool
}

// maxKeyFileSize bounds how much of a key file is read; real ones are ~3 KB.
const maxKeyFileSize = 1 << 20

// FromConfig builds the Source selected by cfg. desc describes the choice
// without secrets. With nothing configured the error wraps ErrNoCredentials.
func FromConfig(ctx context.Context, cfg Config, hc *http.Client) (src Source, desc string, err error) {
	switch {
	case cfg.SAKeyFile != "":
		data, err := readKeyFile(cfg.SAKeyFile)
		if err != nil {
			return nil, "", err
		}
		sa, err := NewServiceAccount(data, cfg.IAMEndpoint, hc)
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", cfg.SAKeyFile, err)
		}
		return sa, fmt.Sprintf("service account %s key %s", sa.ServiceAccountID(), sa.KeyID()), nil
	case strings.TrimSpace(cfg.APIKey) != "":
		return APIKey(cfg.APIKey), "API key", nil
	case strings.TrimSpace(cfg.IAMToken) != "":
		return StaticToken(cfg.IAMToken), "IAM token", nil
	}
	if cfg.UseMetadata || cfg.AutoMetadata {
		m := NewMetadata(cfg.MetadataURL, hc)
		desc := "VM metadata service " + m.baseURL
		if cfg.UseMetadata {
			return m, desc, nil
		}
		if m.Probe(ctx, autoProbeTimeout) {
			return m, desc + " (detected)", nil
		}
	}
	return nil, "", fmt.Errorf("%w: set YC_API_KEY, YC_IAM_TOKEN or YC_SERVICE_ACCOUNT_KEY_FILE, "+
		"or pass --metadata on a Yandex Cloud VM with a service account", ErrNoCredentials)
}

func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("service account key file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("service account key file %s: %w", path, err)
	}
	if len(data) > maxKeyFileSize {
		return nil, fmt.Errorf("service account key file %s: larger than %d bytes", path, maxKeyFileSize)
	}
	return data, nil
}
