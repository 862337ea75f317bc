package auth

import "regexp"

// redactions are applied in order: PEM blocks first (they may contain
// anything), then header values, then bare tokens and keys.
var redactions = []struct {
	re   *regexp.Regexp
	repl string
}{
	// A PEM block, or a BEGIN line whose END was cut off; also matches the
	// JSON-escaped form where newlines are "\n".
	{regexp.MustCompile(`-----BEGIN ([A-Z0-9 ]{0,40})-----(?s:.*?)(-----END [A-Z0-9 ]{0,40}-----|$)`), "-----BEGIN $1----- [REDACTED] -----END $1-----"},
	{regexp.MustCompile(`(?i)\b(Api-Key|Bearer)([ \t]+)[^\s"',;]+`), "$1$2[REDACTED]"},
	// IAM tokens: "t1." followed by base64url segments.
	{regexp.MustCompile(`\bt1\.[A-Za-z0-9_\-.=+/]+`), "t1.[REDACTED]"},
	// API keys ("AQVN...") and OAuth tokens ("y0_...").
	{regexp.MustCompile(`\bAQVN[A-Za-z0-9_\-]+`), "AQVN[REDACTED]"},
	{regexp.MustCompile(`\by[0-3]_[A-Za-z0-9_\-]{20,}`), "y0_[REDACTED]"},
	// Signed JWTs (header.payload.signature, header starting {"...).
	{regexp.MustCompile(`\beyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*`), "[REDACTED JWT]"},
}

// Redact masks credentials in s: IAM tokens ("t1..."), Authorization header
// values ("Api-Key ...", "Bearer ..."), API keys ("AQVN..."), OAuth tokens,
// signed JWTs and PEM blocks. It is meant for log lines and error messages.
func Redact(s string) string {
	for _, r := range redactions {
		s = r.re.ReplaceAllString(s, r.repl)
	}
	return s
}
