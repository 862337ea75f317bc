package auth_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/internal/auth"
)

// newSA returns a ServiceAccount whose key is registered in srv.
func newSA(t *testing.T, srv *iamServer) (*auth.ServiceAccount, keyFileJSON) {
	t.Helper()
	data, err := srv.GenerateKey(2048)
	if err != nil {
		t.Fatal(err)
	}
	sa, err := auth.NewServiceAccount(data, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	return sa, decodeKeyFile(t, data)
}

func bearer(t *testing.T, h string) string {
	t.Helper()
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || !strings.HasPrefix(tok, "t1.") {
		t.Fatalf("header %q is not a Bearer IAM token", h)
	}
	return tok
}

// TestServiceAccountRefreshUnderLoad: tokens living 2 s, 100 callers for
// 6 s: every header handed out is valid when checked and exchanges stay few.
func TestServiceAccountRefreshUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 6 s")
	}
	srv := newIAMServer(t, 2*time.Second, nil)
	sa, _ := newSA(t, srv)

	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
	defer cancel()
	var calls, failures atomic.Int64
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Pace callers like API workers; a ticker is not a wait for an event.
			tick := time.NewTicker(time.Duration(20+i%10) * time.Millisecond)
			defer tick.Stop()
			for {
				h, err := sa.Authorization(ctx)
				if ctx.Err() != nil {
					return
				}
				calls.Add(1)
				if err != nil {
					failures.Add(1)
					t.Errorf("Authorization: %v", err)
					return
				}
				if err := srv.CheckToken(bearer(t, h)); err != nil {
					failures.Add(1)
					t.Errorf("token handed out is not valid: %v", err)
					return
				}
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
		}()
	}
	wg.Wait()
	ex := sa.Exchanges()
	t.Logf("%d calls, %d exchanges", calls.Load(), ex)
	if failures.Load() > 0 {
		return
	}
	// 6 s / (2 s × 2/3) ≈ 5 refreshes; allow slack for slow machines.
	if ex < 3 || ex > 12 {
		t.Errorf("exchanges = %d, want 3..12", ex)
	}
	if calls.Load() < 20*ex {
		t.Errorf("only %d calls for %d exchanges: tokens are not cached", calls.Load(), ex)
	}
	if got := srv.Exchanges(); got != ex {
		t.Errorf("IAM issued %d tokens, client counted %d", got, ex)
	}
}

// TestServiceAccountInvalidate: many callers reporting a 401 for the same
// token cause exactly one refresh.
func TestServiceAccountInvalidate(t *testing.T) {
	srv := newIAMServer(t, time.Hour, nil)
	sa, _ := newSA(t, srv)
	ctx := context.Background()
	h1, err := sa.Authorization(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Headers of other kinds or other tokens are ignored.
	for _, h := range []string{"", "Api-Key x", "Bearer t1.other", "Bearer "} {
		sa.Invalidate(h)
	}
	if h, _ := sa.Authorization(ctx); h != h1 || sa.Exchanges() != 1 {
		t.Fatalf("unrelated Invalidate changed the token (exchanges %d)", sa.Exchanges())
	}

	const n = 50
	start := make(chan struct{})
	headers := make(chan string, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			sa.Invalidate(h1)
			h, err := sa.Authorization(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			headers <- h
		}()
	}
	close(start)
	wg.Wait()
	close(headers)
	var h2 string
	for h := range headers {
		if h == h1 {
			t.Fatal("got the invalidated token back")
		}
		if h2 != "" && h != h2 {
			t.Fatal("callers got different tokens")
		}
		h2 = h
	}
	if got := sa.Exchanges(); got != 2 {
		t.Errorf("exchanges = %d, want 2 (one refresh)", got)
	}
	// A late 401 for the old token does not refresh again.
	sa.Invalidate(h1)
	if h, _ := sa.Authorization(ctx); h != h2 || sa.Exchanges() != 2 {
		t.Errorf("stale Invalidate refreshed (exchanges %d)", sa.Exchanges())
	}
}

// TestServiceAccountExchangeErrors: permanent IAM rejections come back
// clearly, once, without retries, and never quote a secret.
func TestServiceAccountExchangeErrors(t *testing.T) {
	clock := &fakeClock{}
	clock.Set(time.Now())
	tests := []struct {
		name    string
		setup   func(t *testing.T, srv *iamServer) *auth.ServiceAccount
		wantErr string
	}{
		{"key not registered", func(t *testing.T, srv *iamServer) *auth.ServiceAccount {
			_, k2048, _ := generatedKeys(t) // registered in another IAM only
			sa, err := auth.NewServiceAccount(k2048, srv.URL, nil)
			if err != nil {
				t.Fatal(err)
			}
			return sa
		}, "unknown key id"},
		{"signed by another key", func(t *testing.T, srv *iamServer) *auth.ServiceAccount {
			_, k2048, k4096 := generatedKeys(t)
			kf, other := decodeKeyFile(t, k2048), decodeKeyFile(t, k4096)
			srv.AddKey(kf.ID, kf.ServiceAccountID, &privateKey(t, other).PublicKey)
			sa, err := auth.NewServiceAccount(k2048, srv.URL, nil)
			if err != nil {
				t.Fatal(err)
			}
			return sa
		}, "signature verification failed"},
		{"wrong aud", func(t *testing.T, srv *iamServer) *auth.ServiceAccount {
			sa, _ := newSA(t, srv)
			auth.SetAudience(sa, "https://iam.example.com/iam/v1/tokens")
			return sa
		}, "aud must be"},
		{"expired JWT", func(t *testing.T, srv *iamServer) *auth.ServiceAccount {
			sa, _ := newSA(t, srv)
			clock.Set(time.Now().Add(2 * time.Hour)) // IAM's clock is ahead
			return sa
		}, "token has expired"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock.Set(time.Now())
			srv := newIAMServer(t, time.Hour, clock.Now)
			sa := tc.setup(t, srv)
			before := srv.requests.Load()
			_, err := sa.Authorization(context.Background())
			if err == nil {
				t.Fatal("Authorization succeeded")
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q does not contain %q", err, tc.wantErr)
			}
			var te *auth.TokenError
			if !errors.As(err, &te) || te.Temporary() {
				t.Errorf("error %v is not a permanent *TokenError", err)
			}
			if got := srv.requests.Load() - before; got != 1 {
				t.Errorf("%d requests, want 1 (no retry of a permanent error)", got)
			}
			_, k2048, k4096 := generatedKeys(t)
			assertNoSecret(t, err, append(pemBody(decodeKeyFile(t, k2048).PrivateKey), pemBody(decodeKeyFile(t, k4096).PrivateKey)...)...)
			if strings.Contains(err.Error(), "eyJ") {
				t.Errorf("error %q quotes the JWT", err)
			}
		})
	}
}

func TestServiceAccountTransientErrors(t *testing.T) {
	tests := []struct {
		name     string
		failN    int
		status   int
		wantErr  string
		requests int64
	}{
		{"two 503 then ok", 2, http.StatusServiceUnavailable, "", 3},
		{"429 then ok", 1, http.StatusTooManyRequests, "", 2},
		{"always 500", 100, http.StatusInternalServerError, "giving up after", int64(auth.FetchAttempts())},
		{"400 is permanent", 100, http.StatusBadRequest, "http 400", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newIAMServer(t, time.Hour, nil)
			sa, _ := newSA(t, srv)
			srv.failNext(tc.failN, tc.status)
			h, err := sa.Authorization(context.Background())
			if got := srv.requests.Load(); got != tc.requests {
				t.Errorf("%d requests, want %d", got, tc.requests)
			}
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if err := srv.CheckToken(bearer(t, h)); err != nil {
					t.Error(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestServiceAccountNetworkError(t *testing.T) {
	srv := newIAMServer(t, time.Hour, nil)
	data, err := srv.GenerateKey(2048)
	if err != nil {
		t.Fatal(err)
	}
	sa, err := auth.NewServiceAccount(data, "http://127.0.0.1:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = sa.Authorization(context.Background())
	if err == nil || !strings.Contains(err.Error(), "giving up after") {
		t.Errorf("err = %v, want retries exhausted", err)
	}
}

// TestServiceAccountContext: a caller whose context ends stops waiting for a
// refresh in flight; the refresh itself completes for the others.
func TestServiceAccountContext(t *testing.T) {
	srv := newIAMServer(t, time.Hour, nil)
	sa, _ := newSA(t, srv)
	srv.holding.Store(true)

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := sa.Authorization(ctx)
		errc <- err
	}()
	<-srv.held // the exchange is in flight
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}

	// A second caller joins the same flight.
	res := make(chan string, 1)
	go func() {
		h, err := sa.Authorization(context.Background())
		if err != nil {
			t.Error(err)
		}
		res <- h
	}()
	srv.holding.Store(false)
	close(srv.hold)
	h := <-res
	if err := srv.CheckToken(bearer(t, h)); err != nil {
		t.Error(err)
	}
	if sa.Exchanges() != 1 || srv.requests.Load() != 1 {
		t.Errorf("exchanges %d, requests %d, want 1 and 1", sa.Exchanges(), srv.requests.Load())
	}
}
