package job

import (
	"errors"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/store"
)

// firstOpen is where a resume starts reading its input: the first row not resolved, unless it
// waits for its leader's answer (its leader, earlier, is open then).
func TestFirstOpen(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		rows    int
		phases  map[int]store.Phase // rows below the first listed are resolved; the others new
		follows []int
		want    int
	}{
		{name: "new run", rows: 10, want: 0},
		{name: "all resolved", rows: 130, phases: map[int]store.Phase{}, want: 130},
		{name: "first new", rows: 130, phases: map[int]store.Phase{70: store.PhaseNew}, want: 70},
		{name: "in flight", rows: 130, phases: map[int]store.Phase{64: store.PhaseInFlight}, want: 64},
		{name: "submitted", rows: 130, phases: map[int]store.Phase{127: store.PhaseSubmitted}, want: 127},
		{name: "a follower waits", rows: 130, phases: map[int]store.Phase{70: store.PhaseNew, 71: store.PhaseNew}, follows: []int{70}, want: 71},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPlan(&store.State{Header: store.Header{Rows: tc.rows}}, nil)
			if tc.phases != nil { // a resumed run, as newPlan condenses one
				words := (tc.rows + 63) / 64
				p.resolved, p.inFlight, p.attempts = make([]uint64, words), make([]uint64, words), map[int]uint8{}
				first := tc.rows
				for i := range tc.phases {
					first = min(first, i)
				}
				for i := range tc.rows {
					phase := store.PhaseResolved
					if ph, ok := tc.phases[i]; ok {
						phase = ph
					} else if i > first {
						phase = store.PhaseNew
					}
					switch phase {
					case store.PhaseResolved:
						p.resolved[i/64] |= 1 << (i % 64)
					case store.PhaseInFlight:
						p.inFlight[i/64] |= 1 << (i % 64)
					case store.PhaseSubmitted:
						p.submitted[i] = store.Row{Phase: phase, Attempt: 1, OpID: "op"}
					}
				}
			}
			if tc.follows != nil {
				p.follows = make([]uint64, (tc.rows+63)/64)
				for _, i := range tc.follows {
					p.follows[i/64] |= 1 << (i % 64)
				}
			}
			if got := p.firstOpen(); got != tc.want {
				t.Fatalf("firstOpen() = %d, want %d", got, tc.want)
			}
		})
	}
}

// nextNeeded says where the sequential reading goes on: the first row from a given row on that is
// open and not read by position (a row that waits for its leader counts: its chunk is verified
// early). Checked against that definition row by row, for sparse and dense open rows.
func TestNextNeeded(t *testing.T) {
	t.Parallel()
	const rows = 200
	for seed := range uint64(20) {
		rnd := rand.New(rand.NewPCG(seed, 2))
		words := (rows + 63) / 64
		p := &plan{rows: rows, resolved: make([]uint64, words), follows: make([]uint64, words), strayBits: make([]uint64, words)}
		set := func(bits []uint64, i int) { bits[i/64] |= 1 << (i % 64) }
		has := func(bits []uint64, i int) bool { return bits[i/64]&(1<<(i%64)) != 0 }
		for i := range rows {
			switch rnd.IntN(int(seed%4) + 2) { // from half the rows open to a few
			case 0:
				if rnd.IntN(3) == 0 {
					set(p.follows, i)
				} else if rnd.IntN(3) == 0 {
					set(p.strayBits, i)
				}
			default:
				set(p.resolved, i)
			}
		}
		for from := range rows + 1 {
			want := -1
			for i := from; i < rows && want < 0; i++ {
				if !has(p.resolved, i) && !has(p.strayBits, i) {
					want = i
				}
			}
			if got := p.nextNeeded(from); got != want {
				t.Fatalf("seed %d: nextNeeded(%d) = %d, want %d", seed, from, got, want)
			}
		}
	}
}

// A resume keeps counting the submissions of the rows still open: a row handed back, a row in
// doubt and a row with an operation keep their attempts; a resolved row's are not kept.
func TestPlanKeepsAttemptsOfOpenRows(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "ck.json")
	w, err := store.Create(path, store.Header{Rows: 6, Results: filepath.Join(filepath.Dir(path), "out.jsonl"), ResultsFormat: "jsonl"}, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Unix(1700000000, 0)
	err = errors.Join(
		w.Intent(0, 1), w.SubmittedThen(0, 1, "op0", at, nil), w.ResultThen(0, false, []byte("{\"id\":\"a\"}\n"), nil), // resolved
		w.Intent(1, 1), w.Reopen(1), w.Intent(1, 2), w.Reopen(1), // handed back twice
		w.Intent(2, 1), w.Reopen(2), w.Intent(2, 2), // in doubt at its second
		w.Intent(3, 1), w.Reopen(3), w.Intent(3, 2), w.Reopen(3), w.Intent(3, 3), w.SubmittedThen(3, 3, "op3", at, nil), // pending
		w.Close())
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	p := newPlan(st, nil)
	for i, want := range []store.Row{
		{Phase: store.PhaseResolved},
		{Phase: store.PhaseNew, Attempt: 2},
		{Phase: store.PhaseInFlight, Attempt: 2},
		{Phase: store.PhaseSubmitted, Attempt: 3},
		{}, {},
	} {
		got := p.row(i)
		if got.Phase != want.Phase || got.Attempt != want.Attempt {
			t.Errorf("row %d: phase %v, attempt %d; want phase %v, attempt %d", i, got.Phase, got.Attempt, want.Phase, want.Attempt)
		}
	}
	if len(p.attempts) != 2 {
		t.Errorf("attempts kept for %d rows, want 2 (the rows open without an operation)", len(p.attempts))
	}
}
