package store

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"math"
	"reflect"
	"testing"
)

func TestLinesRoundTrip(t *testing.T) {
	t.Parallel()
	type in struct {
		row      int
		start, n int64
		failed   bool
		attempt  uint16
		opID     string
		at       int64
		wantSkip int64
	}
	rows := []in{
		{row: 5, start: 10, n: 30, attempt: 1, opID: "d7qqr3frkl81js0udlr9", at: 1735787045000, wantSkip: 0},
		{row: 2, start: 40, n: 1, failed: true, attempt: 3, opID: "op", at: 1735787044000},
		{row: 9_999_999, start: 500, n: 1 << 30, attempt: math.MaxUint16, at: -5, wantSkip: 459}, // a gap, no operation
		{row: 0, start: 100, n: 7, at: 0, wantSkip: -(500 + 1<<30 - 100)},                        // back, after a repair
	}
	enc := linesEncoder{cursor: 10}
	for _, r := range rows {
		enc.add(r.row, r.start, r.n, r.failed, r.attempt, []byte(r.opID), r.at)
	}
	rec := enc.flush(nil)
	payload, err := checkRecord(rec[:len(rec)-1])
	if err != nil {
		t.Fatal(err)
	}
	var got []lineEntry
	var buf []byte
	if err := parseLines(payload, 10_000_000, &got, &buf); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(rows) {
		t.Fatalf("%d entries", len(got))
	}
	for k, r := range rows {
		want := lineEntry{row: int32(r.row), skip: r.wantSkip, failed: r.failed, n: r.n, attempt: r.attempt, at: r.at}
		if r.opID != "" {
			want.opID = []byte(r.opID)
		}
		if !reflect.DeepEqual(got[k], want) {
			t.Errorf("entry %d: %+v, want %+v", k, got[k], want)
		}
	}
	// Replayed from a cursor of 10, each line lands where it was.
	st := newState(Header{Rows: 10_000_000}, make([]byte, 10), false)
	if err := st.checkLines(got); err != nil {
		t.Fatal(err)
	}
	st.applyLines(got)
	for _, r := range rows {
		if st.Phase(r.row) != PhaseResolved || st.Failed(r.row) != r.failed || st.end(r.row) != r.start+r.n ||
			st.lineLen(r.row) != r.n || st.Attempt(r.row) != int(r.attempt) {
			t.Errorf("row %d: %+v end %d len %d", r.row, st.Row(r.row), st.end(r.row), st.lineLen(r.row))
		}
	}
	if st.cursor != 107 {
		t.Errorf("cursor %d", st.cursor)
	}
}

func TestLinesErrors(t *testing.T) {
	t.Parallel()
	entry := func(row, skip int64, fl, attempt uint64, op string, at int64) []byte {
		var b []byte
		b = binary.AppendUvarint(b, zigzag(row))
		b = binary.AppendUvarint(b, zigzag(skip))
		b = binary.AppendUvarint(b, fl)
		b = binary.AppendUvarint(b, attempt)
		b = binary.AppendUvarint(b, uint64(len(op)))
		b = append(b, op...)
		return binary.AppendUvarint(b, zigzag(at))
	}
	good := entry(1, 0, 20, 1, "op", 5)
	rec := func(count string, raw []byte) string {
		return "L " + count + " " + base64.RawStdEncoding.EncodeToString(raw)
	}
	tests := []struct {
		name    string
		payload string
		want    error
	}{
		{"good", rec("1", good), nil},
		{"count too high", rec("2", good), errSyntax},
		{"trailing bytes", rec("1", append(good, 0)), errSyntax},
		{"count zero", rec("0", good), errSyntax},
		{"count over the limit", rec("4097", good), errSyntax},
		{"padding", rec("1", good) + "=", errSyntax},
		{"not base64", "L 1 !!!!", errSyntax},
		{"no payload", "L 1", errSyntax},
		{"row out of range", rec("1", entry(4, 0, 20, 1, "op", 5)), errRowRange},
		{"negative row", rec("1", entry(-1, 0, 20, 1, "op", 5)), errRowRange},
		{"empty line", rec("1", entry(1, 0, 1, 1, "op", 5)), errSyntax},
		{"attempt too high", rec("1", entry(1, 0, 20, 1<<16, "op", 5)), errAttempt},
		{"operation with a space", rec("1", entry(1, 0, 20, 1, "o p", 5)), errOpID},
		{"operation too long", rec("1", entry(1, 0, 20, 1, string(make([]byte, maxOpID+1)), 5)), errSyntax},
	}
	for _, tt := range tests {
		var out []lineEntry
		var buf []byte
		if err := parseLines([]byte(tt.payload), 4, &out, &buf); !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
	// A line may not start before the results file does.
	st := newState(Header{Rows: 4}, []byte("pre\n"), false)
	if err := st.checkLines([]lineEntry{{row: 1, skip: -5, n: 3}}); err == nil {
		t.Error("a line before the start of the file was accepted")
	}
}

// TestWideLines: lines too long, or ending too far, to pack in a word are kept exactly.
func TestWideLines(t *testing.T) {
	t.Parallel()
	st := newState(Header{Rows: 3}, nil, false)
	for _, c := range []struct{ end, n int64 }{{maxEnd + 1, 10}, {1 << 30, maxLen + 1}, {maxEnd, maxLen}, {100, 100}} {
		st.setPos(1, c.end, c.n)
		if st.end(1) != c.end || st.lineLen(1) != c.n {
			t.Errorf("setPos(%d, %d): end %d len %d", c.end, c.n, st.end(1), st.lineLen(1))
		}
	}
	if len(st.wide) != 0 {
		t.Errorf("%d wide lines left after packing one again", len(st.wide))
	}
}
