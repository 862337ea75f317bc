package batchjob

import (
	"encoding/json"
	"slices"
	"testing"
)

// TestReplayRefusesNonsense: steps out of order or damaged are an error, never a panic.
func TestReplayRefusesNonsense(t *testing.T) {
	rows, err := encodeRows([]uint64{0b1011})
	if err != nil {
		t.Fatal(err)
	}
	creating := `{"step":"creating","gen":1,"rows":"` + rows + `","count":3}`
	for _, steps := range [][]string{
		{`{"step":"created","dataset":"fds1"}`},
		{`{"step":"validated","gen":2}`},
		{creating, `{"step":"uploaded","gen":2}`},
		{`{"step":"creating","gen":1,"rows":"not base64!"}`},
		{`{"step":"creating","gen":1,"rows":""}`},
		{`{"step":"what"}`},
		{`[1,2]`},
	} {
		raw := make([]json.RawMessage, len(steps))
		for i, s := range steps {
			raw[i] = json.RawMessage(s)
		}
		if _, err := replay(raw, 4); err == nil {
			t.Errorf("replay %q: no error", steps)
		}
	}
	j, err := replay([]json.RawMessage{json.RawMessage(creating), json.RawMessage(`{"step":"created","gen":1,"dataset":"fds1"}`)}, 4)
	if err != nil {
		t.Fatal(err)
	}
	if g := j.last(); g.dataset != "fds1" || !slices.Equal(members(g.rows), []int32{0, 1, 3}) {
		t.Fatalf("replayed %+v", g)
	}
	// A bit set naming a row beyond the run is refused.
	if _, err := replay([]json.RawMessage{json.RawMessage(creating)}, 3); err == nil {
		t.Fatal("row 3 of a 3-row run accepted")
	}
}
