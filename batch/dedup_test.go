package batch_test

import (
	"reflect"
	"testing"

	"github.com/batchgpt/batchgpt/batch"
)

// groups runs ValidateDedup and returns its groups as leader index -> follower indexes.
func groups(t *testing.T, path string, opt batch.Options) map[int][]int {
	t.Helper()
	_, dups, err := batch.ValidateDedup(path, opt, 10, "scope")
	if err != nil {
		t.Fatalf("ValidateDedup: %v", err)
	}
	got := map[int][]int{}
	n := 0
	dups.Groups(func(leader int, fs []batch.Pos) bool {
		for _, f := range fs {
			got[leader] = append(got[leader], f.Index)
		}
		if fl := dups.Followers(leader); !reflect.DeepEqual(fl, fs) {
			t.Errorf("Followers(%d) = %v, Groups gave %v", leader, fl, fs)
		}
		n += len(fs)
		return true
	})
	if n != dups.Count() {
		t.Errorf("Count() = %d, groups hold %d", dups.Count(), n)
	}
	return got
}

func TestValidateDedupGroups(t *testing.T) {
	t.Parallel()
	sys := defaults
	sys.System = "Be brief."
	for _, tc := range []struct {
		name, file, content string
		opt                 batch.Options
		want                map[int][]int
	}{
		{"distinct", "in.jsonl", `{"prompt":"a"}` + "\n" + `{"prompt":"b"}` + "\n", defaults, map[int][]int{}},
		{"ids do not matter", "in.jsonl", `{"id":"x","prompt":"a"}` + "\n" + `{"id":"y","prompt":"b"}` + "\n" + `{"id":"z","prompt":"a"}` + "\n" + `{"prompt":"a"}` + "\n",
			defaults, map[int][]int{0: {2, 3}}},
		{"the run's defaults are part of the request", "in.jsonl",
			`{"prompt":"a"}` + "\n" + `{"prompt":"a","system":"Be brief."}` + "\n" + `{"messages":[{"role":"system","text":"Be brief."},{"role":"user","text":"a"}]}` + "\n",
			sys, map[int][]int{0: {1, 2}}},
		{"options make another request", "in.jsonl",
			`{"prompt":"a"}` + "\n" + `{"prompt":"a","completionOptions":{"temperature":0.5}}` + "\n" + `{"prompt":"a","modelUri":"yandexgpt"}` + "\n" + `{"prompt":"a","completionOptions":{"temperature":0.5}}` + "\n",
			defaults, map[int][]int{1: {3}}},
		{"a short model name is resolved", "in.jsonl",
			`{"prompt":"a","modelUri":"yandexgpt"}` + "\n" + `{"prompt":"a","modelUri":"gpt://b1gfolder/yandexgpt/latest"}` + "\n",
			defaults, map[int][]int{0: {1}}},
		{"schemas compare as sent", "in.jsonl",
			`{"prompt":"a","jsonSchema":{"schema":{"type":"object"}}}` + "\n" + `{"prompt":"a","jsonSchema":{"schema":{ "type" : "object" }}}` + "\n" + `{"prompt":"a","jsonObject":true}` + "\n",
			defaults, map[int][]int{0: {1}}},
		{"csv", "in.csv", "id,prompt\n1,hello\n2,world\n3,hello\n4,\"hello\"\n", defaults, map[int][]int{0: {2, 3}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := groups(t, writeInput(t, tc.file, tc.content), tc.opt)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("groups = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestValidateDedupScopesAndErrors(t *testing.T) {
	t.Parallel()
	path := writeInput(t, "in.jsonl", `{"prompt":"a"}`+"\n"+`{"prompt":"a"}`+"\n")
	_, d1, err := batch.ValidateDedup(path, defaults, 10, "https://one")
	if err != nil || d1.Count() != 1 {
		t.Fatalf("ValidateDedup = %v, %v", d1.Count(), err)
	}
	if batch.RequestKey("https://one", []byte("{}")) == batch.RequestKey("https://two", []byte("{}")) {
		t.Fatal("the same body sent to two scopes has one key")
	}
	bad := writeInput(t, "bad.jsonl", `{"prompt":"a"}`+"\n"+`{"promt":"a"}`+"\n")
	sum, dups, err := batch.ValidateDedup(bad, defaults, 10, "s")
	if err == nil || dups != nil || sum.SHA256 == "" {
		t.Fatalf("invalid input: sum %+v, dups %v, err %v", sum, dups, err)
	}
}

func TestDuplicatesFingerprintCollision(t *testing.T) {
	// Every request gets the same fingerprint: all rows form one group, and only a comparison of
	// the full keys (the caller's job) tells them apart.
	defer batch.SetFingerprint(func(batch.Key) uint64 { return 42 })()
	got := groups(t, writeInput(t, "in.jsonl", `{"prompt":"a"}`+"\n"+`{"prompt":"b"}`+"\n"+`{"prompt":"c"}`+"\n"), defaults)
	if want := map[int][]int{0: {1, 2}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("groups = %v, want %v", got, want)
	}
}

func TestRereader(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ file, content string }{
		{"in.jsonl", "{\"id\":\"a\",\"prompt\":\"one\"}\n\n{\"id\":\"b\",\"prompt\":\"two\"}\n{\"id\":\"c\",\"prompt\":\"three\"}\n"},
		{"in.csv", "id,prompt\na,one\nb,\"two\nlines\"\nc,three\n"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			path := writeInput(t, tc.file, tc.content)
			rd, err := batch.Open(path, defaults)
			if err != nil {
				t.Fatal(err)
			}
			var rows []batch.Row
			for {
				r, err := rd.Next()
				if err != nil {
					break
				}
				if r.Body != nil {
					rows = append(rows, r)
				}
			}
			rd.Close()
			rr, err := batch.OpenRereader(path, defaults)
			if err != nil {
				t.Fatal(err)
			}
			defer rr.Close()
			for i := len(rows) - 1; i >= 0; i-- { // any order
				want := rows[i]
				got, err := rr.Row(batch.Pos{Index: want.Index, Line: want.Line, Offset: want.Offset})
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("row %d = %+v, want %+v", i, got, want)
				}
			}
			if _, err := rr.Row(batch.Pos{Index: -1, Line: 1}); err == nil {
				t.Fatal("a negative index was read")
			}
			if got := batch.ModelOf(rows[0].Body); got != "gpt://b1gfolder/yandexgpt-lite/latest" {
				t.Fatalf("ModelOf = %q", got)
			}
		})
	}
}

func TestModelOf(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ body, want string }{
		{`{"modelUri":"gpt://f/yandexgpt/latest","completionOptions":{}}`, "gpt://f/yandexgpt/latest"},
		{`{"completionOptions":{},"modelUri":"gpt://f/m"}`, "gpt://f/m"},
		{`{"modelUri":"gpt://f/a\"b"}`, `gpt://f/a"b`},
		{`{"modelUri":`, ""},
		{`not json`, ""},
	} {
		if got := batch.ModelOf([]byte(tc.body)); got != tc.want {
			t.Errorf("ModelOf(%s) = %q, want %q", tc.body, got, tc.want)
		}
	}
}

func TestScanDedup(t *testing.T) {
	t.Parallel()
	// The same groups as ValidateDedup, and no id check: the caller knows the file was validated.
	path := writeInput(t, "in.jsonl", `{"id":"a","prompt":"x"}`+"\n"+`{"id":"a","prompt":"y"}`+"\n"+`{"id":"c","prompt":"x"}`+"\n")
	if _, _, err := batch.ValidateDedup(path, defaults, 10, "s"); err == nil {
		t.Fatal("ValidateDedup accepted a duplicate id")
	}
	sum, dups, err := batch.ScanDedup(path, defaults, "s")
	if err != nil || sum.Rows != 3 || sum.SHA256 == "" {
		t.Fatalf("ScanDedup = %+v, %v", sum, err)
	}
	if got := dups.Followers(0); len(got) != 1 || got[0].Index != 2 || got[0].Line != 3 {
		t.Fatalf("followers of row 0: %+v", got)
	}
}

func TestDuplicatesPositions(t *testing.T) {
	t.Parallel()
	// Every follower's line and offset are those the Reader gives the row, blank lines, multi-line
	// records and invalid rows before it included.
	for _, tc := range []struct{ file, content string }{
		{"in.jsonl", "\n{\"prompt\":\"a\"}\n\n\r\n{\"prompt\":\"b\"}\n{\"prompt\":\"a\"}\n\n{\"prompt\":\"b\"}\n{\"prompt\":\"a\"}"},
		{"in.csv", "\xef\xbb\xbfid,prompt\n1,a\n2,\"b\nb\"\n\n3,\"a\"\r\n\r\n4,\"b\nb\"\n5,a\n"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			path := writeInput(t, tc.file, tc.content)
			rows := readAll(t, path, defaults)
			_, dups, err := batch.ValidateDedup(path, defaults, 10, "s")
			if err != nil {
				t.Fatal(err)
			}
			if dups.Count() != 3 {
				t.Fatalf("%d followers, want 3", dups.Count())
			}
			dups.Groups(func(leader int, fs []batch.Pos) bool {
				for _, f := range fs {
					r := rows[f.Index]
					if f.Line != r.Line || f.Offset != r.Offset || string(r.Body) != string(rows[leader].Body) {
						t.Errorf("follower %+v of row %d; the reader's row: line %d, offset %d", f, leader, r.Line, r.Offset)
					}
				}
				return true
			})
		})
	}
}

func TestDuplicatesFingerprintCollisionKeepsPositions(t *testing.T) {
	// Colliding fingerprints group different requests; each row still has its own position, so
	// that comparing the full keys (the runner's job) tells them apart.
	defer batch.SetFingerprint(func(k batch.Key) uint64 { return uint64(k[0] & 1) })()
	path := writeInput(t, "in.jsonl", "{\"prompt\":\"a\"}\n\n{\"prompt\":\"b\"}\n{\"prompt\":\"c\"}\n{\"prompt\":\"a\"}\n{\"prompt\":\"d\"}\n")
	rows := readAll(t, path, defaults)
	_, dups, err := batch.ValidateDedup(path, defaults, 10, "s")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	dups.Groups(func(leader int, fs []batch.Pos) bool {
		for _, f := range fs {
			n++
			r := rows[f.Index]
			if f.Line != r.Line || f.Offset != r.Offset || f.Index <= leader {
				t.Errorf("follower %+v of row %d; the reader's row: line %d, offset %d", f, leader, r.Line, r.Offset)
			}
			same := batch.RequestKey("s", r.Body) == batch.RequestKey("s", rows[leader].Body)
			if same != (string(r.Body) == string(rows[leader].Body)) {
				t.Errorf("row %d and its leader %d: equal keys %v", f.Index, leader, same)
			}
		}
		return true
	})
	if n != len(rows)-2 && n != len(rows)-1 { // one group per fingerprint bit used
		t.Fatalf("%d followers of %d rows", n, len(rows))
	}
}
