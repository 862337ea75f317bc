package emulator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// maxInputTokens is the context limit of the current models (docs/api.md §5);
// the exact error text of the real API is UNCONFIRMED.
const maxInputTokens = 32000

// completionRequest is what the emulator keeps of a completionAsync body.
type completionRequest struct {
	modelURI string
	folder   string // from modelURI; "" when it does not parse
	messages []Message
	// maxTokens is completionOptions.maxTokens; 0 when unset. The proto says it must be greater
	// than zero; how the real API treats an explicit 0 is UNCONFIRMED: here it means no limit.
	maxTokens int64
}

// requestError is a rejected body. protoJSON errors (syntax, types, oneof)
// get the grpc-gateway unmarshal body {"error","code","message","details"};
// the others the llm.api gateway body with a session prefix (docs/api.md §4).
type requestError struct {
	protoJSON bool
	msg       string
	// tooLong: the request is well formed but longer than the context (the tokenizer still
	// counts it).
	tooLong bool
}

func protoErr(format string, args ...any) *requestError {
	return &requestError{protoJSON: true, msg: fmt.Sprintf(format, args...)}
}

func semanticErr(format string, args ...any) *requestError {
	return &requestError{msg: fmt.Sprintf(format, args...)}
}

// parseCompletionRequest decodes a completion body the way proto-JSON does:
// each field under its JSON (camelCase) or proto (snake_case) name, null as
// unset, int64 as a string or a number, unknown fields ignored. The returned
// request has its folder set whenever the model URI parsed, even on error, so
// quotas can be charged before the body is judged.
func parseCompletionRequest(body []byte) (completionRequest, *requestError) {
	var req completionRequest
	var toolMsg []bool // per message: content is a tool call or result list, not text
	top, rerr := protoObject(body, "CompletionRequest")
	if rerr != nil {
		return req, rerr
	}
	if raw, ok := top["modelUri"]; ok {
		if req.modelURI, rerr = protoString(raw, "modelUri"); rerr != nil {
			return req, rerr
		}
	}
	folder, uriOK := parseModelURI(req.modelURI)
	if uriOK {
		req.folder = folder
	}

	if raw, ok := top["messages"]; ok && !isNull(raw) {
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return req, protoErr("proto: syntax error: messages: expected an array, got %s", clip(raw))
		}
		for _, item := range items {
			m, tool, rerr := parseMessage(item)
			if rerr != nil {
				return req, rerr
			}
			toolMsg = append(toolMsg, tool)
			req.messages = append(req.messages, m)
		}
	}

	var temperature *float64
	if raw, ok := top["completionOptions"]; ok && !isNull(raw) {
		opts, rerr := protoObject(raw, "completionOptions")
		if rerr != nil {
			return req, rerr
		}
		if raw, ok := opts["stream"]; ok {
			// stream has no meaning for async requests; the real API's
			// reaction to stream:true is UNCONFIRMED, so it is ignored.
			if _, rerr := protoBool(raw, "stream"); rerr != nil {
				return req, rerr
			}
		}
		if raw, ok := opts["temperature"]; ok && !isNull(raw) {
			t, rerr := protoFloat(raw, "temperature")
			if rerr != nil {
				return req, rerr
			}
			temperature = &t
		}
		if raw, ok := opts["maxTokens"]; ok && !isNull(raw) {
			n, rerr := protoInt64(raw, "maxTokens")
			if rerr != nil {
				return req, rerr
			}
			if n < 0 {
				return req, semanticErr("maxTokens must be non-negative, got %d", n)
			}
			req.maxTokens = n
		}
		if raw, ok := opts["reasoningOptions"]; ok && !isNull(raw) {
			ro, rerr := protoObject(raw, "reasoningOptions")
			if rerr != nil {
				return req, rerr
			}
			if raw, ok := ro["mode"]; ok && !isNull(raw) {
				if rerr := protoEnum(raw, "mode", "REASONING_MODE_UNSPECIFIED", "DISABLED", "ENABLED_HIDDEN"); rerr != nil {
					return req, rerr
				}
			}
		}
	}

	// jsonObject and jsonSchema form a proto oneof: setting both is an error
	// even when jsonObject is false.
	rawObj, hasObj := top["jsonObject"]
	hasObj = hasObj && !isNull(rawObj)
	if hasObj {
		if _, rerr := protoBool(rawObj, "jsonObject"); rerr != nil {
			return req, rerr
		}
	}
	if raw, ok := top["jsonSchema"]; ok && !isNull(raw) {
		if hasObj {
			return req, protoErr(`proto: error parsing "jsonSchema", oneof yandex.cloud.ai.foundation_models.v1.CompletionRequest.ResponseFormat is already set`)
		}
		js, rerr := protoObject(raw, "jsonSchema")
		if rerr != nil {
			return req, rerr
		}
		if raw, ok := js["schema"]; ok && !isNull(raw) {
			if _, rerr := protoObject(raw, "schema"); rerr != nil {
				return req, rerr
			}
		}
	}

	// Semantic checks, in the order the API is likely to apply them.
	if !uriOK {
		return req, semanticErr("Failed to parse model URI")
	}
	if len(req.messages) == 0 {
		return req, semanticErr("messages must not be empty")
	}
	var tokens int64
	for i, m := range req.messages {
		switch m.Role {
		case "system", "user", "assistant":
		default:
			return req, semanticErr("invalid message role '%s'", m.Role)
		}
		if strings.TrimSpace(m.Text) == "" && !toolMsg[i] {
			return req, semanticErr("messages[%d]: message text must not be empty", i)
		}
		tokens += CountTokens(m.Text)
	}
	if temperature != nil && !(*temperature >= 0 && *temperature <= 1) {
		return req, semanticErr("temperature must be in the range [0, 1], got %v", *temperature)
	}
	if tokens > maxInputTokens {
		rerr := semanticErr("number of input tokens must be no more than %d, got %d", maxInputTokens, tokens)
		rerr.tooLong = true
		return req, rerr
	}
	return req, nil
}

// parseMessage decodes one message; tool reports a message whose content is
// a tool call or tool result list instead of text.
func parseMessage(raw json.RawMessage) (m Message, tool bool, rerr *requestError) {
	fields, rerr := protoObject(raw, "Message")
	if rerr != nil {
		return m, false, rerr
	}
	if raw, ok := fields["role"]; ok && !isNull(raw) {
		if m.Role, rerr = protoString(raw, "role"); rerr != nil {
			return m, false, rerr
		}
	}
	set := 0
	if raw, ok := fields["text"]; ok && !isNull(raw) {
		if m.Text, rerr = protoString(raw, "text"); rerr != nil {
			return m, false, rerr
		}
		set++
	}
	for _, name := range []string{"toolCallList", "toolResultList"} {
		if raw, ok := fields[name]; ok && !isNull(raw) {
			if _, rerr := protoObject(raw, name); rerr != nil {
				return m, false, rerr
			}
			set++
			tool = true
		}
	}
	if set > 1 {
		return m, false, protoErr("proto: error parsing Message: oneof Content is already set")
	}
	return m, tool, nil
}

// protoObject decodes a JSON object and renames snake_case keys to their
// camelCase JSON names, rejecting a field given under both names.
func protoObject(raw []byte, what string) (map[string]json.RawMessage, *requestError) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		if err := json.Unmarshal(raw, new(any)); err != nil {
			return nil, protoErr("%s", err.Error())
		}
		return nil, protoErr("proto: syntax error: %s: expected an object, got %s", what, clip(raw))
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, protoErr("%s", err.Error())
	}
	out := make(map[string]json.RawMessage, len(m))
	for k, v := range m {
		name := snakeToCamel(k)
		if _, dup := out[name]; dup {
			return nil, protoErr("proto: syntax error: %s: duplicate field %q", what, name)
		}
		out[name] = v
	}
	return out, nil
}

func snakeToCamel(s string) string {
	if !strings.Contains(s, "_") {
		return s
	}
	var b strings.Builder
	upper := false
	for _, r := range s {
		switch {
		case r == '_':
			upper = true
		case upper && r >= 'a' && r <= 'z':
			b.WriteRune(r - 'a' + 'A')
			upper = false
		default:
			b.WriteRune(r)
			upper = false
		}
	}
	return b.String()
}

func isNull(raw json.RawMessage) bool {
	return string(bytes.TrimSpace(raw)) == "null"
}

func protoString(raw json.RawMessage, field string) (string, *requestError) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", protoErr("proto: invalid value for string field %s: %s", field, clip(raw))
	}
	return s, nil
}

func protoBool(raw json.RawMessage, field string) (bool, *requestError) {
	var b bool
	if isNull(raw) {
		return false, nil
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		return false, protoErr("proto: invalid value for bool field %s: %s", field, clip(raw))
	}
	return b, nil
}

// protoFloat accepts a number or a string, as proto-JSON does for doubles.
func protoFloat(raw json.RawMessage, field string) (float64, *requestError) {
	text := string(bytes.TrimSpace(raw))
	if strings.HasPrefix(text, `"`) {
		if err := json.Unmarshal(raw, &text); err != nil {
			return 0, protoErr("proto: invalid value for double field %s: %s", field, clip(raw))
		}
		switch text {
		case "NaN":
			return math.NaN(), nil
		case "Infinity":
			return math.Inf(1), nil
		case "-Infinity":
			return math.Inf(-1), nil
		}
	} else if !json.Valid(raw) {
		return 0, protoErr("proto: invalid value for double field %s: %s", field, clip(raw))
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil {
		return 0, protoErr("proto: invalid value for double field %s: %s", field, clip(raw))
	}
	return f, nil
}

// protoInt64 accepts an integral number or a decimal string.
func protoInt64(raw json.RawMessage, field string) (int64, *requestError) {
	text := string(bytes.TrimSpace(raw))
	if strings.HasPrefix(text, `"`) {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, protoErr("proto: invalid value for int64 field %s: %s", field, clip(raw))
		}
		text = s
	} else if !json.Valid(raw) {
		return 0, protoErr("proto: invalid value for int64 field %s: %s", field, clip(raw))
	}
	if n, err := strconv.ParseInt(text, 10, 64); err == nil && !strings.HasPrefix(text, "+") {
		return n, nil
	}
	// Proto-JSON also takes integral values in float notation, such as 1e3.
	f, err := strconv.ParseFloat(text, 64)
	if err != nil || f != math.Trunc(f) || f < math.MinInt64 || f >= math.MaxInt64 {
		return 0, protoErr("proto: invalid value for int64 field %s: %s", field, clip(raw))
	}
	return int64(f), nil
}

// protoEnum accepts a value name or its number.
func protoEnum(raw json.RawMessage, field string, names ...string) *requestError {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		for _, n := range names {
			if s == n {
				return nil
			}
		}
	} else if n, err := strconv.Atoi(string(bytes.TrimSpace(raw))); err == nil && n >= 0 && n < len(names) {
		return nil
	}
	return protoErr("proto: invalid value for enum field %s: %s", field, clip(raw))
}

// clip shortens a raw value for an error message.
func clip(raw []byte) string {
	const n = 40
	raw = bytes.TrimSpace(raw)
	if len(raw) > n {
		return firstRunes(string(raw), n) + "..."
	}
	return string(raw)
}

// parseModelURI returns the folder of gpt://<folder>/<model>[/<version>] or
// ds://<folder>/<id>.
func parseModelURI(uri string) (folder string, ok bool) {
	var parts []string
	switch {
	case strings.HasPrefix(uri, "gpt://"):
		parts = strings.Split(uri[len("gpt://"):], "/")
		if len(parts) != 2 && len(parts) != 3 {
			return "", false
		}
	case strings.HasPrefix(uri, "ds://"):
		parts = strings.Split(uri[len("ds://"):], "/")
		if len(parts) != 2 {
			return "", false
		}
	default:
		return "", false
	}
	for i, p := range parts {
		if p == "" {
			return "", false
		}
		for _, r := range p {
			ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' ||
				i > 0 && (r == '.' || r == '@')
			if !ok {
				return "", false
			}
		}
	}
	return parts[0], true
}
