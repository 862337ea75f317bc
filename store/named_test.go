package store_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/store"
)

const testModel = "gpt://b1gexample/yandexgpt-lite/latest"

// oddID is a row id with everything a JSON string must escape or may carry.
const oddID = "say \"hi\"\nto Zoë\t— 東京 <&> \\ \u2028 \x01"

// named is the name of a row with id id.
func named(id string) store.Named {
	return store.Named{ID: id, Key: sha256.Sum256([]byte("key of " + id)), Model: testModel}
}

func diffNamed(t *testing.T, got, want map[int]store.Named) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !maps.Equal(got, want) {
		t.Errorf("Named:\ngot  %+v\nwant %+v", got, want)
	}
}

// keyHex is a valid key field.
var keyHex = strings.Repeat("0123456789abcdef", 4)

func TestNamed(t *testing.T) {
	t.Parallel()
	w, ckpt, results := newRun(t, 8, "id,answer\n")
	n := func(row int) store.Named { return named(fmt.Sprintf("row %d", row)) }
	names := map[int]store.Named{0: n(0), 1: named(oddID), 2: named("a b"), 3: n(3), 4: n(4)}
	for row := range 5 {
		must(t, w.Name(row, names[row]))
		must(t, w.Intent(row, 1))
		if row != 2 {
			must(t, w.Submitted(row, 1, fmt.Sprint("op", row), t0))
		}
	}
	must(t, w.Result(0, false, []byte("0,resolved\n"))) // drops its name
	must(t, w.Reopen(3))                                // keeps it
	// Resolved, reopened, named anew and submitted again.
	must(t, w.Result(4, true, []byte("4,failed\n")))
	must(t, w.Reopen(4))
	names[4] = store.Named{ID: "row 4, second name", Key: [32]byte{4}, Model: "gpt://other/model"}
	must(t, w.Name(4, names[4]))
	must(t, w.Intent(4, 2))
	// Named after its resolution, without a reopen: not an open row.
	must(t, w.Intent(6, 1))
	must(t, w.Result(6, false, []byte("6,ok\n")))
	must(t, w.Name(6, n(6)))
	must(t, w.Close())
	delete(names, 0)
	want := maps.Clone(names)

	st := load(t, ckpt)
	diffNamed(t, st.Named, want)
	if len(st.Problems) != 0 || st.DroppedBytes != 0 {
		t.Fatalf("problems %q dropped %d", st.Problems, st.DroppedBytes)
	}
	rows := store.Rows(st)

	w2, st2, err := store.Open(ckpt)
	must(t, err)
	defer w2.Close()
	diffNamed(t, st2.Named, want)
	t.Run("compact", func(t *testing.T) {
		must(t, w2.Compact())
		snap := readFile(t, ckpt)
		st := load(t, ckpt)
		diffNamed(t, st.Named, want)
		diffRows(t, store.Rows(st), rows)
		// Each name comes just before the row's other records.
		lines := strings.Split(snap, "\n")
		for row := range want {
			i := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, fmt.Sprintf("N %d ", row)) })
			if i < 0 || i+1 >= len(lines) || !strings.HasPrefix(lines[i+1], fmt.Sprintf("I %d ", row)) &&
				!strings.HasPrefix(lines[i+1], fmt.Sprintf("S %d ", row)) {
				t.Errorf("row %d: name at line %d of\n%s", row, i, snap)
			}
		}
		if strings.Count(snap, "\nN ") != len(want) {
			t.Errorf("snapshot has %d N records, want %d:\n%s", strings.Count(snap, "\nN "), len(want), snap)
		}
	})
	t.Run("reopen", func(t *testing.T) {
		// Appending after a compact, then reopening, keeps them too.
		must(t, w2.Submitted(2, 1, "op2", t0))
		must(t, w2.Close())
		w3, st, err := store.Open(ckpt)
		must(t, err)
		defer w3.Close()
		diffNamed(t, st.Named, want)
		if st.Row(2).OpID != "op2" || st.Header.Version != store.Version {
			t.Errorf("row 2 %+v, version %d", st.Row(2), st.Header.Version)
		}
		// Finalize needs every row resolved, so it leaves no name.
		for row := range st.Len() {
			if st.Row(row).Phase != store.PhaseResolved {
				must(t, w3.Result(row, false, []byte(fmt.Sprintf("%d,done\n", row))))
			}
		}
		must(t, w3.Flush())
		if st := load(t, ckpt); len(st.Named) != 0 {
			t.Errorf("all resolved: Named %+v", st.Named)
		}
		must(t, w3.Finalize(true))
		st = load(t, ckpt)
		if len(st.Named) != 0 || st.Counts().Succeeded+st.Counts().Failed != 8 || len(st.Problems) != 0 {
			t.Errorf("after Finalize: Named %+v counts %+v problems %q", st.Named, st.Counts(), st.Problems)
		}
		if got := readFile(t, results); !strings.HasPrefix(got, "id,answer\n0,resolved\n1,done\n") {
			t.Errorf("results %q", got)
		}
	})
}

// TestNamedRepair: rows whose result lines are gone go back to open with
// their names, which the loader had dropped when they were resolved.
func TestNamedRepair(t *testing.T) {
	t.Parallel()
	w, ckpt, results := newRun(t, 4, "h\n")
	for row := range 3 {
		must(t, w.Name(row, named(fmt.Sprint("row ", row))))
		must(t, w.Intent(row, 1))
		must(t, w.Submitted(row, 1, fmt.Sprint("op", row), t0))
	}
	must(t, w.Result(0, false, []byte("r0\n")))
	must(t, w.Result(1, false, []byte("r1\n")))
	must(t, w.Name(3, named("row 3")))
	must(t, w.Intent(3, 1))
	must(t, w.Result(3, true, []byte("r3\n")))
	must(t, w.Close())
	if st := load(t, ckpt); !maps.Equal(st.Named, map[int]store.Named{2: named("row 2")}) {
		t.Fatalf("Named %+v", st.Named)
	}
	must(t, os.WriteFile(results, []byte("h\nr0\n"), 0o600)) // rows 1 and 3 lost their lines
	want := map[int]store.Named{1: named("row 1"), 2: named("row 2"), 3: named("row 3")}
	w2, st, err := store.Open(ckpt)
	must(t, err)
	diffNamed(t, st.Named, want)
	if st.Row(1).Phase != store.PhaseSubmitted || st.Row(3).Phase != store.PhaseNew {
		t.Errorf("rows %+v", store.Rows(st))
	}
	must(t, w2.Close())
	diffNamed(t, load(t, ckpt).Named, want) // journaled
	w3, _, err := store.Open(ckpt)
	must(t, err)
	defer w3.Close()
	must(t, w3.Compact())
	diffNamed(t, load(t, ckpt).Named, want)
}

func TestNameValidation(t *testing.T) {
	t.Parallel()
	w, ckpt, _ := newRun(t, 3, "")
	good := named("ok")
	with := func(f func(*store.Named)) store.Named {
		n := good
		f(&n)
		return n
	}
	for name, err := range map[string]error{
		"row -1":        w.Name(-1, good),
		"row 3":         w.Name(3, good),
		"empty model":   w.Name(0, with(func(n *store.Named) { n.Model = "" })),
		"model space":   w.Name(0, with(func(n *store.Named) { n.Model = "gpt://a b" })),
		"model newline": w.Name(0, with(func(n *store.Named) { n.Model = "gpt://a\nb" })),
		"model DEL":     w.Name(0, with(func(n *store.Named) { n.Model = "gpt://a\x7f" })),
		"model long":    w.Name(0, with(func(n *store.Named) { n.Model = strings.Repeat("m", 257) })),
		"empty id":      w.Name(0, with(func(n *store.Named) { n.ID = "" })),
		"id not UTF-8":  w.Name(0, with(func(n *store.Named) { n.ID = "a\xffb" })),
		"id long":       w.Name(0, with(func(n *store.Named) { n.ID = strings.Repeat("i", 64<<10) })),
		"id long coded": w.Name(0, with(func(n *store.Named) { n.ID = strings.Repeat("\x01", 11<<10) })), // \u0001 each
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	// Bad calls queue nothing and are not sticky; the longest ids and models pass.
	long := store.Named{ID: strings.Repeat("i", 64<<10-2), Key: [32]byte{0xff}, Model: strings.Repeat("m", 256)}
	must(t, w.Name(1, long))
	must(t, w.Name(2, good))
	must(t, w.Close())
	st := load(t, ckpt)
	diffNamed(t, st.Named, map[int]store.Named{1: long, 2: good})
	if err := w.Name(0, good); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Name after Close: %v", err)
	}
}

// TestNamedParse: N records that are not exactly right are skipped and
// reported like any other damaged record in the middle of the journal.
func TestNamedParse(t *testing.T) {
	t.Parallel()
	good := func(rest string) string { return "N 1 " + keyHex + " " + testModel + " " + rest }
	tests := []struct {
		name, payload string
		want          *store.Named // nil: rejected
		reason        string
	}{
		{"plain", good(`"row 1"`), &store.Named{ID: "row 1", Model: testModel}, ""},
		{"escapes", good(`"a\"b\\c\n\u00e9\u6771 \/ \t"`), &store.Named{ID: "a\"b\\c\né東 / \t", Model: testModel}, ""},
		{"raw UTF-8", good(`"Zoë 東京"`), &store.Named{ID: "Zoë 東京", Model: testModel}, ""},
		{"uppercase hex", "N 1 " + strings.ToUpper(keyHex) + " " + testModel + ` "x"`, nil, "bad request key"},
		{"63 digits", "N 1 " + keyHex[:63] + " " + testModel + ` "x"`, nil, "bad request key"},
		{"65 digits", "N 1 " + keyHex + "0 " + testModel + ` "x"`, nil, "bad request key"},
		{"not hex", "N 1 " + keyHex[:63] + "g " + testModel + ` "x"`, nil, "bad request key"},
		{"no key", "N 1", nil, "bad request key"},
		{"model with a space", "N 1 " + keyHex + ` gpt://a b "x"`, nil, "bad row id"},
		{"model control", "N 1 " + keyHex + " gpt://a\x01b \"x\"", nil, "bad model URI"},
		{"model long", "N 1 " + keyHex + " " + strings.Repeat("m", 257) + ` "x"`, nil, "bad model URI"},
		{"no model", "N 1 " + keyHex + ` "x"`, nil, "bad row id"},
		{"no id", good("")[:len(good(""))-1], nil, "bad row id"},
		{"empty id", good(`""`), nil, "bad row id"},
		{"id not quoted", good(`row1`), nil, "bad row id"},
		{"id number", good(`123`), nil, "bad row id"},
		{"id null", good(`null`), nil, "bad row id"},
		{"id array", good(`["x"]`), nil, "bad row id"},
		{"id single quotes", good(`'x'`), nil, "bad row id"},
		{"trailing garbage", good(`"x" y`), nil, "bad row id"},
		{"trailing quote", good(`"x""`), nil, "bad row id"},
		{"two strings", good(`"x" "y"`), nil, "bad row id"},
		{"escaped then more", good(`"x\n" "y"`), nil, "bad row id"},
		{"trailing space", good(`"x" `), nil, "bad row id"},
		{"leading space", good(` "x"`), nil, "bad row id"},
		{"unterminated", good(`"x\"`), nil, "bad row id"},
		{"raw tab", good("\"a\tb\""), nil, "bad row id"},
		{"bad escape", good(`"\x41"`), nil, "bad row id"},
		{"short unicode escape", good(`"\u12"`), nil, "bad row id"},
		{"invalid UTF-8", good("\"a\xffb\""), nil, "bad row id"},
		{"escaped empty", good(`"\u0000"`), &store.Named{ID: "\x00", Model: testModel}, ""},
		{"id too long", good(`"` + strings.Repeat("x", 64<<10) + `"`), nil, "bad row id"},
		{"row out of range", "N 4 " + keyHex + " " + testModel + ` "x"`, nil, "row out of range"},
		{"negative row", "N -1 " + keyHex + " " + testModel + ` "x"`, nil, "malformed record"},
	}
	h := header(4, "/nonexistent/results")
	h.Version = store.Version
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			b.Write(store.HeaderRecord(h, nil))
			b.Write(store.Record(tt.payload))
			b.Write(store.Record("I 1 1")) // the N record is in the middle
			st, err := store.LoadReader(&b)
			must(t, err)
			if st.Row(1).Phase != store.PhaseInFlight || st.DroppedBytes != 0 {
				t.Fatalf("row 1 %+v, dropped %d", st.Row(1), st.DroppedBytes)
			}
			if tt.want == nil {
				if len(st.Named) != 0 || len(st.Problems) != 1 || !strings.Contains(st.Problems[0], "line 2: "+tt.reason) {
					t.Errorf("Named %+v, problems %q, want one for line 2 with %q", st.Named, st.Problems, tt.reason)
				}
				return
			}
			want := *tt.want
			for i := range want.Key { // keyHex
				want.Key[i] = byte(i%8*0x22 + 0x01)
			}
			if len(st.Problems) != 0 {
				t.Errorf("problems %q", st.Problems)
			}
			diffNamed(t, st.Named, map[int]store.Named{1: want})
		})
	}
}

// TestNamedTorn: a torn N record at the end of the log is dropped cleanly,
// at every byte; a damaged one in the middle is skipped and reported.
func TestNamedTorn(t *testing.T) {
	t.Parallel()
	w, ckpt, _ := newRun(t, 3, "h\n")
	must(t, w.Name(0, named("zero")))
	must(t, w.Intent(0, 1))
	must(t, w.Name(1, named(oddID)))
	must(t, w.Close())
	data := []byte(readFile(t, ckpt))
	last := lastRecordStart(data)
	if !bytes.HasPrefix(data[last:], []byte("N 1 ")) {
		t.Fatalf("last record %q", data[last:])
	}
	prefix := map[int]store.Named{0: named("zero")}
	check := func(t *testing.T, content []byte, dropped int) {
		t.Helper()
		must(t, os.WriteFile(ckpt, content, 0o600))
		st := load(t, ckpt)
		diffNamed(t, st.Named, prefix)
		if st.DroppedBytes != int64(dropped) || len(st.Problems) != 0 || st.Row(0).Phase != store.PhaseInFlight {
			t.Errorf("dropped %d (want %d), problems %q, row 0 %+v", st.DroppedBytes, dropped, st.Problems, st.Row(0))
		}
		w, st, err := store.Open(ckpt)
		must(t, err)
		must(t, w.Close())
		diffNamed(t, st.Named, prefix)
		if got := readFile(t, ckpt); got != string(data[:last]) {
			t.Errorf("Open left %d bytes, want %d", len(got), last)
		}
	}
	for cut := last; cut < len(data); cut++ {
		t.Run(fmt.Sprint("cut", cut), func(t *testing.T) { check(t, data[:cut], cut-last) })
	}
	for i := last; i < len(data)-1; i++ {
		bad := slices.Clone(data)
		bad[i] ^= 0x20
		t.Run(fmt.Sprint("flip", i), func(t *testing.T) { check(t, bad, len(data)-last) })
	}
	// The same damage followed by a good record: skipped and reported.
	for i := last; i < len(data)-1; i++ {
		bad := append(slices.Clone(data), store.Record("I 2 1")...)
		bad[i] ^= 0x20
		st, err := store.LoadReader(bytes.NewReader(bad))
		must(t, err)
		diffNamed(t, st.Named, prefix)
		if len(st.Problems) != 1 || !strings.Contains(st.Problems[0], "line 4:") || st.Row(2).Phase != store.PhaseInFlight {
			t.Errorf("flip %d: problems %q, row 2 %+v", i, st.Problems, st.Row(2))
		}
	}
}

// TestVersion1: checkpoints written before version 2 load (without names), can
// be opened and appended to, and a snapshot of one is a checkpoint of the
// current version.
func TestVersion1(t *testing.T) {
	dir, err := filepath.Abs("testdata/journal")
	must(t, err)
	// Each version-1 file and the version-2 and version-3 goldens of the same
	// calls (plus Name) replay to the same rows.
	for _, files := range []struct {
		v1, v2, v3, v4 string
		names          int // open rows named in v2 to v4
	}{
		{"v1.ckpt", "v2.ckpt", "v3.ckpt", "v4.ckpt", 1},
		{"snapshot.ckpt", "snapshot-v2.ckpt", "snapshot-v3.ckpt", "snapshot-v4.ckpt", 2},
		{"finalize-intent.ckpt", "finalize-intent-v2.ckpt", "finalize-intent-v3.ckpt", "finalize-intent-v4.ckpt", 0},
	} {
		t.Run(files.v1, func(t *testing.T) {
			v1, err := store.LoadReader(bytes.NewReader([]byte(readFile(t, filepath.Join(dir, files.v1)))))
			must(t, err)
			for version, name := range []string{2: files.v2, 3: files.v3, 4: files.v4} {
				if name == "" {
					continue
				}
				vn, err := store.LoadReader(bytes.NewReader([]byte(readFile(t, filepath.Join(dir, name)))))
				must(t, err)
				if v1.Header.Version != 1 || vn.Header.Version != version || len(v1.Named) != 0 || len(vn.Named) != files.names {
					t.Errorf("%s: versions %d, %d; names %d, %d", name, v1.Header.Version, vn.Header.Version, len(v1.Named), len(vn.Named))
				}
				diffRows(t, store.Rows(vn), store.Rows(v1))
				if len(v1.Problems)+len(vn.Problems) != 0 || v1.ResultsEnd != vn.ResultsEnd || v1.Doubts != vn.Doubts {
					t.Errorf("%s: problems %q %q, ResultsEnd %d %d, Doubts %d %d", name, v1.Problems, vn.Problems,
						v1.ResultsEnd, vn.ResultsEnd, v1.Doubts, vn.Doubts)
				}
			}
		})
	}

	v1 := readFile(t, filepath.Join(dir, "v1.ckpt"))
	t.Chdir(t.TempDir()) // the header names results.csv
	must(t, os.WriteFile("run.ckpt", []byte(v1), 0o600))
	st := load(t, "run.ckpt")
	diffRows(t, store.Rows(st), goldenRows)
	if len(st.Named) != 0 || st.Header.Version != 1 {
		t.Errorf("Named %+v, version %d", st.Named, st.Header.Version)
	}
	must(t, os.WriteFile("results.csv", []byte("id,answer\n0,hello\n"), 0o600))
	w, st, err := store.Open("run.ckpt")
	must(t, err)
	if len(st.Problems) != 0 || len(st.Named) != 0 {
		t.Errorf("problems %q Named %+v", st.Problems, st.Named)
	}
	must(t, w.Name(3, named("three")))
	must(t, w.Intent(3, 1))
	must(t, w.Submitted(3, 1, "op3", time.UnixMilli(1)))
	must(t, w.Flush())
	if got := readFile(t, "run.ckpt"); !strings.HasPrefix(got, v1) {
		t.Error("appending rewrote the version-1 journal")
	}
	st = load(t, "run.ckpt")
	want := slices.Clone(goldenRows)
	want[3] = store.Row{Phase: store.PhaseSubmitted, Attempt: 1, OpID: "op3", SubmittedAt: 1}
	diffRows(t, store.Rows(st), want)
	diffNamed(t, st.Named, map[int]store.Named{3: named("three")})
	if st.Header.Version != 1 || len(st.Problems) != 0 {
		t.Errorf("version %d problems %q", st.Header.Version, st.Problems)
	}
	must(t, w.Compact())
	must(t, w.Close())
	st = load(t, "run.ckpt")
	diffRows(t, store.Rows(st), want)
	diffNamed(t, st.Named, map[int]store.Named{3: named("three")})
	if st.Header.Version != store.Version {
		t.Errorf("snapshot version %d", st.Header.Version)
	}
}

// TestEachNamed reads every N record of a journal in order: a row named again comes twice, the
// latest last; a damaged record and a torn tail are skipped; an error from the callback ends the
// pass and comes back.
func TestEachNamed(t *testing.T) {
	t.Parallel()
	h := header(4, "/nonexistent/results")
	h.Version = store.Version
	var data []byte
	data = append(data, store.HeaderRecord(h, []byte("pre\n"))...)
	data = append(data, store.Record("N 0 "+keyHex+" "+testModel+` "first"`)...)
	data = append(data, store.Record("R 0 0 9")...)
	data = append(data, store.Record("N 1 "+keyHex+` gpt://other "sec\"ond"`)...)
	bad := store.Record("N 2 " + keyHex + " m \"damaged\"")
	bad[4] ^= 1 // the checksum no longer matches
	data = append(data, bad...)
	data = append(data, store.Record("U 0")...)
	data = append(data, store.Record("N 0 "+keyHex+" "+testModel+` "first, again"`)...)
	data = append(data, store.Record("N 9 "+keyHex+" m \"no such row\"")...)
	data = append(data, "N 3 "+keyHex+" m \"torn"...)

	type got struct {
		row       int
		id, model string
	}
	var seen []got
	err := store.EachNamedReader(data, func(row int, n store.Named) error {
		if n.Key != [32]byte(bytes.Repeat([]byte{0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef}, 4)) {
			t.Errorf("row %d: key %x", row, n.Key)
		}
		seen = append(seen, got{row, n.ID, n.Model})
		return nil
	})
	want := []got{{0, "first", testModel}, {1, `sec"ond`, "gpt://other"}, {0, "first, again", testModel}}
	if err != nil || !slices.Equal(seen, want) {
		t.Fatalf("EachNamed: %v, %v; want %v", seen, err, want)
	}
	stop := errors.New("stop")
	calls := 0
	err = store.EachNamedReader(data, func(int, store.Named) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("a callback's error: %v after %d calls, want stop after 1", err, calls)
	}
}

// FuzzEachNamed checks EachNamed against the loader: the latest name it gives of each row is the
// name a load that keeps every row's name ends with, whatever follows the header.
func FuzzEachNamed(f *testing.F) {
	h := header(4, "/nonexistent/results")
	h.Version = store.Version
	hdr := store.HeaderRecord(h, []byte("pre\n"))
	for _, seed := range [][]byte{
		nil,
		store.Record("N 0 " + keyHex + " " + testModel + ` "row 0"`),
		append(store.Record("N 2 "+keyHex+" m \"x\""), append(store.Record("R 2 0 9"), store.Record("N 2 "+keyHex+" m \"y\"")...)...),
		append(store.Record("N 3 "+keyHex+" m \"x\""), append(store.Record("R 3 0 9"), append(store.Record("U 3"), store.Record("N 3 "+keyHex+" m \"z\"")...)...)...),
		append(store.Record("N 1 "+keyHex+" m \"x\""), store.Record("N 2 "+keyHex+" m2 \"y\"")...),
		append(store.Record("N 1 "+keyHex+" m \"x\""), "garbage\n"...),
		append([]byte("garbage\n"), store.Record("N 1 "+keyHex+" m \"x\"")...),
		store.Record("N 4 " + keyHex + " m \"x\""),
		[]byte("N 0 " + keyHex + " m \"torn"),
		append(store.Record("R 0 0 6"), store.Record("F 6 0badcafe 1")...),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, tail []byte) {
		data := append(bytes.Clone(hdr), tail...)
		want, err := store.NamesKept(data)
		if err != nil {
			t.Skip() // the loader refuses it; EachNamed need not agree
		}
		latest := map[int]store.Named{}
		if err := store.EachNamedReader(data, func(row int, n store.Named) error {
			latest[row] = n
			return nil
		}); err != nil {
			t.Fatalf("EachNamed: %v", err)
		}
		diffNamed(t, latest, want)
	})
}
