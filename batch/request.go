package batch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Roles accepted in messages[].role.
const (
	roleSystem    = "system"
	roleUser      = "user"
	roleAssistant = "assistant"
)

// reasoningModes are the values of completionOptions.reasoningOptions.mode
// (docs/api.md §2).
var reasoningModes = map[string]bool{
	"REASONING_MODE_UNSPECIFIED": true,
	"DISABLED":                   true,
	"ENABLED_HIDDEN":             true,
}

const reasoningModeList = "REASONING_MODE_UNSPECIFIED, DISABLED or ENABLED_HIDDEN"

// message is one entry of the request's messages array.
type message struct {
	Role string `json:"role"`
	Text string `json:"text"`
}

type reasoningOptions struct {
	Mode string `json:"mode"`
}

type completionOptions struct {
	Stream      bool     `json:"stream"`
	Temperature *float64 `json:"temperature,omitempty"`
	// MaxTokens is an Int64Value, which proto-JSON writes as a string.
	MaxTokens        string            `json:"maxTokens,omitempty"`
	ReasoningOptions *reasoningOptions `json:"reasoningOptions,omitempty"`
}

type jsonSchema struct {
	Schema json.RawMessage `json:"schema"`
}

// request is the completionAsync request body. Field order is fixed by the
// struct, so equal rows encode to equal bytes.
type request struct {
	ModelURI          string            `json:"modelUri"`
	CompletionOptions completionOptions `json:"completionOptions"`
	Messages          []message         `json:"messages"`
	JSONSchema        *jsonSchema       `json:"jsonSchema,omitempty"`
	JSONObject        bool              `json:"jsonObject,omitempty"`
}

// rowSpec is what one input row asks for, before the run's defaults are
// applied. Empty or nil fields mean "use the default".
type rowSpec struct {
	id            string // "" when the row has no usable id
	model         string // full model URI
	temperature   *float64
	maxTokens     *int64
	reasoningMode string
	system        string    // simple form only
	prompt        string    // simple form
	messages      []message // full form
	// structured reports that the row set jsonSchema or jsonObject itself, which
	// replaces the run's structured-output defaults.
	structured bool
	jsonObject bool
	jsonSchema json.RawMessage
}

// conversation returns the row's messages with the default system message
// applied: it is prepended only when the row has no system message of its own.
func (c *config) conversation(s *rowSpec) []message {
	if s.messages != nil {
		if c.system == "" || hasRole(s.messages, roleSystem) {
			return s.messages
		}
		return append([]message{{Role: roleSystem, Text: c.system}}, s.messages...)
	}
	system := s.system
	if system == "" {
		system = c.system
	}
	if system == "" {
		return []message{{Role: roleUser, Text: s.prompt}}
	}
	return []message{{Role: roleSystem, Text: system}, {Role: roleUser, Text: s.prompt}}
}

func hasRole(msgs []message, role string) bool {
	for _, m := range msgs {
		if m.Role == role {
			return true
		}
	}
	return false
}

// promptChars counts the runes of all message texts that the row will send.
func (c *config) promptChars(s *rowSpec) int {
	n := 0
	if s.messages != nil {
		for _, m := range s.messages {
			n += utf8.RuneCountInString(m.Text)
		}
		if c.system != "" && !hasRole(s.messages, roleSystem) {
			n += utf8.RuneCountInString(c.system)
		}
		return n
	}
	n = utf8.RuneCountInString(s.prompt)
	if s.system != "" {
		return n + utf8.RuneCountInString(s.system)
	}
	return n + utf8.RuneCountInString(c.system)
}

// maxTokensOf is the row's completionOptions.maxTokens: its own, else the run's; nil for none.
func (c *config) maxTokensOf(s *rowSpec) *int64 {
	if s.maxTokens != nil {
		return s.maxTokens
	}
	return c.maxTokens
}

// encode builds the request body for a valid row. buf is scratch space reused
// between calls; the returned slice is a fresh copy.
func (c *config) encode(s *rowSpec, buf *bytes.Buffer) ([]byte, error) {
	req := request{
		ModelURI: s.model,
		CompletionOptions: completionOptions{
			Temperature: c.temperature,
		},
		Messages: c.conversation(s),
	}
	if req.ModelURI == "" {
		req.ModelURI = c.model
	}
	if req.ModelURI == "" {
		return nil, errors.New("no model")
	}
	if s.temperature != nil {
		req.CompletionOptions.Temperature = s.temperature
	}
	if maxTokens := c.maxTokensOf(s); maxTokens != nil {
		req.CompletionOptions.MaxTokens = strconv.FormatInt(*maxTokens, 10)
	}
	mode := c.reasoningMode
	if s.reasoningMode != "" {
		mode = s.reasoningMode
	}
	if mode != "" {
		req.CompletionOptions.ReasoningOptions = &reasoningOptions{Mode: mode}
	}
	jsonObject, schema := c.jsonObject, c.jsonSchema
	if s.structured {
		jsonObject, schema = s.jsonObject, s.jsonSchema
	}
	if schema != nil {
		req.JSONSchema = &jsonSchema{Schema: schema}
	} else {
		req.JSONObject = jsonObject
	}

	buf.Reset()
	enc := json.NewEncoder(buf)
	// Prompts often contain <, > and &; escaping them is legal but bloats the body.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&req); err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	return bytes.Clone(bytes.TrimSuffix(buf.Bytes(), []byte("\n"))), nil
}

// ModelURI returns the model URI for model: a short name such as
// "yandexgpt-lite" or "yandexgpt/rc" becomes "gpt://<folder>/<name>/<version>"
// (version "latest" by default); a full "gpt://" or "ds://" URI is returned
// as is after a syntax check.
func ModelURI(folder, model string) (string, error) {
	if model == "" {
		return "", errors.New("empty model name")
	}
	if scheme, rest, ok := strings.Cut(model, "://"); ok {
		parts := strings.Split(rest, "/")
		var okLen bool
		switch scheme {
		case "gpt": // gpt://<folder>/<model>[/<version>[@<suffix>]]
			okLen = len(parts) == 2 || len(parts) == 3
		case "ds": // ds://[<folder>/]<id>
			okLen = len(parts) == 1 || len(parts) == 2
		default:
			return "", fmt.Errorf("model URI %q: unsupported scheme %q (want gpt:// or ds://)", model, scheme)
		}
		if !okLen {
			return "", fmt.Errorf("model URI %q: want gpt://<folder>/<model>[/<version>] or ds://<folder>/<id>", model)
		}
		for i, p := range parts {
			if !validName(p, i == len(parts)-1) {
				return "", fmt.Errorf("model URI %q: invalid part %q", model, p)
			}
		}
		return model, nil
	}
	parts := strings.Split(model, "/")
	if len(parts) > 2 {
		return "", fmt.Errorf("model %q: want <name> or <name>/<version>, or a full gpt:// URI", model)
	}
	for i, p := range parts {
		if !validName(p, i == len(parts)-1) {
			return "", fmt.Errorf("model %q: invalid name %q", model, p)
		}
	}
	if folder == "" {
		return "", fmt.Errorf("model %q needs a folder id to build its URI: set --folder or YC_FOLDER_ID", model)
	}
	if !validName(folder, false) {
		return "", fmt.Errorf("invalid folder id %q", folder)
	}
	version := "latest"
	if len(parts) == 2 {
		version = parts[1]
	}
	return "gpt://" + folder + "/" + parts[0] + "/" + version, nil
}

// validName reports whether s is a plausible folder id, model name or version:
// letters, digits, '.', '_' and '-', plus '@' and ':' in the last part (for
// fine-tuned suffixes).
func validName(s string, last bool) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9', b == '-', b == '_', b == '.':
		case last && (b == '@' || b == ':'):
		default:
			return false
		}
	}
	return true
}

// ModelOf returns the modelUri of a request body made by this package ("" if it has none).
func ModelOf(body []byte) string {
	// The encoder writes modelUri first, and a model URI needs no escaping (see validName).
	const prefix = `{"modelUri":"`
	if rest, ok := bytes.CutPrefix(body, []byte(prefix)); ok {
		if end := bytes.IndexByte(rest, '"'); end >= 0 && bytes.IndexByte(rest[:end], '\\') < 0 {
			return string(rest[:end])
		}
	}
	var r struct {
		ModelURI string `json:"modelUri"`
	}
	if json.Unmarshal(body, &r) != nil {
		return ""
	}
	return r.ModelURI
}
