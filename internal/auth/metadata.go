package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/batchgpt/batchgpt/internal/retry"
)

// metadataTokenPath is the token endpoint of the VM metadata service.
const metadataTokenPath = "/computeMetadata/v1/instance/service-accounts/default/token"

// autoProbeTimeout bounds the metadata probe of Config.AutoMetadata: on a VM
// the service answers in milliseconds, elsewhere the address is unreachable.
var autoProbeTimeout = time.Second

// Metadata is a Source taking IAM tokens of the VM's service account from the
// metadata service, cached and refreshed like ServiceAccount's.
type Metadata struct {
	baseURL   string
	tokenURL  string
	hc        *http.Client
	cache     *tokenCache
	exchanges atomic.Int64
	badURL    error
}

// NewMetadata returns a metadata Source; baseURL "" means DefaultMetadataURL
// and hc nil a client with a 30 s timeout. An invalid baseURL is reported by
// Authorization.
func NewMetadata(baseURL string, hc *http.Client) *Metadata {
	m := &Metadata{hc: defaultClient(hc)}
	base, err := normalizeBase(baseURL, DefaultMetadataURL)
	if err != nil {
		m.badURL = fmt.Errorf("metadata service: %w", err)
		base = strings.TrimSpace(baseURL)
	}
	m.baseURL, m.tokenURL = base, base+metadataTokenPath
	m.cache = newTokenCache(m.fetch)
	return m
}

// Authorization returns "Bearer <IAM token>".
func (m *Metadata) Authorization(ctx context.Context) (string, error) {
	if m.badURL != nil {
		return "", m.badURL
	}
	tok, err := m.cache.get(ctx)
	if err != nil {
		return "", err
	}
	return "Bearer " + tok, nil
}

// Invalidate refreshes the token if header still carries the current one.
func (m *Metadata) Invalidate(header string) { m.cache.invalidate(bearerToken(header)) }

// Exchanges reports how many tokens were obtained.
func (m *Metadata) Exchanges() int64 { return m.exchanges.Load() }

// Probe reports whether the metadata service hands out a token within
// timeout. A token obtained is cached for later use.
func (m *Metadata) Probe(ctx context.Context, timeout time.Duration) bool {
	if m.badURL != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tok, lifetime, err := m.request(ctx)
	if err != nil {
		return false
	}
	m.exchanges.Add(1)
	m.cache.store(tok, lifetime)
	return true
}

func (m *Metadata) fetch(ctx context.Context) (string, time.Duration, error) {
	t, err := retry.Do(ctx, fetchPolicy, tokenOf(m.request))
	if err != nil {
		return "", 0, fmt.Errorf("metadata service token: %w", err)
	}
	m.exchanges.Add(1)
	return t.token, t.lifetime, nil
}

// request performs one GET of the token endpoint.
func (m *Metadata) request(ctx context.Context) (string, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.tokenURL, nil)
	if err != nil {
		return "", 0, retry.Unrecoverable(fmt.Errorf("build request: %w", err))
	}
	req.Header.Set("Metadata-Flavor", "Google")
	var out struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
		TokenType   string `json:"token_type"`
	}
	if err := doJSON(ctx, m.hc, req, &out); err != nil {
		return "", 0, err
	}
	if out.AccessToken == "" {
		return "", 0, retry.Unrecoverable(errors.New("response has no access_token"))
	}
	if out.TokenType != "" && !strings.EqualFold(out.TokenType, "Bearer") {
		return "", 0, retry.Unrecoverable(fmt.Errorf("unexpected token_type %q", truncate(out.TokenType, 32)))
	}
	if out.ExpiresIn <= 0 || out.ExpiresIn > 7*24*3600 {
		return "", 0, retry.Unrecoverable(fmt.Errorf("invalid expires_in %d", out.ExpiresIn))
	}
	return out.AccessToken, time.Duration(out.ExpiresIn) * time.Second, nil
}
