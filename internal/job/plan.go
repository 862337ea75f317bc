package job

import (
	"math"
	"time"

	"github.com/batchgpt/batchgpt/store"
)

// plan is what the dispatcher needs of a checkpoint's per-row state, in a few bits per row: a
// resumed million-row checkpoint would otherwise keep ~60 MB of store.State alive for the whole
// run. Rows with an operation id still pending are few at any time and kept in a map.
type plan struct {
	rows      int
	resolved  []uint64 // bit per row
	inFlight  []uint64 // bit per row: intent journaled, no operation id (in doubt)
	attempts  []uint8  // submissions made so far (saturating)
	submitted map[int]store.Row
	counts    store.Counts
}

// newPlan condenses st; a new run (st.Rows == nil) has every row new.
func newPlan(st *store.State) *plan {
	n := st.Header.Rows
	p := &plan{rows: n, submitted: map[int]store.Row{}, counts: st.Counts()}
	if st.Rows == nil {
		p.counts = store.Counts{Rows: n, New: n}
		return p
	}
	words := (n + 63) / 64
	p.resolved, p.inFlight, p.attempts = make([]uint64, words), make([]uint64, words), make([]uint8, n)
	for i := range st.Rows {
		r := &st.Rows[i]
		p.attempts[i] = uint8(min(int(r.Attempt), math.MaxUint8))
		switch r.Phase {
		case store.PhaseResolved:
			p.resolved[i/64] |= 1 << (i % 64)
		case store.PhaseInFlight:
			p.inFlight[i/64] |= 1 << (i % 64)
		case store.PhaseSubmitted:
			p.submitted[i] = *r
		}
	}
	return p
}

// row returns the phase, attempts and (when submitted) operation of row i.
func (p *plan) row(i int) store.Row {
	if r, ok := p.submitted[i]; ok {
		return r
	}
	if p.resolved == nil {
		return store.Row{}
	}
	r := store.Row{Attempt: uint16(p.attempts[i])}
	switch bit := uint64(1) << (i % 64); {
	case p.resolved[i/64]&bit != 0:
		r.Phase = store.PhaseResolved
	case p.inFlight[i/64]&bit != 0:
		r.Phase = store.PhaseInFlight
	}
	return r
}

// recentSubmissions lists the submission times of the last hour before now, to seed the hour
// window of the submission quota across restarts.
func recentSubmissions(st *store.State, now time.Time) []time.Time {
	cut := now.Add(-time.Hour).UnixMilli()
	var out []time.Time
	for i := range st.Rows {
		if at := st.Rows[i].SubmittedAt; at > cut {
			out = append(out, time.UnixMilli(at))
		}
	}
	return out
}
