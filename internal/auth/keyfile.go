package auth

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// saKey is a parsed service account authorized key.
type saKey struct {
	id               string
	serviceAccountID string
	private          *rsa.PrivateKey
}

// keyFile mirrors an authorized-key file. `yc iam key create` writes snake_case names; the REST
// API and proto JSON write camelCase ones, and the official Go SDK reads both (docs/api.md §6), so
// both are accepted. "id" is the same in both.
type keyFile struct {
	ID               string `json:"id"`
	ServiceAccountID string `json:"service_account_id"`
	CreatedAt        string `json:"created_at"`
	KeyAlgorithm     string `json:"key_algorithm"`
	PublicKey        string `json:"public_key"`
	PrivateKey       string `json:"private_key"`

	ServiceAccountIDCamel string `json:"serviceAccountId"`
	CreatedAtCamel        string `json:"createdAt"`
	KeyAlgorithmCamel     string `json:"keyAlgorithm"`
	PublicKeyCamel        string `json:"publicKey"`
	PrivateKeyCamel       string `json:"privateKey"`
}

// keyField is one field of the file under both its names.
type keyField struct {
	snake, camel string
	snakeV, camV *string
}

// merge folds the camelCase fields into the snake_case ones and returns the names to use in
// errors: those of the file's own spelling. A field given under both names is refused rather
// than guessed at.
func (kf *keyFile) merge() (names map[string]string, err error) {
	fields := []keyField{
		{"service_account_id", "serviceAccountId", &kf.ServiceAccountID, &kf.ServiceAccountIDCamel},
		{"created_at", "createdAt", &kf.CreatedAt, &kf.CreatedAtCamel},
		{"key_algorithm", "keyAlgorithm", &kf.KeyAlgorithm, &kf.KeyAlgorithmCamel},
		{"public_key", "publicKey", &kf.PublicKey, &kf.PublicKeyCamel},
		{"private_key", "privateKey", &kf.PrivateKey, &kf.PrivateKeyCamel},
	}
	snake, camel := false, false
	for _, f := range fields {
		if *f.snakeV != "" && *f.camV != "" {
			return nil, fmt.Errorf("field %q is also given as %q: keep one", f.snake, f.camel)
		}
		snake = snake || *f.snakeV != ""
		camel = camel || *f.camV != ""
	}
	names = map[string]string{}
	for _, f := range fields {
		names[f.snake] = f.snake
		if camel && !snake {
			names[f.snake] = f.camel
		}
		if *f.camV != "" {
			*f.snakeV = *f.camV
		}
	}
	return names, nil
}

// parseKeyFile parses and validates an authorized-key file. Errors name the
// field at fault and never quote key material.
func parseKeyFile(data []byte) (*saKey, error) {
	var kf keyFile
	if err := json.Unmarshal(data, &kf); err != nil {
		// json errors may quote input, which here is secret: report only the position.
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syn):
			return nil, fmt.Errorf("not valid JSON (syntax error at byte %d)", syn.Offset)
		case errors.As(err, &typ) && typ.Field != "":
			return nil, fmt.Errorf("field %q must be a %s", typ.Field, typ.Type)
		default:
			return nil, errors.New("not a JSON object")
		}
	}
	name, err := kf.merge()
	if err != nil {
		return nil, err
	}
	if err := checkID("id", kf.ID); err != nil {
		return nil, err
	}
	if err := checkID(name["service_account_id"], kf.ServiceAccountID); err != nil {
		return nil, err
	}
	wantBits := 0
	switch kf.KeyAlgorithm {
	case "RSA_2048":
		wantBits = 2048
	case "RSA_4096":
		wantBits = 4096
	case "":
		// Older files may omit the algorithm; the key size is checked below.
	default:
		return nil, fmt.Errorf("unsupported %s %q (want RSA_2048 or RSA_4096)", name["key_algorithm"], truncate(kf.KeyAlgorithm, 32))
	}
	if strings.TrimSpace(kf.PrivateKey) == "" {
		return nil, fmt.Errorf("missing field %q", name["private_key"])
	}
	priv, err := parsePrivateKey(kf.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name["private_key"], err)
	}
	bits := priv.N.BitLen()
	if bits != 2048 && bits != 4096 {
		return nil, fmt.Errorf("%s: unsupported RSA key size %d bits (want 2048 or 4096)", name["private_key"], bits)
	}
	if wantBits != 0 && bits != wantBits {
		return nil, fmt.Errorf("%s: %d-bit key does not match %s %s", name["private_key"], bits, name["key_algorithm"], kf.KeyAlgorithm)
	}
	if pub := parsePublicKey(kf.PublicKey); pub != nil && !pub.Equal(&priv.PublicKey) {
		return nil, fmt.Errorf("%s does not match %s", name["public_key"], name["private_key"])
	}
	return &saKey{id: kf.ID, serviceAccountID: kf.ServiceAccountID, private: priv}, nil
}

// checkID requires a short printable id: ids end up in JWT headers and logs.
func checkID(field, v string) error {
	if v == "" {
		return fmt.Errorf("missing field %q", field)
	}
	if len(v) > 64 {
		return fmt.Errorf("field %q is too long (%d bytes)", field, len(v))
	}
	for _, r := range v {
		if r <= ' ' || r > '~' {
			return fmt.Errorf("field %q contains invalid characters", field)
		}
	}
	return nil
}

// parsePrivateKey decodes a PKCS#8 or PKCS#1 RSA key, skipping the
// "PLEASE DO NOT REMOVE THIS LINE! ..." line yc puts before the PEM.
func parsePrivateKey(s string) (*rsa.PrivateKey, error) {
	data := []byte(s)
	i := bytes.Index(data, []byte("-----BEGIN"))
	if i < 0 {
		return nil, errors.New("no PEM block found")
	}
	block, _ := pem.Decode(data[i:])
	if block == nil {
		return nil, errors.New("bad PEM encoding")
	}
	if len(block.Headers) > 0 {
		return nil, errors.New("encrypted PEM keys are not supported")
	}
	switch block.Type {
	case "PRIVATE KEY", "RSA PRIVATE KEY":
	default:
		return nil, fmt.Errorf("unexpected PEM block type %q (want PRIVATE KEY or RSA PRIVATE KEY)", truncate(block.Type, 32))
	}
	// Try both encodings whatever the block type says: files are sometimes mislabelled.
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("not an RSA key (%T)", k)
		}
		return rk, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	return nil, errors.New("not a valid PKCS#8 or PKCS#1 RSA private key")
}

// parsePublicKey returns the RSA public key in s, or nil if there is none.
func parsePublicKey(s string) *rsa.PublicKey {
	block, _ := pem.Decode([]byte(strings.TrimSpace(s)))
	if block == nil {
		return nil
	}
	if k, err := x509.ParsePKIXPublicKey(block.Bytes); err == nil {
		rk, _ := k.(*rsa.PublicKey)
		return rk
	}
	if k, err := x509.ParsePKCS1PublicKey(block.Bytes); err == nil {
		return k
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
