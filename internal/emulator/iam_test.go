package emulator_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/batchgpt/batchgpt/internal/emulator"
)

const aud = "https://iam.api.cloud.yandex.net/iam/v1/tokens"

// fakeClock is a settable clock for NewIAM.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var (
	keysOnce sync.Once
	keyA     *rsa.PrivateKey // registered as kid "kidA" for service account "saA"
	keyB     *rsa.PrivateKey // never registered
	keysErr  error
)

func testKeys(t *testing.T) (*rsa.PrivateKey, *rsa.PrivateKey) {
	t.Helper()
	keysOnce.Do(func() {
		if keyA, keysErr = rsa.GenerateKey(rand.Reader, 2048); keysErr == nil {
			keyB, keysErr = rsa.GenerateKey(rand.Reader, 2048)
		}
	})
	if keysErr != nil {
		t.Fatalf("generate test keys: %v", keysErr)
	}
	return keyA, keyB
}

type jwtSpec struct {
	method jwt.SigningMethod
	key    any
	kid    string
	claims jwt.MapClaims
}

func sign(t *testing.T, s jwtSpec) string {
	t.Helper()
	tok := jwt.NewWithClaims(s.method, s.claims)
	if s.kid != "" {
		tok.Header["kid"] = s.kid
	}
	out, err := tok.SignedString(s.key)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return out
}

func exchange(t *testing.T, url string, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("post: %v", err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("decode: %v", err)
	}
	return resp.StatusCode, out
}

func jwtBody(s string) string {
	b, _ := json.Marshal(map[string]string{"jwt": s})
	return string(b)
}

func TestHandleToken(t *testing.T) {
	a, b := testKeys(t)
	clock := newFakeClock()
	iam := emulator.NewIAM(time.Hour, clock.Now)
	iam.AddKey("kidA", "saA", &a.PublicKey)
	srv := httptest.NewServer(http.HandlerFunc(iam.HandleToken))
	defer srv.Close()

	now := clock.Now()
	good := func() jwt.MapClaims {
		return jwt.MapClaims{"iss": "saA", "aud": aud, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	}
	with := func(k string, v any) jwt.MapClaims {
		c := good()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	ps := jwt.SigningMethodPS256
	tests := []struct {
		name     string
		body     string
		status   int
		code     float64
		contains string
	}{
		{"valid", jwtBody(sign(t, jwtSpec{ps, a, "kidA", good()})), 200, 0, ""},
		{"audience array", jwtBody(sign(t, jwtSpec{ps, a, "kidA", with("aud", []string{aud})})), 200, 0, ""},
		{"wrong aud", jwtBody(sign(t, jwtSpec{ps, a, "kidA", with("aud", "https://example.com")})), 400, 3, "aud"},
		{"two audiences", jwtBody(sign(t, jwtSpec{ps, a, "kidA", with("aud", []string{aud, "x"})})), 400, 3, "aud"},
		{"unknown kid", jwtBody(sign(t, jwtSpec{ps, a, "nokid", good()})), 401, 16, "unknown key id"},
		{"missing kid", jwtBody(sign(t, jwtSpec{ps, a, "", good()})), 401, 16, "kid"},
		{"other key", jwtBody(sign(t, jwtSpec{ps, b, "kidA", good()})), 401, 16, "signature"},
		{"wrong iss", jwtBody(sign(t, jwtSpec{ps, a, "kidA", with("iss", "saB")})), 401, 16, "iss"},
		{"missing iat", jwtBody(sign(t, jwtSpec{ps, a, "kidA", with("iat", nil)})), 400, 3, "iat"},
		{"missing exp", jwtBody(sign(t, jwtSpec{ps, a, "kidA", with("exp", nil)})), 400, 3, "exp"},
		{"too long", jwtBody(sign(t, jwtSpec{ps, a, "kidA", with("exp", now.Add(61*time.Minute).Unix())})), 400, 3, "1 hour"},
		{"exp before iat", jwtBody(sign(t, jwtSpec{ps, a, "kidA", with("exp", now.Add(-time.Minute).Unix())})), 400, 3, "after iat"},
		{"expired", jwtBody(sign(t, jwtSpec{ps, a, "kidA", jwt.MapClaims{
			"iss": "saA", "aud": aud, "iat": now.Add(-2 * time.Hour).Unix(), "exp": now.Add(-time.Hour).Unix()}})), 401, 16, "expired"},
		{"iat in future", jwtBody(sign(t, jwtSpec{ps, a, "kidA", jwt.MapClaims{
			"iss": "saA", "aud": aud, "iat": now.Add(10 * time.Minute).Unix(), "exp": now.Add(time.Hour).Unix()}})), 400, 3, "future"},
		{"RS256", jwtBody(sign(t, jwtSpec{jwt.SigningMethodRS256, a, "kidA", good()})), 400, 3, "PS256"},
		{"HS256", jwtBody(sign(t, jwtSpec{jwt.SigningMethodHS256, []byte("secret"), "kidA", good()})), 400, 3, "PS256"},
		{"malformed jwt", jwtBody("not.a.jwt"), 400, 3, "malformed"},
		{"empty jwt", `{"jwt":""}`, 400, 3, "jwt is required"},
		{"bad json", `{"jwt":`, 400, 3, "JSON"},
	}
	var okCount int64
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, out := exchange(t, srv.URL, tc.body)
			if status != tc.status {
				t.Fatalf("status = %d, want %d (body %v)", status, tc.status, out)
			}
			if tc.status == 200 {
				okCount++
				tok, _ := out["iamToken"].(string)
				if !strings.HasPrefix(tok, "t1.") {
					t.Fatalf("iamToken = %q, want t1. prefix", tok)
				}
				exp, err := time.Parse(time.RFC3339, out["expiresAt"].(string))
				if err != nil {
					t.Fatalf("expiresAt: %v", err)
				}
				if d := exp.Sub(now); d < 59*time.Minute || d > 61*time.Minute {
					t.Errorf("expiresAt is %v from now, want 1h", d)
				}
				if err := iam.CheckToken(tok); err != nil {
					t.Errorf("CheckToken: %v", err)
				}
				return
			}
			if out["code"] != tc.code {
				t.Errorf("code = %v, want %v", out["code"], tc.code)
			}
			msg, _ := out["message"].(string)
			if !strings.Contains(msg, tc.contains) {
				t.Errorf("message %q does not contain %q", msg, tc.contains)
			}
			if d, ok := out["details"].([]any); !ok || len(d) != 0 {
				t.Errorf("details = %v, want []", out["details"])
			}
		})
	}
	if got := iam.Exchanges(); got != okCount {
		t.Errorf("Exchanges = %d, want %d", got, okCount)
	}
}

func TestHandleTokenMethod(t *testing.T) {
	iam := emulator.NewIAM(time.Hour, nil)
	srv := httptest.NewServer(http.HandlerFunc(iam.HandleToken))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET status = %d, want 405", resp.StatusCode)
	}
}

func TestCheckToken(t *testing.T) {
	a, _ := testKeys(t)
	clock := newFakeClock()
	iam := emulator.NewIAM(time.Minute, clock.Now)
	iam.AddKey("kidA", "saA", &a.PublicKey)
	srv := httptest.NewServer(http.HandlerFunc(iam.HandleToken))
	defer srv.Close()

	issue := func() string {
		now := clock.Now()
		status, out := exchange(t, srv.URL, jwtBody(sign(t, jwtSpec{jwt.SigningMethodPS256, a, "kidA",
			jwt.MapClaims{"iss": "saA", "aud": aud, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}})))
		if status != 200 {
			t.Fatalf("exchange: %d %v", status, out)
		}
		return out["iamToken"].(string)
	}
	tok := issue()
	if err := iam.CheckToken(tok); err != nil {
		t.Fatalf("fresh token: %v", err)
	}
	if err := iam.CheckToken("t1.unknown"); !errors.Is(err, emulator.ErrTokenUnknown) {
		t.Errorf("unknown token: %v, want ErrTokenUnknown", err)
	}
	clock.Advance(time.Minute)
	if err := iam.CheckToken(tok); !errors.Is(err, emulator.ErrTokenExpired) {
		t.Errorf("after lifetime: %v, want ErrTokenExpired", err)
	}

	iam.SetLifetime(5 * time.Minute)
	tok2 := issue()
	clock.Advance(4 * time.Minute)
	if err := iam.CheckToken(tok2); err != nil {
		t.Errorf("token with new lifetime after 4m: %v", err)
	}
	clock.Advance(time.Minute)
	if err := iam.CheckToken(tok2); !errors.Is(err, emulator.ErrTokenExpired) {
		t.Errorf("token with new lifetime after 5m: %v", err)
	}
}

func TestHandleMetadata(t *testing.T) {
	iam := emulator.NewIAM(90*time.Second, nil)
	srv := httptest.NewServer(http.HandlerFunc(iam.HandleMetadata))
	defer srv.Close()

	tests := []struct {
		name   string
		method string
		flavor string
		status int
	}{
		{"ok", http.MethodGet, "Google", 200},
		{"no header", http.MethodGet, "", 403},
		{"wrong header", http.MethodGet, "Amazon", 403},
		{"post", http.MethodPost, "Google", 405},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, srv.URL, nil)
			if tc.flavor != "" {
				req.Header.Set("Metadata-Flavor", tc.flavor)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.status != 200 {
				return
			}
			var out struct {
				AccessToken string `json:"access_token"`
				ExpiresIn   int64  `json:"expires_in"`
				TokenType   string `json:"token_type"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
				t.Fatal(err)
			}
			if out.ExpiresIn != 90 || out.TokenType != "Bearer" || !strings.HasPrefix(out.AccessToken, "t1.") {
				t.Errorf("got %+v", out)
			}
			if err := iam.CheckToken(out.AccessToken); err != nil {
				t.Errorf("CheckToken: %v", err)
			}
		})
	}
	if iam.Exchanges() != 1 {
		t.Errorf("Exchanges = %d, want 1", iam.Exchanges())
	}
}

func TestGenerateKey(t *testing.T) {
	iam := emulator.NewIAM(time.Hour, nil)
	if _, err := iam.GenerateKey(1024); err == nil {
		t.Error("GenerateKey(1024) succeeded, want error")
	}
	data, err := iam.GenerateKey(2048)
	if err != nil {
		t.Fatal(err)
	}
	var kf struct {
		ID               string `json:"id"`
		ServiceAccountID string `json:"service_account_id"`
		CreatedAt        string `json:"created_at"`
		KeyAlgorithm     string `json:"key_algorithm"`
		PublicKey        string `json:"public_key"`
		PrivateKey       string `json:"private_key"`
	}
	if err := json.Unmarshal(data, &kf); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{kf.ID, kf.ServiceAccountID} {
		if len(id) != 20 || !strings.HasPrefix(id, "aje") {
			t.Errorf("id %q: want 20 chars starting with aje", id)
		}
	}
	if kf.KeyAlgorithm != "RSA_2048" {
		t.Errorf("key_algorithm = %q", kf.KeyAlgorithm)
	}
	if _, err := time.Parse(time.RFC3339, kf.CreatedAt); err != nil {
		t.Errorf("created_at: %v", err)
	}
	prefix := "PLEASE DO NOT REMOVE THIS LINE! Yandex.Cloud SA Key ID <" + kf.ID + ">\n"
	if !strings.HasPrefix(kf.PrivateKey, prefix) {
		t.Fatalf("private_key does not start with the prefix line")
	}
	block, _ := pem.Decode([]byte(strings.TrimPrefix(kf.PrivateKey, prefix)))
	if block == nil || block.Type != "PRIVATE KEY" {
		t.Fatal("private_key: no PKCS#8 PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	priv := k.(*rsa.PrivateKey)
	pblock, _ := pem.Decode([]byte(kf.PublicKey))
	if pblock == nil {
		t.Fatal("public_key: no PEM block")
	}
	pub, err := x509.ParsePKIXPublicKey(pblock.Bytes)
	if err != nil || !priv.PublicKey.Equal(pub) {
		t.Fatalf("public_key does not match private_key (%v)", err)
	}

	// The generated key is registered: a JWT signed with it is exchanged.
	srv := httptest.NewServer(http.HandlerFunc(iam.HandleToken))
	defer srv.Close()
	now := time.Now()
	status, out := exchange(t, srv.URL, jwtBody(sign(t, jwtSpec{jwt.SigningMethodPS256, priv, kf.ID, jwt.MapClaims{
		"iss": kf.ServiceAccountID, "aud": aud, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}})))
	if status != 200 {
		t.Fatalf("exchange with generated key: %d %v", status, out)
	}
}

func TestHandleTokenConcurrent(t *testing.T) {
	a, _ := testKeys(t)
	iam := emulator.NewIAM(time.Hour, nil)
	iam.AddKey("kidA", "saA", &a.PublicKey)
	srv := httptest.NewServer(http.HandlerFunc(iam.HandleToken))
	defer srv.Close()
	now := time.Now()
	body := jwtBody(sign(t, jwtSpec{jwt.SigningMethodPS256, a, "kidA",
		jwt.MapClaims{"iss": "saA", "aud": aud, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}}))

	const n = 20
	tokens := make(chan string, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Post(srv.URL, "application/json", bytes.NewReader([]byte(body)))
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			var out struct{ IAMToken string }
			if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
				t.Error(err)
				return
			}
			tokens <- out.IAMToken
		}()
	}
	wg.Wait()
	close(tokens)
	seen := map[string]bool{}
	for tok := range tokens {
		if seen[tok] {
			t.Errorf("token issued twice")
		}
		seen[tok] = true
		if err := iam.CheckToken(tok); err != nil {
			t.Errorf("CheckToken: %v", err)
		}
	}
	if len(seen) != n || iam.Exchanges() != n {
		t.Errorf("got %d tokens, %d exchanges; want %d", len(seen), iam.Exchanges(), n)
	}
}
