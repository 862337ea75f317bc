package batchapi

import (
	"bytes"
	"strings"
	"testing"
)

func TestEncodeLine(t *testing.T) {
	var b bytes.Buffer
	msgs := []Message{{Role: "system", Text: "be <brief> & \"kind\""}, {Role: "user", Text: "привет\nline two"}}
	if err := EncodeLine(&b, msgs); err != nil {
		t.Fatal(err)
	}
	want := `{"request":[{"role":"system","text":"be <brief> & \"kind\""},{"role":"user","text":"привет\nline two"}]}` + "\n"
	if b.String() != want {
		t.Errorf("EncodeLine:\n%s\nwant\n%s", b.String(), want)
	}
	for _, tc := range []struct {
		name string
		msgs []Message
		want string
	}{
		{"no messages", nil, "at least one"},
		{"bad role", []Message{{Role: "robot", Text: "x"}}, "role"},
		{"empty text", []Message{{Role: "user"}}, "empty text"},
		{"invalid UTF-8", []Message{{Role: "user", Text: "a\xffb"}}, "UTF-8"},
	} {
		b.Reset()
		err := EncodeLine(&b, tc.msgs)
		if err == nil || !strings.Contains(err.Error(), tc.want) || b.Len() != 0 {
			t.Errorf("%s: %v, wrote %q", tc.name, err, b.String())
		}
	}
}

func TestRequestKey(t *testing.T) {
	m := func(pairs ...string) []Message {
		var out []Message
		for i := 0; i < len(pairs); i += 2 {
			out = append(out, Message{Role: pairs[i], Text: pairs[i+1]})
		}
		return out
	}
	base := RequestKey(m("user", "ab"))
	if RequestKey(m("user", "ab")) != base {
		t.Error("the same request, two keys")
	}
	for _, other := range [][]Message{
		m("user", "abc"), m("system", "ab"), m("user", "a", "user", "b"), m("user", "ab", "user", ""),
		m("use", "rab"), m("user", "ba"),
	} {
		if RequestKey(other) == base {
			t.Errorf("%v has the key of user/ab", other)
		}
	}
	if RequestKey(m("user", "a", "user", "bc")) == RequestKey(m("user", "ab", "user", "c")) {
		t.Error("texts split differently share a key")
	}
}
