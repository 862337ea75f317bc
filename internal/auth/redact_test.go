package auth_test

import (
	"strings"
	"testing"

	"github.com/batchgpt/batchgpt/internal/auth"
)

func TestRedact(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		want   string
		secret string // must not survive; "" to skip
	}{
		{"plain", "submitted 10 rows to gpt://b1g/yandexgpt", "submitted 10 rows to gpt://b1g/yandexgpt", ""},
		{"iam token", "token t1.9euelZqKk5-Wl8_.abc-DEF_ghi= expired", "token t1.[REDACTED] expired", "9euelZqKk5"},
		{"bearer header", "Authorization: Bearer t1.9euelZq", "Authorization: Bearer [REDACTED]", "9euelZq"},
		{"bearer lowercase", `{"authorization":"bearer abc.def"}`, `{"authorization":"bearer [REDACTED]"}`, "abc.def"},
		{"api key header", "Authorization: Api-Key AQVNsecret123_-x, next", "Authorization: Api-Key [REDACTED], next", "secret123"},
		{"bare api key", "key=AQVN1a2b3c4d5e6f7g8h9i0j", "key=AQVN[REDACTED]", "1a2b3c4d"},
		{"oauth token", "oauth y0_AgAAAAAAbbbbbbbbbbbbbbbbbbbbbbbb", "oauth y0_[REDACTED]", "AgAAAAAAbbbb"},
		{"jwt", "jwt=eyJhbGciOiJQUzI1NiJ9.eyJpc3MiOiJhamUifQ.c2lnbmF0dXJl end", "jwt=[REDACTED JWT] end", "c2lnbmF0dXJl"},
		{"pem block", "key:\n-----BEGIN PRIVATE KEY-----\nMIIEvQIBADAN\nBgkqhkiG9w0\n-----END PRIVATE KEY-----\nafter",
			"key:\n-----BEGIN PRIVATE KEY----- [REDACTED] -----END PRIVATE KEY-----\nafter", "MIIEvQIBADAN"},
		{"json-escaped pem", `"private_key":"PLEASE DO NOT REMOVE\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIB\n-----END RSA PRIVATE KEY-----\n"`,
			`"private_key":"PLEASE DO NOT REMOVE\n-----BEGIN RSA PRIVATE KEY----- [REDACTED] -----END RSA PRIVATE KEY-----\n"`, "MIIEpAIB"},
		{"truncated pem", "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADAN", "-----BEGIN PRIVATE KEY----- [REDACTED] -----END PRIVATE KEY-----", "MIIEvQIBADAN"},
		{"two tokens", "old t1.aaaa new t1.bbbb", "old t1.[REDACTED] new t1.[REDACTED]", "bbbb"},
		{"not a token", "status=t1 version v1.2", "status=t1 version v1.2", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := auth.Redact(tc.in)
			if got != tc.want {
				t.Errorf("Redact(%q)\n got %q\nwant %q", tc.in, got, tc.want)
			}
			if tc.secret != "" && strings.Contains(got, tc.secret) {
				t.Errorf("secret %q survived: %q", tc.secret, got)
			}
			if again := auth.Redact(got); again != got {
				t.Errorf("Redact is not idempotent: %q -> %q", got, again)
			}
		})
	}
}

func FuzzRedact(f *testing.F) {
	for _, s := range []string{"Bearer t1.abc", "Api-Key AQVNxyz", "-----BEGIN X-----\nabc", "t1.", "eyJa.b.c", "y0_" + strings.Repeat("a", 30)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := auth.Redact(s)
		if strings.Contains(s, "Bearer t1.") && strings.Contains(got, "Bearer t1.") {
			t.Fatalf("token survived: %q", got)
		}
		if again := auth.Redact(got); again != got {
			t.Fatalf("not idempotent: %q -> %q -> %q", s, got, again)
		}
	})
}
