package job

import (
	"testing"

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
				p.resolved, p.inFlight, p.attempts = make([]uint64, words), make([]uint64, words), make([]uint8, tc.rows)
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
