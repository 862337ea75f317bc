package batch_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/batchgpt/batchgpt/batch"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// goldenCases are the sample inputs in testdata with the options they are
// read with; their rows are compared with testdata/golden/<name>.golden.
func goldenCases() []struct {
	file string
	opt  batch.Options
} {
	temp, maxTokens := 0.3, int64(2000)
	withDefaults := defaults
	withDefaults.System = "Be helpful."
	withDefaults.Temperature = &temp
	withDefaults.MaxTokens = &maxTokens
	withSystem := defaults
	withSystem.SystemColumn = "system"
	withSystem.ReasoningMode = "DISABLED"
	withTemplate := defaults
	withTemplate.Template = "Translate to {{.lang}}: {{.text}}"
	withTemplate.JSONSchema = []byte(`{"type": "object", "properties": {"translation": {"type": "string"}}}`)
	withObject := defaults
	withObject.JSONObject = true
	return []struct {
		file string
		opt  batch.Options
	}{
		{"simple.jsonl", withDefaults},
		{"bom_crlf.csv", withSystem},
		{"template.csv", withTemplate},
		{"simple.csv", withObject},
	}
}

func formatRows(rows []batch.Row) []byte {
	var b bytes.Buffer
	for _, r := range rows {
		fmt.Fprintf(&b, "index=%d line=%d offset=%d id=%q chars=%d\n%s\n", r.Index, r.Line, r.Offset, r.ID, r.PromptChars, r.Body)
	}
	return b.Bytes()
}

func TestGolden(t *testing.T) {
	t.Parallel()
	for _, tc := range goldenCases() {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join("testdata", tc.file)
			sum, err := batch.Validate(path, tc.opt, 0)
			if err != nil {
				t.Fatalf("Validate: %v", err)
			}
			rows := readAll(t, path, tc.opt)
			if sum.Rows != len(rows) {
				t.Errorf("Validate counted %d rows, Next returned %d", sum.Rows, len(rows))
			}
			var chars int64
			for _, r := range rows {
				chars += int64(r.PromptChars)
			}
			if sum.PromptChars != chars || sum.EstimatedTokens != batch.EstimateTokens(chars) {
				t.Errorf("summary %+v, want %d prompt chars", sum, chars)
			}
			got := formatRows(rows)
			golden := filepath.Join("testdata", "golden", tc.file+".golden")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("rows differ from %s (run with -update to accept):\n%s", golden, got)
			}
			// Every row can be read again on its own.
			for _, r := range rows {
				again, err := batch.ReadRow(path, tc.opt, r.Offset, r.Index, r.Line)
				if err != nil {
					t.Fatalf("ReadRow(%d): %v", r.Offset, err)
				}
				if !reflect.DeepEqual(again, r) {
					t.Errorf("ReadRow(%d) = %+v\nNext gave      %+v", r.Offset, again, r)
				}
			}
		})
	}
}

func TestValidateSummary(t *testing.T) {
	t.Parallel()
	tests := []struct {
		file, content, format string
		chars                 int64
	}{
		{"in.ndjson", "{\"prompt\": \"abcd\"}\n{\"prompt\": \"héllo\", \"system\": \"xy\"}\n", "jsonl", 4 + 5 + 2},
		{"in.json", "{\"messages\": [{\"role\": \"user\", \"text\": \"abc\"}]}", "jsonl", 3},
		{"in.CSV", "\xef\xbb\xbfprompt,system\r\nabcd,\r\n\"hé\r\nllo\",xy\r\n\r\n", "csv", 4 + 6 + 2},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			opt := defaults
			if tt.format == "csv" {
				opt.SystemColumn = "system"
			}
			path := writeInput(t, tt.file, tt.content)
			sum, err := batch.Validate(path, opt, 0)
			if err != nil {
				t.Fatal(err)
			}
			want := batch.Summary{
				Format:          tt.format,
				Rows:            2,
				Size:            int64(len(tt.content)),
				SHA256:          sha256Hex(tt.content),
				PromptChars:     tt.chars,
				EstimatedTokens: batch.EstimateTokens(tt.chars),
			}
			if tt.file == "in.json" {
				want.Rows = 1
			}
			sum.Chunks = nil // TestChunkTable checks them
			if !reflect.DeepEqual(sum, want) {
				t.Errorf("Summary = %+v\nwant      %+v", sum, want)
			}
		})
	}
}

func TestEstimateTokens(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ chars, want int64 }{{-1, 0}, {0, 0}, {1, 1}, {4, 1}, {5, 2}, {400, 100}} {
		if got := batch.EstimateTokens(tt.chars); got != tt.want {
			t.Errorf("EstimateTokens(%d) = %d, want %d", tt.chars, got, tt.want)
		}
	}
}

func TestLongLines(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("я", 1<<19) // 1 MiB of UTF-8
	tests := []struct {
		name, file, content string
		opt                 batch.Options
		lastLine            int
		lastRow             string
	}{
		{"jsonl", "in.jsonl", "{\"prompt\": \"short\"}\n{\"prompt\": \"" + long + "\"}\n{\"prompt\": \"end\"}", defaults, 3, `{"prompt": "end"}`},
		{"csv", "in.csv", "prompt\nshort\n\"" + long + "\"\nend\n", defaults, 4, "end\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeInput(t, tt.file, tt.content)
			sum, err := batch.Validate(path, tt.opt, 0)
			if err != nil {
				t.Fatal(err)
			}
			if sum.Rows != 3 || sum.Size != int64(len(tt.content)) {
				t.Errorf("Summary = %+v, want 3 rows of %d bytes", sum, len(tt.content))
			}
			rows := readAll(t, path, tt.opt)
			if len(rows) != 3 {
				t.Fatalf("got %d rows, want 3", len(rows))
			}
			if rows[1].PromptChars != 1<<19 || !bytes.Contains(rows[1].Body, []byte(long)) {
				t.Errorf("row 2 has %d prompt chars, want %d", rows[1].PromptChars, 1<<19)
			}
			if rows[2].Line != tt.lastLine || rows[2].Offset != int64(strings.LastIndex(tt.content, tt.lastRow)) {
				t.Errorf("row 3 at line %d offset %d", rows[2].Line, rows[2].Offset)
			}
			again, err := batch.ReadRow(path, tt.opt, rows[1].Offset, rows[1].Index, rows[1].Line)
			if err != nil || !reflect.DeepEqual(again, rows[1]) {
				t.Errorf("ReadRow of the long row: %v", err)
			}
		})
	}
}

func TestJSONLLineEndings(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, content string }{
		{"LF", "{\"prompt\": \"a\"}\n{\"prompt\": \"b\"}\n"},
		{"CRLF", "{\"prompt\": \"a\"}\r\n{\"prompt\": \"b\"}\r\n"},
		{"no final newline", "{\"prompt\": \"a\"}\n{\"prompt\": \"b\"}"},
		{"BOM", "\xef\xbb\xbf{\"prompt\": \"a\"}\n{\"prompt\": \"b\"}\n"},
		{"trailing blank line", "{\"prompt\": \"a\"}\n{\"prompt\": \"b\"}\n\n"},
	}
	// Blank and whitespace-only lines are skipped (as jq and pandas do): a row's index and default
	// id count data rows, its line number stays the line in the file.
	t.Run("blank lines", func(t *testing.T) {
		content := "\n{\"prompt\": \"a\"}\n \t\r\n\n{\"prompt\": \"b\"}\n  \n"
		path := writeInput(t, "in.jsonl", content)
		if _, err := batch.Validate(path, defaults, 0); err != nil {
			t.Fatal(err)
		}
		rows := readAll(t, path, defaults)
		if len(rows) != 2 {
			t.Fatalf("got %d rows, want 2", len(rows))
		}
		for i, wantLine := range []int{2, 5} {
			r := rows[i]
			wantOff := int64(strings.Index(content, "{\"prompt\": \""+string(rune('a'+i))))
			if r.Index != i || r.Line != wantLine || r.Offset != wantOff || r.ID != fmt.Sprint(i+1) {
				t.Errorf("row %d = index %d line %d offset %d id %q, want line %d offset %d", i, r.Index, r.Line, r.Offset, r.ID, wantLine, wantOff)
			}
			again, err := batch.ReadRow(path, defaults, r.Offset, r.Index, r.Line)
			if err != nil || !reflect.DeepEqual(again, r) {
				t.Errorf("ReadRow(%d) = %+v, %v; want %+v", r.Offset, again, err, r)
			}
		}
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeInput(t, "in.jsonl", tt.content)
			if _, err := batch.Validate(path, defaults, 0); err != nil {
				t.Fatal(err)
			}
			rows := readAll(t, path, defaults)
			if len(rows) != 2 {
				t.Fatalf("got %d rows, want 2", len(rows))
			}
			for i, r := range rows {
				wantOff := int64(strings.Index(tt.content, "{\"prompt\": \""+string(rune('a'+i))))
				if r.Index != i || r.Line != i+1 || r.Offset != wantOff || r.ID != fmt.Sprint(i+1) {
					t.Errorf("row %d = index %d line %d offset %d id %q, want offset %d", i, r.Index, r.Line, r.Offset, r.ID, wantOff)
				}
			}
		})
	}
}

func TestCSVOffsets(t *testing.T) {
	t.Parallel()
	// Blank lines (skipped by encoding/csv) and multi-line fields must not
	// shift offsets or line numbers.
	content := "\xef\xbb\xbfid,prompt\r\n\r\na,\"one\r\ntwo\"\r\n\n\r\nb,three\nc,\"four\"\n"
	path := writeInput(t, "in.csv", content)
	rows := readAll(t, path, defaults)
	want := []struct {
		line   int
		offset int64
		id     string
	}{
		{3, int64(strings.Index(content, "a,")), "a"},
		{7, int64(strings.Index(content, "b,")), "b"},
		{8, int64(strings.Index(content, "c,")), "c"},
	}
	if len(rows) != len(want) {
		t.Fatalf("got %d rows, want %d", len(rows), len(want))
	}
	for i, w := range want {
		r := rows[i]
		if r.Index != i || r.Line != w.line || r.Offset != w.offset || r.ID != w.id {
			t.Errorf("row %d = index %d line %d offset %d id %q, want line %d offset %d id %q", i, r.Index, r.Line, r.Offset, r.ID, w.line, w.offset, w.id)
		}
		again, err := batch.ReadRow(path, defaults, r.Offset, r.Index, r.Line)
		if err != nil || !reflect.DeepEqual(again, r) {
			t.Errorf("ReadRow(%d) = %+v, %v; want %+v", r.Offset, again, err, r)
		}
	}
	if !bytes.Contains(rows[0].Body, []byte(`"text":"one\ntwo"`)) {
		t.Errorf("multi-line field body: %s", rows[0].Body)
	}
}

func TestNextReportsRowErrors(t *testing.T) {
	t.Parallel()
	path := writeInput(t, "in.jsonl", "{\"id\": \"a\", \"prompt\": \"x\"}\n{\"id\": \"b\", \"prompt\": \"\"}\n{\"id\": \"c\", \"prompt\": \"z\"}\n")
	r, err := batch.Open(path, defaults)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var ids []string
	for {
		row, err := r.Next()
		if err == io.EOF {
			break
		}
		var ie *batch.InputError
		if errors.As(err, &ie) {
			if row.ID != "b" || row.Index != 1 || ie.Line != 2 || row.Body != nil {
				t.Errorf("bad row = %+v, %v", row, err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, row.ID)
	}
	if strings.Join(ids, ",") != "a,c" {
		t.Errorf("good rows %v, want a,c", ids)
	}
}

func TestOpenHeaderError(t *testing.T) {
	t.Parallel()
	path := writeInput(t, "in.csv", "id,text\n1,a\n")
	_, err := batch.Open(path, defaults)
	var verr *batch.ValidationError
	if !errors.As(err, &verr) || len(verr.Errors) != 1 || verr.Errors[0].Line != 1 {
		t.Errorf("Open: %v, want one header problem", err)
	}
	if _, err := batch.ReadRow(path, defaults, 8, 0, 2); !errors.As(err, &verr) {
		t.Errorf("ReadRow: %v, want the header problem", err)
	}
}

func TestReadRowBadPosition(t *testing.T) {
	t.Parallel()
	path := writeInput(t, "in.jsonl", "{\"prompt\": \"a\"}\n")
	for _, off := range []int64{-1, 16, 1000} {
		if row, err := batch.ReadRow(path, defaults, off, 0, 1); err == nil {
			t.Errorf("ReadRow(%d) = %+v, want an error", off, row)
		}
	}
	// Mid-line offsets give a row error rather than a wrong row.
	if _, err := batch.ReadRow(path, defaults, 3, 0, 1); err == nil {
		t.Error("ReadRow(3) succeeded")
	}
}

func sha256Hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// checkRow is what the fuzz tests require of every row returned.
func checkRow(t *testing.T, r batch.Row) {
	t.Helper()
	if len(r.Body) == 0 || !utf8.Valid(r.Body) {
		t.Fatalf("row %+v: empty or invalid body", r)
	}
}

// A Row carries its request's completionOptions.maxTokens: the row's own (a number or the
// proto-JSON string), else the run's, else 0.
func TestRowMaxTokens(t *testing.T) {
	path := writeInput(t, "in.jsonl", `{"prompt":"a","completionOptions":{"maxTokens":"50"}}`+"\n"+
		`{"prompt":"b","completionOptions":{"maxTokens":20}}`+"\n"+`{"prompt":"c"}`+"\n")
	run := int64(7)
	for _, tc := range []struct {
		opt  batch.Options
		want []int64
	}{
		{defaults, []int64{50, 20, 0}},
		{batch.Options{Folder: defaults.Folder, Model: defaults.Model, MaxTokens: &run}, []int64{50, 20, 7}},
	} {
		rows := readAll(t, path, tc.opt)
		for i, r := range rows {
			if r.MaxTokens != tc.want[i] {
				t.Errorf("row %d: MaxTokens %d, want %d", i, r.MaxTokens, tc.want[i])
			}
			if again, err := batch.ReadRow(path, tc.opt, r.Offset, r.Index, r.Line); err != nil || again.MaxTokens != r.MaxTokens {
				t.Errorf("ReadRow of row %d: MaxTokens %d, %v", i, again.MaxTokens, err)
			}
		}
	}
}
