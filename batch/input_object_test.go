package batch

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"
)

// FuzzParseObject checks the hand-written object splitter against
// encoding/json on valid JSON in valid UTF-8.
func FuzzParseObject(f *testing.F) {
	for _, s := range []string{
		`{}`, ` { "a" : 1 , "b":[1,{"c":"}"}], "d\"e": "x\\"}`, `{"a":{"b":{"c":[]}},"a":null}`,
		`["x", {"y": 2}, "]", 3.5e1, true, null]`, `"str"`, `{"\u0070rompt": "hi", "": ""}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !json.Valid(data) || !utf8.Valid(data) { // parseJSONL checks both first
			return
		}
		var want map[string]json.RawMessage
		isObj := json.Unmarshal(data, &want) == nil && want != nil
		obj, ok := parseObject(data, nil)
		if ok != isObj {
			t.Fatalf("parseObject ok = %v, encoding/json says object = %v", ok, isObj)
		}
		if ok {
			got := make(map[string]json.RawMessage)
			for _, m := range obj {
				got[m.key] = m.val // the last one wins, as in encoding/json
			}
			if len(got) != len(want) {
				t.Fatalf("got %d keys, want %d", len(got), len(want))
			}
			for k, v := range want {
				if !bytes.Equal(got[k], v) {
					t.Fatalf("key %q = %s, want %s", k, got[k], v)
				}
			}
		}
		var wantArr []json.RawMessage
		isArr := json.Unmarshal(data, &wantArr) == nil && wantArr != nil
		elems, ok := parseArray(data)
		if ok != isArr || len(elems) != len(wantArr) {
			t.Fatalf("parseArray = %d elems, %v; want %d, %v", len(elems), ok, len(wantArr), isArr)
		}
		for i := range elems {
			if !bytes.Equal(elems[i], wantArr[i]) {
				t.Fatalf("element %d = %s, want %s", i, elems[i], wantArr[i])
			}
		}
	})
}
