package batch_test

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/batchgpt/batchgpt/batch"
)

// defaults are the options most tests use.
var defaults = batch.Options{Model: "yandexgpt-lite", Folder: "b1gfolder"}

// writeInput writes content to a file called name in a fresh directory and
// returns its path.
func writeInput(t testing.TB, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// problems runs Validate and returns its problems with the directory part of
// the file name removed.
func problems(t *testing.T, path string, opt batch.Options, maxErrors int) []string {
	t.Helper()
	_, err := batch.Validate(path, opt, maxErrors)
	if err == nil {
		return nil
	}
	var verr *batch.ValidationError
	if !errors.As(err, &verr) {
		t.Fatalf("Validate: %v (want a *ValidationError)", err)
	}
	return strings.Split(strings.ReplaceAll(verr.Error(), filepath.Dir(path)+string(filepath.Separator), ""), "\n")
}

func readAll(t *testing.T, path string, opt batch.Options) []batch.Row {
	t.Helper()
	r, err := batch.Open(path, opt)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer r.Close()
	var rows []batch.Row
	for {
		row, err := r.Next()
		if err == io.EOF {
			return rows
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		rows = append(rows, row)
	}
}

func TestValidateJSONLErrors(t *testing.T) {
	t.Parallel()
	const known = `(known fields: id, prompt, system, messages, modelUri, completionOptions, jsonSchema, jsonObject)`
	noFolder := batch.Options{Model: "gpt://b1gfolder/yandexgpt-lite/latest"}
	tests := []struct {
		name    string
		content string
		opt     *batch.Options // nil = defaults
		want    []string
	}{
		{"a bad row after blank lines keeps its line number", "{\"prompt\":\"a\"}\n\n \t\r\n{\"prompt\":\"\"}\n",
			nil, []string{`in.jsonl:4: field "prompt": empty prompt`}},
		{"only blank lines", "\n \n\t\r\n", nil, []string{`in.jsonl: no data rows`}},
		{"syntax", `{"prompt": }`,
			nil, []string{`in.jsonl:1: invalid JSON at column 12: invalid character '}' looking for beginning of value`}},
		{"truncated", `{"prompt": "a"`,
			nil, []string{`in.jsonl:1: invalid JSON at column 14: unexpected end of JSON input`}},
		{"array", `["a"]`,
			nil, []string{`in.jsonl:1: not a JSON object (each line must be one {...} object)`}},
		{"null", `null`,
			nil, []string{`in.jsonl:1: not a JSON object (each line must be one {...} object)`}},
		{"unknown field", `{"promt": "hi"}`,
			nil, []string{
				`in.jsonl:1: unknown field "promt" ` + known,
				`in.jsonl:1: field "prompt": missing prompt (or messages)`}},
		{"unknown fields", `{"prompt": "hi", "temperature": 1, "Id": "x"}`,
			nil, []string{`in.jsonl:1: unknown fields "Id", "temperature" ` + known}},
		{"repeated field", `{"prompt": "a", "prompt": "b", "completionOptions": {"maxTokens": 1, "maxTokens": 2}}`,
			nil, []string{
				`in.jsonl:1: duplicate field "prompt"`,
				`in.jsonl:1: field "completionOptions": duplicate field "maxTokens"`}},
		{"keys are case-sensitive", `{"Prompt": "a"}`,
			nil, []string{
				`in.jsonl:1: unknown field "Prompt" ` + known,
				`in.jsonl:1: field "prompt": missing prompt (or messages)`}},
		{"invalid UTF-8 in prompt", "{\"prompt\": \"a\xffb\"}",
			nil, []string{`in.jsonl:1: field "prompt": invalid UTF-8`}},
		{"invalid UTF-8 in a message", "{\"messages\": [{\"role\": \"user\", \"text\": \"a\"}, {\"role\": \"user\", \"text\": \"\xc3\"}]}",
			nil, []string{`in.jsonl:1: field "messages[1].text": invalid UTF-8`}},
		{"invalid UTF-8 in a key", "{\"prompt\": \"a\", \"x\xff\": 1}",
			nil, []string{"in.jsonl:1: field \"x\uFFFD\": invalid UTF-8"}},
		{"id type", `{"id": 1.5, "prompt": "a"}`,
			nil, []string{`in.jsonl:1: field "id": must be a string or an integer`}},
		{"id object", `{"id": {}, "prompt": "a"}`,
			nil, []string{`in.jsonl:1: field "id": must be a string or an integer`}},
		{"empty id", `{"id": " ", "prompt": "a"}`,
			nil, []string{`in.jsonl:1: field "id": empty id`}},
		{"duplicate id", "{\"id\": \"a\", \"prompt\": \"x\"}\n{\"id\": \"b\", \"prompt\": \"x\"}\n{\"id\": \"a\", \"prompt\": \"x\"}\n{\"id\": \"a\", \"prompt\": \"x\"}\n",
			nil, []string{
				`in.jsonl:3: field "id": duplicate id "a" (first on line 1)`,
				`in.jsonl:4: field "id": duplicate id "a" (first on line 1)`}},
		{"integer id equal to a row number", "{\"id\": 2, \"prompt\": \"x\"}\n{\"prompt\": \"y\"}\n",
			nil, []string{`in.jsonl:2: field "id": duplicate id "2" (first on line 1)`}},
		{"prompt type", `{"prompt": ["a"]}`,
			nil, []string{`in.jsonl:1: field "prompt": must be a string`}},
		{"empty prompt", `{"prompt": " \n\t"}`,
			nil, []string{`in.jsonl:1: field "prompt": empty prompt`}},
		{"prompt and messages", `{"prompt": "a", "messages": [{"role": "user", "text": "b"}]}`,
			nil, []string{`in.jsonl:1: field "messages": prompt and messages are exclusive`}},
		{"system and messages", `{"system": "s", "messages": [{"role": "user", "text": "b"}]}`,
			nil, []string{`in.jsonl:1: field "system": system and messages are exclusive (put a system message in messages)`}},
		{"system type", `{"prompt": "a", "system": 1}`,
			nil, []string{`in.jsonl:1: field "system": must be a string`}},
		{"messages type", `{"messages": "hi"}`,
			nil, []string{`in.jsonl:1: field "messages": must be an array of {"role": ..., "text": ...} objects`}},
		{"empty messages", `{"messages": []}`,
			nil, []string{`in.jsonl:1: field "messages": empty messages`}},
		{"message type", `{"messages": ["hi"]}`,
			nil, []string{`in.jsonl:1: field "messages[0]": must be an object like {"role": "user", "text": "..."}`}},
		{"message unknown field", `{"messages": [{"role": "user", "text": "a", "toolCallList": {}}]}`,
			nil, []string{`in.jsonl:1: field "messages[0]": unknown field "toolCallList" (known fields: role, text)`}},
		{"missing role and text", `{"messages": [{}]}`,
			nil, []string{
				`in.jsonl:1: field "messages[0].role": missing role`,
				`in.jsonl:1: field "messages[0].text": missing text`}},
		{"invalid role", `{"messages": [{"role": "user", "text": "a"}, {"role": "bot", "text": "b"}]}`,
			nil, []string{`in.jsonl:1: field "messages[1].role": invalid role "bot" (want system, user or assistant)`}},
		{"role type", `{"messages": [{"role": 1, "text": "a"}]}`,
			nil, []string{`in.jsonl:1: field "messages[0].role": must be a string`}},
		{"text type and empty text", `{"messages": [{"role": "user", "text": 5}, {"role": "user", "text": ""}]}`,
			nil, []string{
				`in.jsonl:1: field "messages[0].text": must be a string`,
				`in.jsonl:1: field "messages[1].text": empty text`}},
		{"no user message", `{"messages": [{"role": "system", "text": "a"}]}`,
			nil, []string{`in.jsonl:1: field "messages": no user message`}},
		{"last message not from user", `{"messages": [{"role": "user", "text": "a"}, {"role": "assistant", "text": "b"}]}`,
			nil, []string{`in.jsonl:1: field "messages": the last message must be from user, not assistant`}},
		{"modelUri type", `{"prompt": "a", "modelUri": 1}`,
			nil, []string{`in.jsonl:1: field "modelUri": must be a string`}},
		{"modelUri scheme", `{"prompt": "a", "modelUri": "http://x/y"}`,
			nil, []string{`in.jsonl:1: field "modelUri": model URI "http://x/y": unsupported scheme "http" (want gpt:// or ds://)`}},
		{"short modelUri without folder", `{"prompt": "a", "modelUri": "yandexgpt"}`,
			&noFolder, []string{`in.jsonl:1: field "modelUri": model "yandexgpt" needs a folder id to build its URI: set --folder or YC_FOLDER_ID`}},
		{"no model", `{"prompt": "a"}`,
			&batch.Options{}, []string{`in.jsonl:1: field "modelUri": no model: set --model or a per-row modelUri`}},
		{"completionOptions type", `{"prompt": "a", "completionOptions": []}`,
			nil, []string{`in.jsonl:1: field "completionOptions": must be an object`}},
		{"completionOptions unknown", `{"prompt": "a", "completionOptions": {"stream": true, "temp": 1}}`,
			nil, []string{`in.jsonl:1: field "completionOptions": unknown fields "stream", "temp" (known fields: temperature, maxTokens, reasoningOptions)`}},
		{"temperature range", `{"prompt": "a", "completionOptions": {"temperature": 1.5}}`,
			nil, []string{`in.jsonl:1: field "completionOptions.temperature": 1.5 is out of range (want 0 to 1)`}},
		{"temperature type", `{"prompt": "a", "completionOptions": {"temperature": "0.5"}}`,
			nil, []string{`in.jsonl:1: field "completionOptions.temperature": must be a number from 0 to 1`}},
		{"maxTokens zero", `{"prompt": "a", "completionOptions": {"maxTokens": "0"}}`,
			nil, []string{`in.jsonl:1: field "completionOptions.maxTokens": must be a positive integer (a number or a numeric string), not "0"`}},
		{"maxTokens fraction", `{"prompt": "a", "completionOptions": {"maxTokens": 10.5}}`,
			nil, []string{`in.jsonl:1: field "completionOptions.maxTokens": must be a positive integer (a number or a numeric string), not 10.5`}},
		{"maxTokens sign", `{"prompt": "a", "completionOptions": {"maxTokens": "+10"}}`,
			nil, []string{`in.jsonl:1: field "completionOptions.maxTokens": must be a positive integer (a number or a numeric string), not "+10"`}},
		{"reasoning mode", `{"prompt": "a", "completionOptions": {"reasoningOptions": {"mode": "ON"}}}`,
			nil, []string{`in.jsonl:1: field "completionOptions.reasoningOptions.mode": invalid mode "ON" (want REASONING_MODE_UNSPECIFIED, DISABLED or ENABLED_HIDDEN)`}},
		{"reasoning without mode", `{"prompt": "a", "completionOptions": {"reasoningOptions": {}}}`,
			nil, []string{`in.jsonl:1: field "completionOptions.reasoningOptions.mode": missing mode`}},
		{"reasoningOptions type", `{"prompt": "a", "completionOptions": {"reasoningOptions": "DISABLED"}}`,
			nil, []string{`in.jsonl:1: field "completionOptions.reasoningOptions": must be an object`}},
		{"jsonSchema type", `{"prompt": "a", "jsonSchema": "x"}`,
			nil, []string{`in.jsonl:1: field "jsonSchema": must be an object like {"schema": {...}}`}},
		{"jsonSchema without schema", `{"prompt": "a", "jsonSchema": {}}`,
			nil, []string{`in.jsonl:1: field "jsonSchema.schema": missing schema`}},
		{"jsonSchema unknown", `{"prompt": "a", "jsonSchema": {"schema": {}, "strict": true}}`,
			nil, []string{`in.jsonl:1: field "jsonSchema": unknown field "strict" (known fields: schema)`}},
		{"schema type", `{"prompt": "a", "jsonSchema": {"schema": "object"}}`,
			nil, []string{`in.jsonl:1: field "jsonSchema.schema": must be an object`}},
		{"jsonObject type", `{"prompt": "a", "jsonObject": "yes"}`,
			nil, []string{`in.jsonl:1: field "jsonObject": must be true or false`}},
		{"jsonSchema and jsonObject", `{"prompt": "a", "jsonSchema": {"schema": {}}, "jsonObject": true}`,
			nil, []string{`in.jsonl:1: field "jsonObject": jsonSchema and jsonObject are exclusive`}},
		{"no rows", "", nil, []string{`in.jsonl: no data rows`}},
		{"only a blank line", "\n", nil, []string{`in.jsonl: no data rows`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opt := defaults
			if tt.opt != nil {
				opt = *tt.opt
			}
			got := problems(t, writeInput(t, "in.jsonl", tt.content), opt, 0)
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestValidateCSVErrors(t *testing.T) {
	t.Parallel()
	tmpl := func(s string) *batch.Options {
		o := defaults
		o.Template = s
		return &o
	}
	idCol := defaults
	idCol.IDColumn = "key"
	sysCol := defaults
	sysCol.SystemColumn = "sys"
	tests := []struct {
		name    string
		content string
		opt     *batch.Options
		want    []string
	}{
		{"empty file", "", nil, []string{`in.csv: empty file: a CSV input needs a header row`}},
		{"header only", "id,prompt\n", nil, []string{`in.csv: no data rows`}},
		{"no prompt column", "id,text\n1,a\n",
			nil, []string{`in.csv:1: header: no prompt column "prompt" (columns: "id", "text")`}},
		{"no id column given", "id,prompt\n1,a\n",
			&idCol, []string{`in.csv:1: header: no id column "key" (columns: "id", "prompt")`}},
		{"no system column", "id,prompt\n1,a\n",
			&sysCol, []string{`in.csv:1: header: no system column "sys" (columns: "id", "prompt")`}},
		{"duplicate column", "prompt,a,a\nx,1,2\n",
			nil, []string{`in.csv:1: header: duplicate column "a"`}},
		{"header quote error", "\"prompt\nx\n",
			nil, []string{`in.csv:2: header: column 3: extraneous or missing " in quoted-field`}},
		{"template column missing is reported once", "id,txt\n1,a\n2,b\n3,c\n",
			tmpl("Translate: {{.text}} {{index . \"lang\"}} {{.txt}}"), []string{
				`in.csv:1: field "template": refers to column "text", which the header does not have (columns: "id", "txt")`,
				`in.csv:1: field "template": refers to column "lang", which the header does not have (columns: "id", "txt")`}},
		{"template output empty", "id,text\n1,\" \"\n",
			tmpl("{{.text}}"), []string{`in.csv:2: field "template": empty prompt`}},
		{"wrong number of fields", "id,prompt\n1,a\n2,b,c\n3\n",
			nil, []string{
				`in.csv:3: wrong number of fields: 3 (the header has 2)`,
				`in.csv:4: wrong number of fields: 1 (the header has 2)`}},
		{"bare quote", "id,prompt\n1,say \"hi\"\n2,ok\n",
			nil, []string{`in.csv:2: column 7: bare " in non-quoted-field`}},
		{"quote not closed", "id,prompt\n1,ok\n2,\"open\nstill open\n",
			nil, []string{`in.csv:4: column 12: extraneous or missing " in quoted-field`}},
		{"invalid UTF-8", "id,prompt,note\n1,a\xffb,\xfe\n",
			nil, []string{
				`in.csv:2: field "prompt": invalid UTF-8`,
				`in.csv:2: field "note": invalid UTF-8`}},
		{"empty prompt", "id,prompt\n1,\n2,\"  \"\n",
			nil, []string{
				`in.csv:2: field "prompt": empty prompt`,
				`in.csv:3: field "prompt": empty prompt`}},
		{"empty id", "id,prompt\n,a\n",
			nil, []string{`in.csv:2: field "id": empty id`}},
		{"duplicate id after multi-line rows", "id,prompt\nx,\"a\nb\"\n\ny,c\nx,\"d\"\n",
			nil, []string{`in.csv:6: field "id": duplicate id "x" (first on line 2)`}},
		{"prompt on a later line of a multi-line row", "id,note,prompt\n1,\"a\nb\",\n",
			nil, []string{`in.csv:3: field "prompt": empty prompt`}},
		{"row number ids collide with an id column", "n,prompt\n1,a\n",
			nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opt := defaults
			if tt.opt != nil {
				opt = *tt.opt
			}
			got := problems(t, writeInput(t, "in.csv", tt.content), opt, 0)
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestValidateMaxErrors(t *testing.T) {
	t.Parallel()
	path := writeInput(t, "in.jsonl", strings.Repeat("{\"prompt\": \"\"}\n", 5))
	_, err := batch.Validate(path, defaults, 2)
	var verr *batch.ValidationError
	if !errors.As(err, &verr) {
		t.Fatalf("Validate: %v, want a *ValidationError", err)
	}
	if len(verr.Errors) != 2 || verr.More != 3 {
		t.Errorf("got %d errors and %d more, want 2 and 3", len(verr.Errors), verr.More)
	}
	if !strings.HasSuffix(err.Error(), "\n... and 3 more problems") {
		t.Errorf("Error() = %q, want it to end with the count of the rest", err.Error())
	}
	var ie *batch.InputError
	if !errors.As(err, &ie) || ie.Line != 1 || ie.Field != "prompt" {
		t.Errorf("errors.As(*InputError) = %+v, want line 1 field prompt", ie)
	}
}

func TestOptionErrors(t *testing.T) {
	t.Parallel()
	temp := 1.5
	var zero int64
	tests := []struct {
		name, file string
		opt        batch.Options
		want       string
	}{
		{"unknown extension", "in.txt", defaults,
			`cannot tell the input format from the extension ".txt": use .jsonl or .csv, or set the format (jsonl or csv)`},
		{"unknown format", "in.jsonl", batch.Options{Format: "xml", Model: "yandexgpt", Folder: "f"},
			`unknown input format "xml" (want jsonl or csv)`},
		{"short model without folder", "in.jsonl", batch.Options{Model: "yandexgpt"},
			`model "yandexgpt" needs a folder id to build its URI: set --folder or YC_FOLDER_ID`},
		{"csv without model", "in.csv", batch.Options{},
			`no model: set --model`},
		{"temperature", "in.jsonl", batch.Options{Model: "yandexgpt", Folder: "f", Temperature: &temp},
			`temperature 1.5 is out of range (want 0 to 1)`},
		{"max tokens", "in.jsonl", batch.Options{Model: "yandexgpt", Folder: "f", MaxTokens: &zero},
			`max tokens must be positive, not 0`},
		{"reasoning mode", "in.jsonl", batch.Options{Model: "yandexgpt", Folder: "f", ReasoningMode: "ON"},
			`invalid reasoning mode "ON" (want REASONING_MODE_UNSPECIFIED, DISABLED or ENABLED_HIDDEN)`},
		{"schema not an object", "in.jsonl", batch.Options{Model: "yandexgpt", Folder: "f", JSONSchema: []byte(`[1]`)},
			`the JSON schema must be a JSON object`},
		{"schema and object", "in.jsonl", batch.Options{Model: "yandexgpt", Folder: "f", JSONSchema: []byte(`{}`), JSONObject: true},
			`a JSON schema and a plain JSON object output are exclusive`},
		{"template for JSONL", "in.jsonl", batch.Options{Model: "yandexgpt", Folder: "f", Template: "{{.x}}"},
			`column and template options apply to CSV input only`},
		{"template syntax", "in.csv", batch.Options{Model: "yandexgpt", Folder: "f", Template: "{{.x"},
			`parse template: template: template:1: unclosed action`},
		{"template and prompt column", "in.csv", batch.Options{Model: "yandexgpt", Folder: "f", Template: "{{.x}}", PromptColumn: "p"},
			`a prompt column and a template are exclusive`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeInput(t, tt.file, "{\"prompt\": \"a\"}\n")
			_, err := batch.Validate(path, tt.opt, 0)
			if err == nil {
				t.Fatal("Validate succeeded")
			}
			var verr *batch.ValidationError
			if errors.As(err, &verr) {
				t.Fatalf("Validate: %v, want an options error", err)
			}
			if got := strings.ReplaceAll(err.Error(), path+": ", ""); got != tt.want {
				t.Errorf("Validate: %s\nwant:      %s", got, tt.want)
			}
			if _, err := batch.Open(path, tt.opt); err == nil {
				t.Error("Open succeeded")
			}
		})
	}
}

func TestValidateIOError(t *testing.T) {
	t.Parallel()
	_, err := batch.Validate(filepath.Join(t.TempDir(), "missing.jsonl"), defaults, 0)
	var verr *batch.ValidationError
	if !errors.Is(err, os.ErrNotExist) || errors.As(err, &verr) {
		t.Errorf("Validate of a missing file: %v, want a not-exist error", err)
	}
}

func TestDuplicateIDsWithHashCollisions(t *testing.T) {
	// With every id hashing alike, only a re-read tells ids apart.
	restore := batch.SetIDHash(func(string) uint64 { return 1 })
	defer restore()
	tests := []struct {
		name, file, content string
		want                []string
	}{
		{"jsonl", "in.jsonl", "{\"id\": \"a\", \"prompt\": \"x\"}\n{\"id\": \"b\", \"prompt\": \"x\"}\n{\"prompt\": \"x\"}\n{\"id\": \"b\", \"prompt\": \"x\"}\n{\"id\": 3, \"prompt\": \"x\"}\n{\"id\": \"a\", \"prompt\": \"x\"}\n", []string{
			`in.jsonl:4: field "id": duplicate id "b" (first on line 2)`,
			`in.jsonl:5: field "id": duplicate id "3" (first on line 3)`,
			`in.jsonl:6: field "id": duplicate id "a" (first on line 1)`}},
		{"csv", "in.csv", "id,prompt\na,x\nb,\"multi\nline\"\n\nc,x\nb,x\na,x\n", []string{
			`in.csv:7: field "id": duplicate id "b" (first on line 3)`,
			`in.csv:8: field "id": duplicate id "a" (first on line 2)`}},
		{"no duplicates", "in.jsonl", "{\"id\": \"a\", \"prompt\": \"x\"}\n{\"id\": \"b\", \"prompt\": \"x\"}\n{\"id\": \"c\", \"prompt\": \"x\"}\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := problems(t, writeInput(t, tt.file, tt.content), defaults, 0)
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestDuplicateIDsAmongOtherProblems(t *testing.T) {
	// Duplicate ids are found after the first pass; the problems must still come in line order
	// and stop at the limit, with the rest counted, with or without colliding hashes.
	content := "{\"id\": \"a\", \"prompt\": \"x\"}\n" + // 1
		"{\"id\": \"b\", \"promt\": \"x\"}\n" + // 2: unknown field, no prompt
		"{\"id\": \"a\", \"prompt\": \"\"}\n" + // 3: empty prompt and a duplicate
		"{\"id\": \"cc\", \"prompt\": \"x\"}\n" + // 4
		"{\"id\": \"b\", \"prompt\": \"x\"}\n" + // 5: duplicate
		"{\"id\": \"dd\", \"prompt\": \"x\"}\n" + // 6
		"not json\n" + // 7
		"{\"id\": \"cc\", \"prompt\": \"x\"}\n" // 8: duplicate
	path := writeInput(t, "in.jsonl", content)
	all := problems(t, path, defaults, 0)
	var dups []string
	for _, p := range all {
		if strings.Contains(p, "duplicate id") {
			dups = append(dups, p)
		}
	}
	wantDups := []string{
		`in.jsonl:3: field "id": duplicate id "a" (first on line 1)`,
		`in.jsonl:5: field "id": duplicate id "b" (first on line 2)`,
		`in.jsonl:8: field "id": duplicate id "cc" (first on line 4)`,
	}
	if !slices.Equal(dups, wantDups) || len(all) < 6 {
		t.Fatalf("problems:\n%s", strings.Join(all, "\n"))
	}
	if i := slices.Index(all, wantDups[0]); i < 1 || !strings.HasPrefix(all[i-1], "in.jsonl:3:") {
		t.Fatalf("the duplicate id of line 3 does not follow the line's other problem:\n%s", strings.Join(all, "\n"))
	}
	for _, hash := range []struct {
		name string
		h    func(string) uint64
	}{{"maphash", nil}, {"by length", func(id string) uint64 { return uint64(len(id)) }}, {"one hash", func(string) uint64 { return 7 }}} {
		t.Run(hash.name, func(t *testing.T) {
			if hash.h != nil {
				defer batch.SetIDHash(hash.h)()
			}
			if got := problems(t, path, defaults, 0); !slices.Equal(got, all) {
				t.Fatalf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(all, "\n"))
			}
			for limit := 1; limit <= len(all); limit++ {
				_, err := batch.Validate(path, defaults, limit)
				var verr *batch.ValidationError
				if !errors.As(err, &verr) || len(verr.Errors) != limit || verr.More != len(all)-limit {
					t.Fatalf("limit %d: %v", limit, err)
				}
				for i, e := range verr.Errors {
					if got := strings.TrimPrefix(e.Error(), filepath.Dir(path)+string(filepath.Separator)); got != all[i] {
						t.Fatalf("limit %d: problem %d = %q, want %q", limit, i, got, all[i])
					}
				}
			}
		})
	}
}
