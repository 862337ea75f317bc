package batch

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// jsonString decodes a JSON string value; ok is false for other values.
func jsonString(raw []byte) (s string, ok bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	// Fast path: without escapes the value is the bytes between the quotes
	// (the line was already checked to be valid JSON and UTF-8).
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1 : len(raw)-1]), true
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// isJSONNumber reports whether raw is a JSON number literal.
func isJSONNumber(raw []byte) bool {
	return len(raw) > 0 && (raw[0] == '-' || '0' <= raw[0] && raw[0] <= '9')
}

// isJSONInteger reports whether raw is a JSON number without fraction or
// exponent that fits in an int64.
func isJSONInteger(raw []byte) bool {
	if !isJSONNumber(raw) {
		return false
	}
	_, err := strconv.ParseInt(string(raw), 10, 64)
	return err == nil
}

// invalidUTF8At returns the offset of the first invalid UTF-8 byte in b.
func invalidUTF8At(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return -1
}

// jsonPathAt returns the path ("messages[1].text") of the JSON value or key
// in line that contains byte offset at, or "" if it cannot tell.
func jsonPathAt(line []byte, at int) string {
	type frame struct {
		array   bool
		key     string
		idx     int
		wantKey bool
	}
	var stack []frame
	path := func() string {
		var b strings.Builder
		for _, f := range stack {
			if f.array {
				fmt.Fprintf(&b, "[%d]", f.idx)
				continue
			}
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(f.key)
		}
		return b.String()
	}
	valueDone := func() {
		if len(stack) == 0 {
			return
		}
		if top := &stack[len(stack)-1]; top.array {
			top.idx++
		} else {
			top.wantKey = true
		}
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	for {
		before := dec.InputOffset()
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		in := int64(at) >= before && int64(at) < dec.InputOffset()
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{':
				stack = append(stack, frame{wantKey: true})
			case '[':
				stack = append(stack, frame{array: true})
			default:
				if len(stack) > 0 {
					stack = stack[:len(stack)-1]
				}
				valueDone()
			}
			continue
		}
		if len(stack) > 0 {
			if top := &stack[len(stack)-1]; !top.array && top.wantKey {
				top.key, _ = tok.(string)
				top.wantKey = false
				if in {
					return path()
				}
				continue
			}
		}
		if in {
			return path()
		}
		valueDone()
	}
}

// object is a JSON object's members in order, values unparsed.
type object []member

type member struct {
	key string
	val []byte // the raw value, a slice of the parsed line
}

// The functions below split JSON that json.Valid has accepted. They are much
// faster than decoding into a map, allocate only for the member slices, and
// let checkMembers see repeated keys.

// knownKeys are returned without allocating.
var knownKeys = slices.Concat(topFields, messageFields, optionFields, reasoningFields)

// parseObject appends the members of the object b to dst; ok is false if b is
// not an object.
func parseObject(b []byte, dst object) (obj object, ok bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return dst, false
	}
	for i++; ; {
		i = skipSpace(b, i)
		if i >= len(b) {
			return dst, false
		}
		switch b[i] {
		case '}':
			return dst, true
		case ',':
			i++
			continue
		case '"':
		default:
			return dst, false
		}
		end := stringEnd(b, i)
		key := keyString(b[i:end])
		i = skipSpace(b, end)
		if i >= len(b) || b[i] != ':' {
			return dst, false
		}
		i = skipSpace(b, i+1)
		if i >= len(b) {
			return dst, false
		}
		vend := valueEnd(b, i)
		dst = append(dst, member{key, b[i:vend]})
		i = vend
	}
}

// parseArray returns the elements of the array b; ok is false if b is not an
// array.
func parseArray(b []byte) (elems [][]byte, ok bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '[' {
		return nil, false
	}
	elems = [][]byte{}
	for i++; ; {
		i = skipSpace(b, i)
		if i >= len(b) {
			return nil, false
		}
		switch b[i] {
		case ']':
			return elems, true
		case ',':
			i++
			continue
		}
		end := valueEnd(b, i)
		elems = append(elems, b[i:end])
		i = end
	}
}

func keyString(raw []byte) string {
	if len(raw) >= 2 && bytes.IndexByte(raw, '\\') < 0 {
		inner := raw[1 : len(raw)-1]
		for _, k := range knownKeys {
			if string(inner) == k {
				return k
			}
		}
	}
	s, _ := jsonString(raw)
	return s
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns the index just after the string that starts at b[i].
func stringEnd(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(b)
}

// valueEnd returns the index just after the value that starts at b[i].
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = stringEnd(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return len(b)
	}
	for i < len(b) {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\r', '\n':
			return i
		}
		i++
	}
	return len(b)
}
