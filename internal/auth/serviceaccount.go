package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/batchgpt/batchgpt/internal/api"
	"github.com/batchgpt/batchgpt/internal/retry"
)

// iamAudience is the audience IAM requires in service account JWTs.
const iamAudience = "https://iam.api.cloud.yandex.net/iam/v1/tokens"

// jwtLifetime is exp-iat of the signed JWT; IAM accepts at most an hour.
const jwtLifetime = time.Hour

// ServiceAccount is a Source that exchanges JWTs signed with a service
// account authorized key for IAM tokens, cached and refreshed ahead of
// expiry. Safe for concurrent use.
type ServiceAccount struct {
	key       *saKey
	audience  string
	tokenURL  string
	hc        *http.Client
	cache     *tokenCache
	exchanges atomic.Int64
}

// NewServiceAccount parses and validates keyJSON (the file written by
// `yc iam key create`). iamEndpoint "" means DefaultIAMEndpoint; hc nil
// means a client with a 30 s timeout. No request is made until the first
// Authorization call.
func NewServiceAccount(keyJSON []byte, iamEndpoint string, hc *http.Client) (*ServiceAccount, error) {
	key, err := parseKeyFile(keyJSON)
	if err != nil {
		return nil, fmt.Errorf("service account key: %w", err)
	}
	base, err := normalizeBase(iamEndpoint, DefaultIAMEndpoint)
	if err != nil {
		return nil, fmt.Errorf("iam endpoint: %w", err)
	}
	// The signed JWT is a credential: like the API endpoints, plain http only on loopback.
	if _, err := api.CheckEndpoint("iam endpoint", base); err != nil {
		return nil, err
	}
	s := &ServiceAccount{key: key, audience: iamAudience, tokenURL: base + "/iam/v1/tokens", hc: defaultClient(hc)}
	s.cache = newTokenCache(s.fetch)
	return s, nil
}

// KeyID returns the authorized key id (not secret).
func (s *ServiceAccount) KeyID() string { return s.key.id }

// ServiceAccountID returns the service account id (not secret).
func (s *ServiceAccount) ServiceAccountID() string { return s.key.serviceAccountID }

// Exchanges reports how many IAM tokens were obtained.
func (s *ServiceAccount) Exchanges() int64 { return s.exchanges.Load() }

// Authorization returns "Bearer <IAM token>".
func (s *ServiceAccount) Authorization(ctx context.Context) (string, error) {
	tok, err := s.cache.get(ctx)
	if err != nil {
		return "", err
	}
	return "Bearer " + tok, nil
}

// Invalidate refreshes the token if header still carries the current one.
func (s *ServiceAccount) Invalidate(header string) { s.cache.invalidate(bearerToken(header)) }

func (s *ServiceAccount) fetch(ctx context.Context) (string, time.Duration, error) {
	t, err := retry.Do(ctx, fetchPolicy, tokenOf(s.exchange))
	if err != nil {
		return "", 0, fmt.Errorf("service account %s: iam token exchange: %w", s.key.serviceAccountID, err)
	}
	s.exchanges.Add(1)
	return t.token, t.lifetime, nil
}

// signJWT builds the PS256 JWT IAM exchanges for a token.
func (s *ServiceAccount) signJWT(now time.Time) (string, error) {
	t := jwt.NewWithClaims(jwt.SigningMethodPS256, jwt.MapClaims{
		"iss": s.key.serviceAccountID,
		"aud": s.audience,
		"iat": now.Unix(),
		"exp": now.Add(jwtLifetime).Unix(),
	})
	t.Header["kid"] = s.key.id
	signed, err := t.SignedString(s.key.private)
	if err != nil {
		// Signing errors do not carry key material.
		return "", fmt.Errorf("sign jwt: %w", err)
	}
	return signed, nil
}

// exchange performs one POST /iam/v1/tokens.
func (s *ServiceAccount) exchange(ctx context.Context) (string, time.Duration, error) {
	signed, err := s.signJWT(time.Now())
	if err != nil {
		return "", 0, retry.Unrecoverable(err)
	}
	body, err := json.Marshal(map[string]string{"jwt": signed})
	if err != nil {
		return "", 0, retry.Unrecoverable(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.tokenURL, bytes.NewReader(body))
	if err != nil {
		return "", 0, retry.Unrecoverable(fmt.Errorf("build request: %w", err))
	}
	req.Header.Set("Content-Type", "application/json")
	var out struct {
		IAMToken  string `json:"iamToken"`
		ExpiresAt string `json:"expiresAt"`
	}
	if err := doJSON(ctx, s.hc, req, &out); err != nil {
		return "", 0, err
	}
	if out.IAMToken == "" {
		return "", 0, retry.Unrecoverable(errors.New("response has no iamToken"))
	}
	exp, err := time.Parse(time.RFC3339Nano, out.ExpiresAt)
	if err != nil {
		return "", 0, retry.Unrecoverable(errors.New("response has no valid expiresAt"))
	}
	lifetime := time.Until(exp)
	if lifetime <= 0 {
		return "", 0, retry.Unrecoverable(fmt.Errorf("iam returned a token expiring at %s, in the past: check the system clock", exp.Format(time.RFC3339)))
	}
	return out.IAMToken, lifetime, nil
}
