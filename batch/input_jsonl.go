package batch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// jsonlScanner reads JSONL rows. Blank and whitespace-only lines are skipped, as jq and pandas
// do: a row's index counts data rows, its line number stays the line in the file.
type jsonlScanner struct {
	c     *config
	lr    *lineReader
	f     io.ReaderAt
	index int    // of the next data row
	obj   object // scratch space for parseJSONL
}

func newJSONLScanner(c *config, r io.Reader, f io.ReaderAt) *jsonlScanner {
	return &jsonlScanner{c: c, lr: newLineReader(r, 0, 0), f: f}
}

func (s *jsonlScanner) next() (rowPos, *rowSpec, []*InputError, error) {
	pos, data, err := s.advance()
	if err != nil {
		return rowPos{}, nil, nil, err // io.EOF at the end
	}
	spec, errs := s.c.parseJSONL(data, pos, &s.obj)
	return pos, spec, errs, nil
}

func (s *jsonlScanner) skip() (rowPos, error) {
	pos, _, err := s.advance()
	return pos, err
}

// advance returns the next row's line, valid until the next call, and its position.
func (s *jsonlScanner) advance() (rowPos, []byte, error) {
	for {
		data, start, line, err := s.lr.next()
		if err != nil {
			return rowPos{}, nil, err
		}
		if isBlank(data) {
			continue
		}
		pos := rowPos{index: s.index, line: line, offset: start}
		s.index++
		return pos, data, nil
	}
}

func (s *jsonlScanner) reread(pos rowPos) (*rowSpec, []*InputError, error) {
	lr := newLineReader(section(s.f, pos.offset), pos.offset, pos.line-1)
	data, _, _, err := lr.next()
	if err == io.EOF {
		return nil, nil, io.ErrUnexpectedEOF
	}
	if err != nil {
		return nil, nil, err
	}
	if isBlank(data) {
		return &rowSpec{}, []*InputError{s.c.errAt(pos.line, "", "empty line")}, nil
	}
	var obj object
	spec, errs := s.c.parseJSONL(data, pos, &obj)
	return spec, errs, nil
}

func isBlank(b []byte) bool {
	return len(bytes.TrimSpace(b)) == 0
}

var (
	topFields       = []string{"id", "prompt", "system", "messages", "modelUri", "completionOptions", "jsonSchema", "jsonObject"}
	messageFields   = []string{"role", "text"}
	optionFields    = []string{"temperature", "maxTokens", "reasoningOptions"}
	reasoningFields = []string{"mode"}
	schemaFields    = []string{"schema"}
)

// parseJSONL parses one non-blank JSONL line; scratch is reused between calls.
func (c *config) parseJSONL(line []byte, pos rowPos, scratch *object) (*rowSpec, []*InputError) {
	spec := &rowSpec{}
	var errs []*InputError
	bad := func(field, format string, args ...any) {
		errs = append(errs, c.errAt(pos.line, field, format, args...))
	}

	// encoding/json would silently turn invalid UTF-8 into U+FFFD.
	if !utf8.Valid(line) {
		bad(jsonPathAt(line, invalidUTF8At(line)), "invalid UTF-8")
		return spec, errs
	}
	if !json.Valid(line) {
		var v any
		var se *json.SyntaxError
		if err := json.Unmarshal(line, &v); errors.As(err, &se) {
			bad("", "invalid JSON at column %d: %s", se.Offset, se.Error())
		} else {
			bad("", "invalid JSON: %v", err)
		}
		return spec, errs
	}
	obj, ok := parseObject(line, (*scratch)[:0])
	*scratch = obj
	if !ok {
		bad("", "not a JSON object (each line must be one {...} object)")
		return spec, errs
	}
	for _, msg := range checkMembers(obj, topFields) {
		bad("", "%s", msg)
	}

	spec.id = strconv.Itoa(pos.index + 1)
	if raw, ok := field(obj, "id"); ok {
		spec.id = ""
		if s, ok := jsonString(raw); ok {
			if strings.TrimSpace(s) == "" {
				bad("id", "empty id")
			} else {
				spec.id = s
			}
		} else if isJSONInteger(raw) {
			spec.id = string(raw)
		} else {
			bad("id", "must be a string or an integer")
		}
	}

	rawPrompt, hasPrompt := field(obj, "prompt")
	rawMsgs, hasMsgs := field(obj, "messages")
	switch {
	case hasPrompt && hasMsgs:
		bad("messages", "prompt and messages are exclusive")
	case hasPrompt:
		if s, ok := jsonString(rawPrompt); !ok {
			bad("prompt", "must be a string")
		} else if strings.TrimSpace(s) == "" {
			bad("prompt", "empty prompt")
		} else {
			spec.prompt = s
		}
	case hasMsgs:
		spec.messages = c.parseMessages(rawMsgs, bad)
	default:
		bad("prompt", "missing prompt (or messages)")
	}
	if raw, ok := field(obj, "system"); ok {
		if s, ok := jsonString(raw); !ok {
			bad("system", "must be a string")
		} else if hasMsgs {
			bad("system", "system and messages are exclusive (put a system message in messages)")
		} else if strings.TrimSpace(s) != "" {
			spec.system = s
		}
	}

	if raw, ok := field(obj, "modelUri"); ok {
		if s, ok := jsonString(raw); !ok {
			bad("modelUri", "must be a string")
		} else if uri, err := ModelURI(c.folder, s); err != nil {
			bad("modelUri", "%s", err.Error())
		} else {
			spec.model = uri
		}
	} else if c.model == "" {
		bad("modelUri", "no model: set --model or a per-row modelUri")
	}
	if raw, ok := field(obj, "completionOptions"); ok {
		c.parseCompletionOptions(raw, spec, bad)
	}

	rawSchema, hasSchema := field(obj, "jsonSchema")
	rawObject, hasObject := field(obj, "jsonObject")
	if hasSchema {
		spec.structured = true
		schema, ok := parseObject(rawSchema, nil)
		if !ok {
			bad("jsonSchema", `must be an object like {"schema": {...}}`)
		} else if msgs := checkMembers(schema, schemaFields); len(msgs) > 0 {
			for _, msg := range msgs {
				bad("jsonSchema", "%s", msg)
			}
		} else if s, ok := field(schema, "schema"); !ok {
			bad("jsonSchema.schema", "missing schema")
		} else if s[0] != '{' {
			bad("jsonSchema.schema", "must be an object")
		} else {
			spec.jsonSchema = slices.Clone(s)
		}
	}
	if hasObject {
		spec.structured = true
		switch string(rawObject) {
		case "true":
			spec.jsonObject = true
			if hasSchema {
				bad("jsonObject", "jsonSchema and jsonObject are exclusive")
			}
		case "false":
		default:
			bad("jsonObject", "must be true or false")
		}
	}
	return spec, errs
}

func (c *config) parseMessages(raw []byte, bad func(field, format string, args ...any)) []message {
	items, ok := parseArray(raw)
	if !ok {
		bad("messages", `must be an array of {"role": ..., "text": ...} objects`)
		return nil
	}
	if len(items) == 0 {
		bad("messages", "empty messages")
		return nil
	}
	msgs := make([]message, 0, len(items))
	ok = true
	for i, item := range items {
		name := fmt.Sprintf("messages[%d]", i)
		m, isObj := parseObject(item, nil)
		if !isObj {
			bad(name, `must be an object like {"role": "user", "text": "..."}`)
			ok = false
			continue
		}
		for _, msg := range checkMembers(m, messageFields) {
			bad(name, "%s", msg)
			ok = false
		}
		var msg message
		if r, present := field(m, "role"); !present {
			bad(name+".role", "missing role")
			ok = false
		} else if s, isStr := jsonString(r); !isStr {
			bad(name+".role", "must be a string")
			ok = false
		} else if s != roleSystem && s != roleUser && s != roleAssistant {
			bad(name+".role", "invalid role %q (want system, user or assistant)", s)
			ok = false
		} else {
			msg.Role = s
		}
		if t, present := field(m, "text"); !present {
			bad(name+".text", "missing text")
			ok = false
		} else if s, isStr := jsonString(t); !isStr {
			bad(name+".text", "must be a string")
			ok = false
		} else if strings.TrimSpace(s) == "" {
			bad(name+".text", "empty text")
			ok = false
		} else {
			msg.Text = s
		}
		msgs = append(msgs, msg)
	}
	if !ok {
		return nil
	}
	if !hasRole(msgs, roleUser) {
		bad("messages", "no user message")
		return nil
	}
	if last := msgs[len(msgs)-1].Role; last != roleUser {
		bad("messages", "the last message must be from user, not %s", last)
		return nil
	}
	return msgs
}

func (c *config) parseCompletionOptions(raw []byte, spec *rowSpec, bad func(field, format string, args ...any)) {
	opts, ok := parseObject(raw, nil)
	if !ok {
		bad("completionOptions", "must be an object")
		return
	}
	for _, msg := range checkMembers(opts, optionFields) {
		bad("completionOptions", "%s", msg)
	}
	if raw, ok := field(opts, "temperature"); ok {
		var t float64
		if !isJSONNumber(raw) || json.Unmarshal(raw, &t) != nil {
			bad("completionOptions.temperature", "must be a number from 0 to 1")
		} else if t < 0 || t > 1 {
			bad("completionOptions.temperature", "%s is out of range (want 0 to 1)", raw)
		} else {
			spec.temperature = &t
		}
	}
	if raw, ok := field(opts, "maxTokens"); ok {
		digits := raw
		if s, ok := jsonString(raw); ok {
			digits = []byte(s)
		}
		n, err := strconv.ParseInt(string(digits), 10, 64)
		if err != nil || n <= 0 || (digits[0] < '0' || digits[0] > '9') {
			bad("completionOptions.maxTokens", "must be a positive integer (a number or a numeric string), not %s", raw)
		} else {
			spec.maxTokens = &n
		}
	}
	if raw, ok := field(opts, "reasoningOptions"); ok {
		ro, ok := parseObject(raw, nil)
		if !ok {
			bad("completionOptions.reasoningOptions", "must be an object")
			return
		}
		for _, msg := range checkMembers(ro, reasoningFields) {
			bad("completionOptions.reasoningOptions", "%s", msg)
		}
		if m, ok := field(ro, "mode"); !ok {
			bad("completionOptions.reasoningOptions.mode", "missing mode")
		} else if s, ok := jsonString(m); !ok || !reasoningModes[s] {
			bad("completionOptions.reasoningOptions.mode", "invalid mode %s (want %s)", m, reasoningModeList)
		} else {
			spec.reasoningMode = s
		}
	}
}

// field returns the value of key unless it is missing or null.
func field(obj object, key string) ([]byte, bool) {
	for _, m := range obj {
		if m.key == key {
			if string(m.val) == "null" {
				return nil, false
			}
			return m.val, true
		}
	}
	return nil, false
}

// checkMembers describes the unknown and repeated keys of obj. Keys match
// exactly: encoding/json would also accept "Prompt" for "prompt".
func checkMembers(obj object, known []string) []string {
	var unknown, msgs []string
	for i, m := range obj {
		if !slices.Contains(known, m.key) {
			unknown = append(unknown, strconv.Quote(m.key))
		}
		for _, prev := range obj[:i] {
			if prev.key == m.key {
				msgs = append(msgs, fmt.Sprintf("duplicate field %q", m.key))
				break
			}
		}
	}
	if len(unknown) == 0 {
		return msgs
	}
	slices.Sort(unknown)
	unknown = slices.Compact(unknown)
	noun := "field"
	if len(unknown) > 1 {
		noun = "fields"
	}
	return append([]string{fmt.Sprintf("unknown %s %s (known fields: %s)", noun, strings.Join(unknown, ", "), strings.Join(known, ", "))}, msgs...)
}
