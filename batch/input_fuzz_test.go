package batch_test

import (
	"errors"
	"io"
	"reflect"
	"testing"

	"github.com/batchgpt/batchgpt/batch"
)

// fuzzInput checks the invariants shared by both formats: no panics; every
// row returned has a valid body and can be read again at its offset; a file
// that validates yields exactly its rows without errors.
func fuzzInput(t *testing.T, name string, data []byte, opt batch.Options) {
	path := writeInput(t, name, string(data))
	sum, verr := batch.Validate(path, opt, 10)
	var ve *batch.ValidationError
	if verr != nil && !errors.As(verr, &ve) {
		t.Fatalf("Validate: %v", verr)
	}
	if sum.Size != int64(len(data)) {
		t.Fatalf("Size = %d, want %d", sum.Size, len(data))
	}
	r, err := batch.Open(path, opt)
	if err != nil {
		if verr == nil {
			t.Fatalf("Open: %v after a clean Validate", err)
		}
		return
	}
	defer r.Close()
	n := 0
	for {
		row, err := r.Next()
		if err == io.EOF {
			break
		}
		var ie *batch.InputError
		if errors.As(err, &ie) {
			if verr == nil {
				t.Fatalf("Next: %v after a clean Validate", err)
			}
			if row.Body != nil {
				t.Fatalf("row with an error has a body: %+v", row)
			}
			continue
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		n++
		checkRow(t, row)
		again, err := batch.ReadRow(path, opt, row.Offset, row.Index, row.Line)
		if err != nil || !reflect.DeepEqual(again, row) {
			t.Fatalf("ReadRow(%d) = %+v, %v\nwant %+v", row.Offset, again, err, row)
		}
	}
	if verr == nil && n != sum.Rows {
		t.Fatalf("Next gave %d rows, Validate counted %d", n, sum.Rows)
	}
}

func FuzzJSONL(f *testing.F) {
	for _, s := range []string{
		"{\"prompt\": \"hi\"}\n",
		"{\"id\": 7, \"prompt\": \"a\", \"system\": \"s\"}\r\n{\"id\": \"7\", \"prompt\": \"b\"}",
		"\xef\xbb\xbf{\"messages\": [{\"role\": \"user\", \"text\": \"q\"}, {\"role\": \"assistant\", \"text\": \"a\"}, {\"role\": \"user\", \"text\": \"q2\"}]}\n\n",
		"{\"prompt\": \"x\", \"completionOptions\": {\"temperature\": 0.5, \"maxTokens\": \"10\", \"reasoningOptions\": {\"mode\": \"DISABLED\"}}, \"jsonSchema\": {\"schema\": {}}}\n",
		"{\"prompt\": \"\\u00e9\\ud800\", \"jsonObject\": true, \"modelUri\": \"gpt://f/m/latest\"}\n",
		"{\"prompt\": \"a\xff\"}\n\n\n{\"promt\": 1}\n[]\nnull\n{",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzInput(t, "in.jsonl", data, defaults)
	})
}

func FuzzCSV(f *testing.F) {
	for _, s := range []string{
		"id,prompt\n1,hello\n",
		"\xef\xbb\xbfid,prompt,system\r\n1,\"a\r\nb\",s\r\n\r\n2,\"say \"\"hi\"\"\",\r\n",
		"prompt\n\"unterminated\n",
		"id,prompt\n1,a,b\n2\n3,\"x\"y\n,\xff\n",
		"text,lang\nКошка,English\n",
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, useTemplate bool) {
		opt := defaults
		opt.SystemColumn = ""
		if useTemplate {
			opt.Template = "Translate to {{index . \"lang\"}}: {{.text}}"
		}
		fuzzInput(t, "in.csv", data, opt)
	})
}
