package emulator

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strings"
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

// ContentFilterTrigger in the text of any message of a request makes its operation finish with
// ALTERNATIVE_STATUS_CONTENT_FILTER, as the real filter does for sensitive content in a prompt
// (docs/api.md §3). The real filter's criteria are unknown; the fault content_filter=RATE
// stands for it finding something in the generated answer.
const ContentFilterTrigger = "EMULATOR:CONTENT_FILTER"

// FilteredAnswer is the text of a content-filtered alternative. The real API sends a canned
// refusal that points to a web search and zero usage (docs/api.md §3, a field report); the exact
// wording, and whether async answers count tokens, are UNCONFIRMED.
const FilteredAnswer = "(emulated) I cannot talk about this topic. [See what web search finds](https://ya.ru)"

// Truncate cuts an answer to its first maxTokens tokens (words, as CountTokens counts them), as
// the real API cuts an answer that reaches completionOptions.maxTokens and marks it
// ALTERNATIVE_STATUS_TRUNCATED_FINAL (docs/api.md §3). maxTokens <= 0 means no limit. It reports
// whether the answer was cut.
func Truncate(answer string, maxTokens int64) (string, bool) {
	if maxTokens <= 0 {
		return answer, false
	}
	var n int64
	inWord := false
	for i, r := range answer {
		if unicode.IsSpace(r) {
			inWord = false
			continue
		}
		if !inWord {
			if n == maxTokens {
				return strings.TrimRightFunc(answer[:i], unicode.IsSpace), true
			}
			n++
			inWord = true
		}
	}
	return answer, false
}

// Alternative statuses the emulator answers with (docs/api.md §3).
const (
	StatusFinal          = "ALTERNATIVE_STATUS_FINAL"
	StatusTruncatedFinal = "ALTERNATIVE_STATUS_TRUNCATED_FINAL"
	StatusContentFilter  = "ALTERNATIVE_STATUS_CONTENT_FILTER"
)

// Completion is what the emulator answers to a request whose operation succeeds (and that the
// content_filter fault does not hit): the text, its alternative status and completion tokens.
// Tests use it to compute the expected result of every row.
func Completion(modelURI string, msgs []Message, maxTokens int64) (text, status string, tokens int64) {
	for _, m := range msgs {
		if strings.Contains(m.Text, ContentFilterTrigger) {
			return FilteredAnswer, StatusContentFilter, 0
		}
	}
	text, cut := Truncate(Answer(modelURI, msgs), maxTokens)
	if cut {
		return text, StatusTruncatedFinal, maxTokens
	}
	return text, StatusFinal, CountTokens(text)
}
