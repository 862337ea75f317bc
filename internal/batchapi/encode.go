package batchapi

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// Message is one message of a request: role system, user or assistant, and its text.
type Message struct {
	Role string `json:"role"`
	Text string `json:"text"`
}

// EncodeLine writes msgs as one input line of a TextToTextGenerationRequest dataset,
// {"request":[{"role":"…","text":"…"}]} and a newline (docs/api.md §9, "Input line"). It refuses
// what would not come back unchanged in the result rows, which are joined to the input by content
// (RequestKey): invalid UTF-8, which JSON encoding would replace, and empty requests, roles or
// texts, which validation rejects.
func EncodeLine(w io.Writer, msgs []Message) error {
	if len(msgs) == 0 {
		return errors.New("encode line: a request needs at least one message")
	}
	for i, m := range msgs {
		switch m.Role {
		case "system", "user", "assistant":
		default:
			return fmt.Errorf("encode line: message %d: role %q is not system, user or assistant", i+1, m.Role)
		}
		if m.Text == "" {
			return fmt.Errorf("encode line: message %d: empty text", i+1)
		}
		if !utf8.ValidString(m.Text) {
			return fmt.Errorf("encode line: message %d: text is not valid UTF-8", i+1)
		}
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // "<" stays "<": the same text, fewer bytes to upload
	if err := enc.Encode(struct {
		Request []Message `json:"request"`
	}{msgs}); err != nil { // Encode ends the line with "\n"
		return fmt.Errorf("encode line: %w", err)
	}
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("encode line: %w", err)
	}
	return nil
}

// RequestKey is the SHA-256 of a canonical encoding of msgs: for each message its role and its
// text, each preceded by its length as a uvarint, so that no two different requests encode
// alike. A result row repeats its request (docs/api.md §9, "Result file"), and this key joins it
// back to the input rows; see the package documentation for what the join assumes.
func RequestKey(msgs []Message) [32]byte {
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	field := func(s string) {
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(s)))])
		_, _ = io.WriteString(h, s) // a hash.Hash never fails to write
	}
	for _, m := range msgs {
		field(m.Role)
		field(m.Text)
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}
