package emulator

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"unicode"
	"unicode/utf8"
)

// Message is the role and text of one request message.
type Message struct {
	Role string `json:"role"`
	Text string `json:"text"`
}

// answerQuoteRunes bounds how much of the prompt an answer repeats.
const answerQuoteRunes = 80

// Answer is the deterministic completion the emulator returns for a request.
// It depends only on modelURI and msgs, so tests can compute the expected
// text of every row: "emulated answer <8 hex of the content hash> to: <the
// first 80 runes of the last user message>" (the last message if no user
// message exists).
func Answer(modelURI string, msgs []Message) string {
	key := contentKey(modelURI, msgs)
	quote := ""
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].Role == "user" {
			quote = msgs[i].Text
			break
		}
		if i == len(msgs)-1 {
			quote = msgs[i].Text // fallback when no user message follows
		}
	}
	return "emulated answer " + hex.EncodeToString(key[:4]) + " to: " + firstRunes(quote, answerQuoteRunes)
}

// CountTokens is the emulator's token count: the number of whitespace
// separated words, and at least 1 for any non-empty text.
func CountTokens(text string) int64 {
	var n int64
	inWord := false
	for _, r := range text {
		if unicode.IsSpace(r) {
			inWord = false
			continue
		}
		if !inWord {
			n++
			inWord = true
		}
	}
	if n == 0 && text != "" {
		return 1
	}
	return n
}

// contentKey hashes the model URI and messages; fields are length-prefixed
// so that different splits of the same bytes never collide.
func contentKey(modelURI string, msgs []Message) [sha256.Size]byte {
	h := sha256.New()
	var buf [binary.MaxVarintLen64]byte
	put := func(s string) {
		n := binary.PutUvarint(buf[:], uint64(len(s)))
		h.Write(buf[:n])
		h.Write([]byte(s))
	}
	put(modelURI)
	for _, m := range msgs {
		put(m.Role)
		put(m.Text)
	}
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

// firstRunes returns at most n leading runes of s.
func firstRunes(s string, n int) string {
	i := 0
	for count := 0; i < len(s) && count < n; count++ {
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
	}
	return s[:i]
}
