package store

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestJSONString: appendJSONString writes what json.Marshal does, and
// parseJSONString reads it back.
func TestJSONString(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		"row 1", "a b", `say "hi"`, `back\slash`, "new\nline", "tab\t", "\x00\x01\x1f\x7f",
		"<&>", "a<b", "a>b", "a&b", "a\x7fb", "Zoë — 東京", "\u2028\u2029", "emoji 🙂", strings.Repeat("x", 1000), "'single'", "/",
	} {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		got := appendJSONString([]byte("prefix"), s)
		if string(got) != "prefix"+string(want) {
			t.Errorf("%q: got %s, want %s", s, got[6:], want)
		}
		back, ok := parseJSONString(got[6:])
		if !ok || back != s {
			t.Errorf("%q: read back %q, %v", s, back, ok)
		}
	}
}
