package emulator

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// IAM token errors returned by CheckToken.
var (
	ErrTokenExpired = errors.New("iam token expired")
	ErrTokenUnknown = errors.New("iam token unknown")
)

// iamAudience is the only audience the real IAM accepts in a service account JWT.
const iamAudience = "https://iam.api.cloud.yandex.net/iam/v1/tokens"

const (
	// maxJWTLifetime is the longest exp-iat span IAM accepts.
	maxJWTLifetime = time.Hour
	// jwtClockSkew tolerates small clock differences between client and IAM.
	jwtClockSkew = 30 * time.Second
	// maxJWTRequestBody bounds the exchange request body; a JWT is a few KB.
	maxJWTRequestBody = 64 << 10
)

// gRPC codes used in the generic Yandex Cloud error body.
const (
	iamCodeInvalidArgument  = 3
	iamCodePermissionDenied = 7
	iamCodeUnauthenticated  = 16
	iamCodeInternal         = 13
)

type iamKey struct {
	serviceAccountID string
	pub              *rsa.PublicKey
}

// IAM emulates the Yandex Cloud IAM token service and the VM metadata token
// endpoint. It is safe for concurrent use.
type IAM struct {
	now       func() time.Time
	exchanges atomic.Int64

	mu       sync.Mutex
	lifetime time.Duration
	keys     map[string]iamKey    // key id → key
	tokens   map[string]time.Time // token → expiry
}

// NewIAM returns an IAM that issues tokens living lifetime. A nil now uses time.Now.
func NewIAM(lifetime time.Duration, now func() time.Time) *IAM {
	if now == nil {
		now = time.Now
	}
	return &IAM{
		now:      now,
		lifetime: lifetime,
		keys:     make(map[string]iamKey),
		tokens:   make(map[string]time.Time),
	}
}

// SetLifetime changes the lifetime of tokens issued from now on.
func (i *IAM) SetLifetime(d time.Duration) {
	i.mu.Lock()
	i.lifetime = d
	i.mu.Unlock()
}

// Exchanges reports how many tokens were issued (JWT exchanges and metadata).
func (i *IAM) Exchanges() int64 { return i.exchanges.Load() }

// AddKey registers a service account public key under keyID.
func (i *IAM) AddKey(keyID, serviceAccountID string, pub *rsa.PublicKey) {
	i.mu.Lock()
	i.keys[keyID] = iamKey{serviceAccountID: serviceAccountID, pub: pub}
	i.mu.Unlock()
}

// CheckToken returns nil if token was issued by this IAM and has not expired.
func (i *IAM) CheckToken(token string) error {
	i.mu.Lock()
	exp, ok := i.tokens[token]
	i.mu.Unlock()
	if !ok {
		return ErrTokenUnknown
	}
	if !i.now().Before(exp) {
		return ErrTokenExpired
	}
	return nil
}

// issue creates and records a new token.
func (i *IAM) issue() (token string, expires time.Time, lifetime time.Duration, err error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", time.Time{}, 0, fmt.Errorf("generate token: %w", err)
	}
	token = "t1." + base64.RawURLEncoding.EncodeToString(b[:])
	now := i.now()
	i.mu.Lock()
	defer i.mu.Unlock()
	lifetime = i.lifetime
	expires = now.Add(lifetime)
	// Drop long-expired tokens so a long emulator run does not grow without bound;
	// recently expired ones stay so CheckToken can still say "expired".
	if len(i.tokens) > 1024 {
		for t, e := range i.tokens {
			if now.Sub(e) > time.Hour {
				delete(i.tokens, t)
			}
		}
	}
	i.tokens[token] = expires
	i.exchanges.Add(1)
	return token, expires, lifetime, nil
}

// HandleToken serves POST /iam/v1/tokens: it exchanges a PS256 service account
// JWT for an IAM token.
func (i *IAM) HandleToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeIAMError(w, http.StatusMethodNotAllowed, iamCodeInvalidArgument, "method not allowed")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxJWTRequestBody+1))
	if err != nil {
		writeIAMError(w, http.StatusBadRequest, iamCodeInvalidArgument, "cannot read request body")
		return
	}
	if len(body) > maxJWTRequestBody {
		writeIAMError(w, http.StatusBadRequest, iamCodeInvalidArgument, "request body too large")
		return
	}
	var req struct {
		JWT string `json:"jwt"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		writeIAMError(w, http.StatusBadRequest, iamCodeInvalidArgument, "invalid JSON request body")
		return
	}
	if req.JWT == "" {
		writeIAMError(w, http.StatusBadRequest, iamCodeInvalidArgument, "jwt is required")
		return
	}
	status, code, msg := i.verifyJWT(req.JWT)
	if status != http.StatusOK {
		writeIAMError(w, status, code, msg)
		return
	}
	token, expires, _, err := i.issue()
	if err != nil {
		writeIAMError(w, http.StatusInternalServerError, iamCodeInternal, "internal error")
		return
	}
	iamWriteJSON(w, http.StatusOK, map[string]string{
		"iamToken":  token,
		"expiresAt": expires.UTC().Format(time.RFC3339Nano),
	})
}

// verifyJWT checks signature and claims; it returns 200 or the HTTP status,
// gRPC code and message that name the problem.
func (i *IAM) verifyJWT(raw string) (status, code int, msg string) {
	var (
		key    iamKey
		keyErr error
	)
	keyfunc := func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		i.mu.Lock()
		k, ok := i.keys[kid]
		i.mu.Unlock()
		switch {
		case kid == "":
			keyErr = errors.New("kid header is missing")
		case !ok:
			keyErr = errors.New("unknown key id")
		default:
			key = k
			return k.pub, nil
		}
		return nil, keyErr
	}
	claims := jwt.MapClaims{}
	// Claims are validated below so each failure gets its own message.
	_, err := jwt.ParseWithClaims(raw, claims, keyfunc,
		jwt.WithValidMethods([]string{jwt.SigningMethodPS256.Alg()}),
		jwt.WithoutClaimsValidation())
	switch {
	case err == nil:
	case keyErr != nil:
		return http.StatusUnauthorized, iamCodeUnauthenticated, "invalid JWT: " + keyErr.Error()
	case errors.Is(err, jwt.ErrTokenMalformed):
		return http.StatusBadRequest, iamCodeInvalidArgument, "invalid JWT: malformed token"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid) && key.pub == nil:
		// The method check runs before the key lookup.
		return http.StatusBadRequest, iamCodeInvalidArgument, "invalid JWT: signing method must be PS256"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return http.StatusUnauthorized, iamCodeUnauthenticated, "invalid JWT: signature verification failed"
	default:
		return http.StatusBadRequest, iamCodeInvalidArgument, "invalid JWT"
	}

	if iss, _ := claims.GetIssuer(); iss != key.serviceAccountID {
		return http.StatusUnauthorized, iamCodeUnauthenticated, "invalid JWT: iss does not match the service account of the key"
	}
	aud, err := claims.GetAudience()
	if err != nil || len(aud) != 1 || aud[0] != iamAudience {
		return http.StatusBadRequest, iamCodeInvalidArgument, "invalid JWT: aud must be " + iamAudience
	}
	iat, err := claims.GetIssuedAt()
	if err != nil || iat == nil {
		return http.StatusBadRequest, iamCodeInvalidArgument, "invalid JWT: iat claim is required"
	}
	exp, err := claims.GetExpirationTime()
	if err != nil || exp == nil {
		return http.StatusBadRequest, iamCodeInvalidArgument, "invalid JWT: exp claim is required"
	}
	if !exp.After(iat.Time) {
		return http.StatusBadRequest, iamCodeInvalidArgument, "invalid JWT: exp must be after iat"
	}
	if exp.Sub(iat.Time) > maxJWTLifetime {
		return http.StatusBadRequest, iamCodeInvalidArgument, "invalid JWT: exp - iat exceeds 1 hour"
	}
	now := i.now()
	if !now.Before(exp.Time) {
		return http.StatusUnauthorized, iamCodeUnauthenticated, "invalid JWT: token has expired"
	}
	if iat.After(now.Add(jwtClockSkew)) {
		return http.StatusBadRequest, iamCodeInvalidArgument, "invalid JWT: iat is in the future"
	}
	return http.StatusOK, 0, ""
}

// HandleMetadata serves the VM metadata token endpoint
// GET /computeMetadata/v1/instance/service-accounts/default/token.
func (i *IAM) HandleMetadata(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		writeIAMError(w, http.StatusMethodNotAllowed, iamCodeInvalidArgument, "method not allowed")
		return
	}
	if r.Header.Get("Metadata-Flavor") != "Google" {
		writeIAMError(w, http.StatusForbidden, iamCodePermissionDenied, "missing Metadata-Flavor: Google header")
		return
	}
	token, _, lifetime, err := i.issue()
	if err != nil {
		writeIAMError(w, http.StatusInternalServerError, iamCodeInternal, "internal error")
		return
	}
	iamWriteJSON(w, http.StatusOK, struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
		TokenType   string `json:"token_type"`
	}{token, int64(lifetime / time.Second), "Bearer"})
}

// GenerateKey creates an RSA key of bits (2048 or 4096), registers its public
// half and returns the content of an authorized-key JSON file for it.
func (i *IAM) GenerateKey(bits int) ([]byte, error) {
	if bits != 2048 && bits != 4096 {
		return nil, fmt.Errorf("generate key: unsupported size %d (want 2048 or 4096)", bits)
	}
	priv, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	keyID, err := iamNewID()
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	saID, err := iamNewID()
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	file := struct {
		ID               string `json:"id"`
		ServiceAccountID string `json:"service_account_id"`
		CreatedAt        string `json:"created_at"`
		KeyAlgorithm     string `json:"key_algorithm"`
		PublicKey        string `json:"public_key"`
		PrivateKey       string `json:"private_key"`
	}{
		ID:               keyID,
		ServiceAccountID: saID,
		CreatedAt:        i.now().UTC().Format(time.RFC3339Nano),
		KeyAlgorithm:     fmt.Sprintf("RSA_%d", bits),
		PublicKey:        string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})),
		PrivateKey: "PLEASE DO NOT REMOVE THIS LINE! Yandex.Cloud SA Key ID <" + keyID + ">\n" +
			string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
	}
	out, err := json.MarshalIndent(file, "", "   ")
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	i.AddKey(keyID, saID, &priv.PublicKey)
	return out, nil
}

// iamNewID returns a Yandex Cloud style id: "aje" and 17 base32 characters.
func iamNewID() (string, error) {
	const alphabet = "abcdefghijklmnopqrstuv0123456789"
	var b [17]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	id := []byte("aje")
	for _, c := range b {
		id = append(id, alphabet[int(c)%len(alphabet)])
	}
	return string(id), nil
}

// writeIAMError writes the generic Yandex Cloud REST error body.
func writeIAMError(w http.ResponseWriter, status, code int, msg string) {
	iamWriteJSON(w, status, struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Details []any  `json:"details"`
	}{code, msg, []any{}})
}

func iamWriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
