package api

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

func TestInt64Unmarshal(t *testing.T) {
	tests := []struct {
		in      string
		want    Int64
		wantErr bool
	}{
		{`"123"`, 123, false},
		{`123`, 123, false},
		{`"-7"`, -7, false},
		{`0`, 0, false},
		{`null`, 0, false},
		{`""`, 0, false},
		{`"9223372036854775807"`, 9223372036854775807, false},
		{`"9223372036854775808"`, 0, true},
		{`"abc"`, 0, true},
		{`1.5`, 0, true},
		{`"1e3"`, 0, true},
		{`true`, 0, true},
		{`{}`, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var v struct {
				N Int64 `json:"n"`
			}
			v.N = 42 // null must reset it
			err := json.Unmarshal([]byte(`{"n":`+tt.in+`}`), &v)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if err == nil && v.N != tt.want {
				t.Errorf("got %d, want %d", v.N, tt.want)
			}
		})
	}
}

func TestInt64Marshal(t *testing.T) {
	b, err := json.Marshal(Usage{InputTextTokens: 31, CompletionTokens: 10, TotalTokens: 41})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"inputTextTokens":31,"completionTokens":10,"totalTokens":41}`; string(b) != want {
		t.Errorf("got %s, want %s", b, want)
	}
	var back Usage
	if err := json.Unmarshal(b, &back); err != nil || back.TotalTokens != 41 {
		t.Errorf("round trip: %+v, %v", back, err)
	}
}

func TestOperationDecode(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		wantDone   bool
		wantFailed bool
		wantText   string
		wantTotal  Int64
	}{
		{
			name:     "running, done omitted (docs/api.md §3)",
			body:     `{"id":"d7qqr3frkl81js0udlr9","description":"Async GPT Completion","createdAt":"2023-11-30T18:31:32Z","metadata":null}`,
			wantDone: false,
		},
		{
			name:     "running",
			body:     `{"id":"d7qi6shlbvo5aaaaaaaa","done":false,"metadata":null}`,
			wantDone: false,
		},
		{
			name: "done with a response",
			body: `{"done":true,"id":"d7qo21o5fj1uaaaaaaaa","response":{"@type":"type.googleapis.com/yandex.cloud.ai.foundation_models.v1.CompletionResponse",
				"alternatives":[{"message":{"role":"assistant","text":"Hello"},"status":"ALTERNATIVE_STATUS_FINAL"}],
				"usage":{"inputTextTokens":"31","completionTokens":"10","totalTokens":"41"},"modelVersion":"18.01.2024"}}`,
			wantDone: true, wantText: "Hello", wantTotal: 41,
		},
		{
			name:     "failed, error before done",
			body:     `{"error":{"code":13,"message":"Internal error","details":[]},"done":true,"id":"d7qaaaaaaaaaaaaaaaaa"}`,
			wantDone: true, wantFailed: true,
		},
		{
			name:     "error with code 0 is not a failure",
			body:     `{"done":true,"id":"d7qaaaaaaaaaaaaaaaaa","error":{"code":0,"message":""}}`,
			wantDone: true, wantFailed: false,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var op Operation
			if err := json.Unmarshal([]byte(tt.body), &op); err != nil {
				t.Fatal(err)
			}
			if op.ID == "" {
				t.Error("no id")
			}
			if op.Done != tt.wantDone || op.Failed() != tt.wantFailed {
				t.Errorf("done, failed = %v, %v; want %v, %v", op.Done, op.Failed(), tt.wantDone, tt.wantFailed)
			}
			if tt.wantText != "" {
				if op.Response == nil || len(op.Response.Alternatives) != 1 {
					t.Fatalf("response = %+v", op.Response)
				}
				alt := op.Response.Alternatives[0]
				if alt.Message.Text != tt.wantText || alt.Status != "ALTERNATIVE_STATUS_FINAL" || op.Response.Usage.TotalTokens != tt.wantTotal {
					t.Errorf("alternative %+v, usage %+v", alt, op.Response.Usage)
				}
			}
		})
	}
}

// FuzzInt64 checks that Int64 accepts exactly what strconv.ParseInt accepts, quoted or not.
func FuzzInt64(f *testing.F) {
	for _, s := range []string{`"123"`, `123`, `null`, `"-1"`, `"x"`, `1.5`, `""`, `"9223372036854775808"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var n Int64
		err := n.UnmarshalJSON([]byte(s))
		inner := strings.Trim(s, `"`)
		if inner == "" || inner == "null" {
			if err != nil || n != 0 {
				t.Fatalf("%q: %d, %v; want 0, nil", s, n, err)
			}
			return
		}
		want, werr := strconv.ParseInt(inner, 10, 64)
		if (err == nil) != (werr == nil) || err == nil && int64(n) != want {
			t.Fatalf("%q: %d, %v; want %d, %v", s, n, err, want, werr)
		}
	})
}

// TestAlternativeStatusDecode checks every status of the proto enum (docs/api.md §3), by name and
// by number.
func TestAlternativeStatusDecode(t *testing.T) {
	tests := []struct {
		json string
		want AlternativeStatus
	}{
		{`"ALTERNATIVE_STATUS_FINAL"`, AltFinal},
		{`"ALTERNATIVE_STATUS_TRUNCATED_FINAL"`, AltTruncatedFinal},
		{`"ALTERNATIVE_STATUS_CONTENT_FILTER"`, AltContentFilter},
		{`0`, AltUnspecified},
		{`1`, AltPartial},
		{`2`, AltTruncatedFinal},
		{`3`, AltFinal},
		{`4`, AltContentFilter},
		{`5`, AltToolCalls},
		{`9`, "9"},
		{`null`, ""},
		{`"SOMETHING_NEW"`, "SOMETHING_NEW"},
	}
	for _, tt := range tests {
		t.Run(tt.json, func(t *testing.T) {
			var a Alternative
			body := `{"message":{"role":"assistant","text":"x"},"status":` + tt.json + `}`
			if err := json.Unmarshal([]byte(body), &a); err != nil {
				t.Fatal(err)
			}
			if a.Status != tt.want {
				t.Fatalf("status %q, want %q", a.Status, tt.want)
			}
		})
	}
	var a Alternative
	if err := json.Unmarshal([]byte(`{"status":true}`), &a); err == nil {
		t.Fatal("a boolean status was accepted")
	}
}
