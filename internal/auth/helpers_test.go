package auth_test

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/internal/auth"
	"github.com/batchgpt/batchgpt/internal/emulator"
)

const metadataPath = "/computeMetadata/v1/instance/service-accounts/default/token"

func TestMain(m *testing.M) {
	auth.SetFastRetries()
	os.Exit(m.Run())
}

// iamServer is the emulator IAM on loopback with request counting and an
// optional fault: the next failN token requests answer failStatus.
type iamServer struct {
	*emulator.IAM
	URL      string
	requests atomic.Int64
	failN    atomic.Int64
	failCode atomic.Int64
	holding  atomic.Bool // if set, requests block until hold is closed
	hold     chan struct{}
	held     chan struct{} // receives one value per held request
}

func newIAMServer(t *testing.T, lifetime time.Duration, now func() time.Time) *iamServer {
	t.Helper()
	s := &iamServer{IAM: emulator.NewIAM(lifetime, now), hold: make(chan struct{}), held: make(chan struct{}, 16)}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /iam/v1/tokens", s.IAM.HandleToken)
	mux.HandleFunc("GET "+metadataPath, s.IAM.HandleMetadata)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		if s.holding.Load() {
			s.held <- struct{}{}
			<-s.hold
		}
		if s.failN.Add(-1) >= 0 {
			w.WriteHeader(int(s.failCode.Load()))
			_, _ = w.Write([]byte(`{"code":14,"message":"try again"}`))
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

func (s *iamServer) failNext(n int, status int) {
	s.failCode.Store(int64(status))
	s.failN.Store(int64(n))
}

// fakeClock is a settable clock for the emulator.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// keyFileJSON is the authorized-key file layout.
type keyFileJSON struct {
	ID               string `json:"id"`
	ServiceAccountID string `json:"service_account_id"`
	CreatedAt        string `json:"created_at"`
	KeyAlgorithm     string `json:"key_algorithm"`
	PublicKey        string `json:"public_key"`
	PrivateKey       string `json:"private_key"`
}

func decodeKeyFile(t testing.TB, data []byte) keyFileJSON {
	t.Helper()
	var kf keyFileJSON
	if err := json.Unmarshal(data, &kf); err != nil {
		t.Fatal(err)
	}
	return kf
}

func encodeKeyFile(t testing.TB, kf keyFileJSON) []byte {
	t.Helper()
	data, err := json.Marshal(kf)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// privateKey extracts the RSA key of a generated key file.
func privateKey(t testing.TB, kf keyFileJSON) *rsa.PrivateKey {
	t.Helper()
	i := strings.Index(kf.PrivateKey, "-----BEGIN")
	block, _ := pem.Decode([]byte(kf.PrivateKey[i:]))
	if block == nil {
		t.Fatal("no PEM in generated key")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k.(*rsa.PrivateKey)
}

// pemBody returns the base64 lines of a PEM block: the secret part that
// must never show up in errors.
func pemBody(s string) []string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if l != "" && !strings.HasPrefix(l, "-----") && !strings.HasPrefix(l, "PLEASE") {
			lines = append(lines, l)
		}
	}
	return lines
}

// assertNoSecret fails if err's text contains any of secrets.
func assertNoSecret(t *testing.T, err error, secrets ...string) {
	t.Helper()
	if err == nil {
		return
	}
	for _, s := range secrets {
		if len(s) >= 8 && strings.Contains(err.Error(), s) {
			t.Errorf("error %q contains a secret", err)
		}
	}
}
