package auth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/internal/auth"
	"github.com/batchgpt/batchgpt/internal/emulator"
)

// generated keys are shared: RSA generation is slow under -race.
var (
	genOnce            sync.Once
	genIAM             *emulator.IAM
	gen2048, gen4096   []byte
	genSmall, genECDSA string // PEM (PKCS#8) of unsupported keys
	genErr             error
)

func generatedKeys(t testing.TB) (iam *emulator.IAM, k2048, k4096 []byte) {
	t.Helper()
	genOnce.Do(func() {
		genIAM = emulator.NewIAM(time.Hour, nil)
		if gen2048, genErr = genIAM.GenerateKey(2048); genErr != nil {
			return
		}
		if gen4096, genErr = genIAM.GenerateKey(4096); genErr != nil {
			return
		}
		var small *rsa.PrivateKey
		if small, genErr = rsa.GenerateKey(rand.Reader, 1024); genErr != nil {
			return
		}
		der, _ := x509.MarshalPKCS8PrivateKey(small)
		genSmall = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
		var ec *ecdsa.PrivateKey
		if ec, genErr = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); genErr != nil {
			return
		}
		der, _ = x509.MarshalPKCS8PrivateKey(ec)
		genECDSA = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	})
	if genErr != nil {
		t.Fatalf("generate keys: %v", genErr)
	}
	return genIAM, gen2048, gen4096
}

func TestNewServiceAccountKeyFiles(t *testing.T) {
	_, k2048, k4096 := generatedKeys(t)
	base := decodeKeyFile(t, k2048)
	priv := privateKey(t, base)
	pkcs1 := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(priv)}))
	pkcs8 := base.PrivateKey[strings.Index(base.PrivateKey, "-----BEGIN"):]
	other := decodeKeyFile(t, k4096)

	variant := func(f func(*keyFileJSON)) []byte {
		kf := base
		f(&kf)
		return encodeKeyFile(t, kf)
	}
	file := func(name string) []byte {
		data, err := os.ReadFile(filepath.Join("testdata", "keyfiles", name))
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	tests := []struct {
		name    string
		data    []byte
		wantErr string // "" means accepted
	}{
		{"generated PKCS#8 with prefix line", k2048, ""},
		{"PKCS#8 without prefix line", variant(func(k *keyFileJSON) { k.PrivateKey = pkcs8 }), ""},
		{"PKCS#1", variant(func(k *keyFileJSON) { k.PrivateKey = pkcs1 }), ""},
		{"PKCS#1 with prefix line", variant(func(k *keyFileJSON) {
			k.PrivateKey = "PLEASE DO NOT REMOVE THIS LINE! Yandex.Cloud SA Key ID <" + k.ID + ">\n" + pkcs1
		}), ""},
		{"CRLF line ends", variant(func(k *keyFileJSON) { k.PrivateKey = strings.ReplaceAll(k.PrivateKey, "\n", "\r\n") }), ""},
		{"RSA 4096", k4096, ""},
		{"no key_algorithm", variant(func(k *keyFileJSON) { k.KeyAlgorithm = "" }), ""},
		{"no public_key", variant(func(k *keyFileJSON) { k.PublicKey = "" }), ""},
		{"not JSON", file("not-json.txt"), "not valid JSON"},
		{"empty", []byte{}, "not valid JSON"},
		{"JSON array", file("array.json"), "not a JSON object"},
		{"JSON null", []byte("null"), `missing field "id"`},
		{"id is a number", file("id-number.json"), `"id" must be a string`},
		{"missing id", file("missing-id.json"), `missing field "id"`},
		{"missing service_account_id", file("missing-sa.json"), `missing field "service_account_id"`},
		{"missing private_key", file("missing-private-key.json"), `missing field "private_key"`},
		{"unsupported algorithm", file("bad-algorithm.json"), "unsupported key_algorithm"},
		{"no PEM block", file("no-pem.json"), "no PEM block"},
		{"bad base64 in PEM", file("bad-base64.json"), "bad PEM"},
		{"bad DER", file("bad-der.json"), "not a valid PKCS#8 or PKCS#1"},
		{"truncated PEM", variant(func(k *keyFileJSON) { k.PrivateKey = k.PrivateKey[:len(k.PrivateKey)/2] }), "bad PEM"},
		{"public key PEM as private", variant(func(k *keyFileJSON) { k.PrivateKey = k.PublicKey }), "unexpected PEM block type"},
		{"encrypted PEM", variant(func(k *keyFileJSON) {
			k.PrivateKey = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n"
		}), "encrypted"},
		{"algorithm does not match size", variant(func(k *keyFileJSON) { k.KeyAlgorithm = "RSA_4096" }), "does not match key_algorithm"},
		{"public key of another key", variant(func(k *keyFileJSON) { k.PublicKey = other.PublicKey }), "public_key does not match"},
		{"RSA 1024", variant(func(k *keyFileJSON) { k.KeyAlgorithm = ""; k.PrivateKey = genSmall }), "unsupported RSA key size 1024"},
		{"ECDSA key", variant(func(k *keyFileJSON) { k.KeyAlgorithm = ""; k.PrivateKey = genECDSA }), "not an RSA key"},
		{"id with spaces", variant(func(k *keyFileJSON) { k.ID = "a b" }), `"id" contains invalid characters`},
		{"camelCase", file("camel-case.json"), ""},
		{"camelCase generated", toCamel(t, k2048), ""},
		{"camelCase missing serviceAccountId", file("camel-missing-sa.json"), `missing field "serviceAccountId"`},
		{"camelCase missing privateKey", file("camel-missing-private-key.json"), `missing field "privateKey"`},
		{"camelCase public key of another key", toCamel(t, variant(func(k *keyFileJSON) { k.PublicKey = other.PublicKey })), "publicKey does not match privateKey"},
		{"camelCase unsupported algorithm", toCamel(t, variant(func(k *keyFileJSON) { k.KeyAlgorithm = "EC" })), "unsupported keyAlgorithm"},
		{"a field under both names", file("both-spellings.json"), `field "service_account_id" is also given as "serviceAccountId"`},
	}
	secrets := append(append(append(pemBody(base.PrivateKey), pemBody(pkcs1)...), pemBody(genSmall)...), pemBody(genECDSA)...)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sa, err := auth.NewServiceAccount(tc.data, "", nil)
			assertNoSecret(t, err, secrets...)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("NewServiceAccount: %v", err)
				}
				if sa.KeyID() == "" || sa.ServiceAccountID() == "" {
					t.Errorf("ids not set: %q %q", sa.KeyID(), sa.ServiceAccountID())
				}
				return
			}
			if err == nil {
				t.Fatalf("NewServiceAccount succeeded, want error containing %q", tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q does not contain %q", err, tc.wantErr)
			}
			if !strings.HasPrefix(err.Error(), "service account key: ") {
				t.Errorf("error %q lacks the service account key prefix", err)
			}
		})
	}

	// Every accepted encoding really signs JWTs IAM accepts.
	srv := newIAMServer(t, time.Hour, nil)
	srv.AddKey(base.ID, base.ServiceAccountID, &priv.PublicKey)
	srv.AddKey(other.ID, other.ServiceAccountID, &privateKey(t, other).PublicKey)
	for _, data := range [][]byte{k2048, k4096, variant(func(k *keyFileJSON) { k.PrivateKey = pkcs1 })} {
		kf := decodeKeyFile(t, data)
		sa, err := auth.NewServiceAccount(data, srv.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		h, err := sa.Authorization(context.Background())
		if err != nil {
			t.Fatalf("key %s: %v", kf.ID, err)
		}
		if err := srv.CheckToken(strings.TrimPrefix(h, "Bearer ")); err != nil {
			t.Errorf("key %s: token rejected: %v", kf.ID, err)
		}
	}
}

// toCamel rewrites a snake_case key file with the camelCase names of proto JSON.
func toCamel(t *testing.T, data []byte) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	for snake, camel := range map[string]string{"service_account_id": "serviceAccountId", "created_at": "createdAt",
		"key_algorithm": "keyAlgorithm", "public_key": "publicKey", "private_key": "privateKey"} {
		if v, ok := m[snake]; ok {
			delete(m, snake)
			m[camel] = v
		}
	}
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestCamelCaseKeyFileSigns exchanges the JWT signed with the camelCase testdata key at the
// emulated IAM, which knows its public key.
func TestCamelCaseKeyFileSigns(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "keyfiles", "camel-case.json"))
	if err != nil {
		t.Fatal(err)
	}
	var kf struct {
		ID               string `json:"id"`
		ServiceAccountID string `json:"serviceAccountId"`
		PublicKey        string `json:"publicKey"`
	}
	if err := json.Unmarshal(data, &kf); err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode([]byte(kf.PublicKey))
	if block == nil {
		t.Fatal("no public key PEM in the testdata file")
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	srv := newIAMServer(t, time.Hour, nil)
	srv.AddKey(kf.ID, kf.ServiceAccountID, pub.(*rsa.PublicKey))
	sa, err := auth.NewServiceAccount(data, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sa.KeyID() != kf.ID || sa.ServiceAccountID() != kf.ServiceAccountID {
		t.Errorf("ids %q %q, want %q %q", sa.KeyID(), sa.ServiceAccountID(), kf.ID, kf.ServiceAccountID)
	}
	h, err := sa.Authorization(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.CheckToken(strings.TrimPrefix(h, "Bearer ")); err != nil {
		t.Errorf("token rejected: %v", err)
	}
}

func TestNewServiceAccountEndpoint(t *testing.T) {
	_, k2048, _ := generatedKeys(t)
	for _, ep := range []string{"ftp://x", "://", "http://", "http://iam.example.com", "http://10.0.0.1:8080/"} {
		if _, err := auth.NewServiceAccount(k2048, ep, nil); err == nil || !strings.Contains(err.Error(), "iam endpoint") {
			t.Errorf("endpoint %q: err = %v, want invalid endpoint", ep, err)
		}
	}
	// The JWT must not cross the network in clear text; loopback (the emulator) may use http.
	if _, err := auth.NewServiceAccount(k2048, "http://iam.example.com", nil); err == nil || !strings.Contains(err.Error(), "plain http is only allowed on loopback") {
		t.Errorf("plain http off loopback: err = %v, want it refused", err)
	}
	for _, ep := range []string{"https://iam.example.com", "http://127.0.0.1:1", "http://localhost:1", "http://[::1]:1"} {
		if _, err := auth.NewServiceAccount(k2048, ep, nil); err != nil {
			t.Errorf("endpoint %q: %v", ep, err)
		}
	}
}

// FuzzNewServiceAccount checks the key-file parser never panics and never
// quotes the private key in its errors.
func FuzzNewServiceAccount(f *testing.F) {
	_, k2048, _ := generatedKeys(f)
	f.Add(k2048)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"id":"a","service_account_id":"b","private_key":"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"}`))
	f.Add([]byte(`{"id":"a","service_account_id":"b","key_algorithm":"RSA_4096","private_key":"PLEASE DO NOT REMOVE\n-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----"}`))
	f.Add([]byte(`{"id":1}`))
	f.Add([]byte(`null`))
	f.Add([]byte("\xff\xfe"))
	for _, name := range []string{"missing-id.json", "bad-der.json", "no-pem.json", "camel-case.json", "both-spellings.json"} {
		if data, err := os.ReadFile(filepath.Join("testdata", "keyfiles", name)); err == nil {
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sa, err := auth.NewServiceAccount(data, "http://127.0.0.1:1", nil)
		if err == nil {
			if sa.KeyID() == "" || sa.ServiceAccountID() == "" {
				t.Fatal("accepted a key file without ids")
			}
			return
		}
		var kf struct {
			PrivateKey      string `json:"private_key"`
			PrivateKeyCamel string `json:"privateKey"`
		}
		if json.Unmarshal(data, &kf) == nil {
			for _, line := range append(pemBody(kf.PrivateKey), pemBody(kf.PrivateKeyCamel)...) {
				if len(line) >= 16 && strings.Contains(err.Error(), line) {
					t.Fatalf("error %q quotes the private key", err)
				}
			}
		}
	})
}
