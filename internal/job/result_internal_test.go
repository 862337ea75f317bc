package job

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
)

// TestEachResultWanted: a pass for some ids gets exactly their lines, in both formats, whether
// the id can be read without decoding the line or not.
func TestEachResultWanted(t *testing.T) {
	ids := []string{"a", "b", "x<y", `q"uote`, "зеркало", "c", `back\slash`, "d"}
	wanted := map[string]bool{"b": true, "x<y": true, "зеркало": true, `back\slash`: true}
	for _, format := range []string{FormatJSONL, FormatCSV} {
		t.Run(format, func(t *testing.T) {
			data, err := Preamble(format)
			if err != nil {
				t.Fatal(err)
			}
			cols := csvColumns
			for _, id := range ids {
				line, err := (&Result{ID: id, Status: StatusSucceeded, Text: "answer to " + id}).Encode(format, cols)
				if err != nil {
					t.Fatal(err)
				}
				data = append(data, line...)
			}
			if format == FormatJSONL {
				data = append(data, `{"status":"succeeded","id":"c"}`+"\n"...) // an id not first: decoded to be known
			}
			path := filepath.Join(t.TempDir(), "results."+format)
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			var asked, got []string
			want := func(id []byte) bool { asked = append(asked, string(id)); return wanted[string(id)] }
			if err := eachResult(path, format, -1, want, func(r *Result, _ int64) {
				if r.Text != "answer to "+r.ID {
					t.Errorf("row %q: text %q", r.ID, r.Text)
				}
				got = append(got, r.ID)
			}); err != nil {
				t.Fatal(err)
			}
			if w := []string{"b", "x<y", "зеркало", `back\slash`}; !slices.Equal(got, w) {
				t.Fatalf("lines given: %q, want %q (ids asked about: %q)", got, w, asked)
			}
			var all []string
			if err := EachResult(path, format, -1, func(r *Result, _ int64) { all = append(all, r.ID) }); err != nil || len(all) < len(ids) {
				t.Fatalf("EachResult: %q, %v", all, err)
			}
		})
	}
}

func TestPlainID(t *testing.T) {
	for _, tc := range []struct {
		line, id string
		ok       bool
	}{
		{`{"id":"r1","status":"succeeded"}` + "\n", "r1", true},
		{`{"id":"зеркало","text":"x"}`, "зеркало", true},
		{`{"id":"a\u003cb"}`, "", false},
		{`{"id":"q\"x"}`, "", false},
		{`{"status":"failed","id":"r1"}`, "", false},
		{`{"id":"unterminated`, "", false},
		{``, "", false},
	} {
		id, ok := plainID([]byte(tc.line))
		if ok != tc.ok || string(id) != tc.id {
			t.Errorf("plainID(%q) = %q, %v; want %q, %v", tc.line, id, ok, tc.id, tc.ok)
		}
	}
}

// FuzzResultLine checks the decoder of results lines against encoding/json: a line that one
// accepts the other must accept too, with the same Result.
func FuzzResultLine(f *testing.F) {
	for _, r := range []Result{
		{ID: "r1", Status: StatusSucceeded, Text: "answer", Usage: &Usage{InputTokens: 1, CompletionTokens: 2, TotalTokens: 3}, Attempts: 1},
		{ID: "зеркало <&>", Status: StatusFailed, Error: &ResultError{Kind: "gave-up", Message: "x\u2028y"}},
		{ID: "c", Status: StatusSucceeded, Cached: true, CachedAt: "2026-11-30T00:00:00Z", DeduplicatedFrom: "a", Truncated: true},
	} {
		line, _ := r.Encode(FormatJSONL, nil)
		f.Add(line)
	}
	for _, s := range []string{`{"id":1}`, `{"ID":"x","STATUS":"ok"}`, `{"id":"a","id":"b"}`, `{"usage":null}`,
		`{"attempts":1e3}`, `{"attempts":99999999999999999999}`, `{"text":"\ud800"}`, "{\"text\":\"\xff\"}", `{"id":"x"} `, `{"id":"x"}{}`,
		`[]`, `null`, `{"error":{"kind":"k","code":7}}`, `{"usage":{"input_tokens":"5"}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		var std, ours Result
		errStd := json.Unmarshal(line, &std)
		errOurs := decodeResult(line, &ours)
		if (errStd == nil) != (errOurs == nil) {
			t.Fatalf("%q: encoding/json says %v, decodeResult %v", line, errStd, errOurs)
		}
		if errStd == nil && !reflect.DeepEqual(std, ours) {
			t.Fatalf("%q:\nencoding/json %+v\ndecodeResult  %+v", line, std, ours)
		}
	})
}
