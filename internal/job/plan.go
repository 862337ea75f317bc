package job

import (
	"math"
	"math/bits"
	"time"

	"github.com/batchgpt/batchgpt/batch"
	"github.com/batchgpt/batchgpt/internal/api"
	"github.com/batchgpt/batchgpt/store"
)

// plan is what the dispatcher needs of a checkpoint's per-row state, in a few bits per row: a
// resumed million-row checkpoint would otherwise keep ~60 MB of store.State alive for the whole
// run. Rows with an operation id still pending are few at any time and kept in a map.
type plan struct {
	rows     int
	resolved []uint64 // bit per row
	inFlight []uint64 // bit per row: intent journaled, no operation id (in doubt)
	// attempts are the submissions made so far (saturating) of the rows open with some: a
	// resolved row's are never read again, and a byte for each of ten million rows was a fifth
	// of a resume's live heap.
	attempts  map[int]uint8
	submitted map[int]store.Row
	counts    store.Counts
	// dups lists the rows that send the same request as an earlier row; follows marks those of
	// them that are resolved with their leader's answer, not dispatched: the rows still new
	// whose leader was not resolved when the execution started. A resolved leader had every
	// follower resolved first (see runner.resolve), so a new row behind a resolved leader can
	// only be one that was made independent, and stays so.
	dups    *batch.Duplicates
	follows []uint64 // bit per row
	// strays are the rows still open behind a resolved leader (a request that was made
	// independent: its fingerprint collided with the leader's), with where they are; strayBits
	// marks them. They go back to the back of the queue when found independent, so an interrupted
	// run leaves them open far behind the others: a resume reads them by position, and its
	// sequential read starts at the first row open otherwise.
	strays    []batch.Pos
	strayBits []uint64 // bit per row
	// collect, when not nil, makes the execution a collection: the operations of the rows in
	// submitted are polled and written, with the names the journal keeps (a row of a checkpoint
	// made before names were kept has none), and nothing is read from the input or submitted.
	collect map[int]store.Named
}

// newPlan condenses st; a new run (a State without rows) has every row new.
func newPlan(st *store.State, dups *batch.Duplicates) *plan {
	n := st.Header.Rows
	p := &plan{rows: n, submitted: map[int]store.Row{}, counts: st.Counts()}
	defer p.follow(dups)
	if st.Len() == 0 {
		p.counts = store.Counts{Rows: n, New: n}
		return p
	}
	words := (n + 63) / 64
	p.resolved, p.inFlight, p.attempts = make([]uint64, words), make([]uint64, words), map[int]uint8{}
	for i := range st.Len() {
		switch st.Phase(i) {
		case store.PhaseResolved:
			p.resolved[i/64] |= 1 << (i % 64)
			continue
		case store.PhaseInFlight:
			p.inFlight[i/64] |= 1 << (i % 64)
		case store.PhaseSubmitted:
			p.submitted[i] = st.Row(i)
			continue
		}
		if a := st.Attempt(i); a > 0 {
			p.attempts[i] = uint8(min(a, math.MaxUint8))
		}
	}
	return p
}

// follow marks the followers that wait for their leader.
func (p *plan) follow(dups *batch.Duplicates) {
	if dups.Count() == 0 {
		return
	}
	p.dups = dups
	p.follows = make([]uint64, (p.rows+63)/64)
	dups.Groups(func(leader int, followers []batch.Pos) bool {
		if p.row(leader).Phase == store.PhaseResolved {
			for _, f := range followers {
				if f.Index < p.rows && p.row(f.Index).Phase != store.PhaseResolved {
					if p.strayBits == nil {
						p.strayBits = make([]uint64, (p.rows+63)/64)
					}
					p.strayBits[f.Index/64] |= 1 << (f.Index % 64)
					p.strays = append(p.strays, f)
				}
			}
			return true
		}
		for _, f := range followers {
			if f.Index < p.rows && p.row(f.Index).Phase == store.PhaseNew {
				p.follows[f.Index/64] |= 1 << (f.Index % 64)
			}
		}
		return true
	})
}

// stray reports whether row i is one of p.strays.
func (p *plan) stray(i int) bool {
	return p.strayBits != nil && p.strayBits[i/64]&(1<<(i%64)) != 0
}

// following reports whether row i waits for its leader's answer.
func (p *plan) following(i int) bool {
	return p.follows != nil && p.follows[i/64]&(1<<(i%64)) != 0
}

// firstOpen returns the first row the execution reads from the input (p.rows if none): the first
// not resolved, with or without an operation, that does not wait for its leader's answer and is
// not read by position (a stray).
func (p *plan) firstOpen() int { return p.firstOpenFrom(0, false) }

// firstOpenFrom is firstOpen among the rows from row from on; with followers, a row that waits
// for its leader's answer counts as open.
func (p *plan) firstOpenFrom(from int, followers bool) int {
	if p.resolved == nil {
		return min(from, p.rows)
	}
	for w := from / 64; w < len(p.resolved); w++ {
		open := ^p.resolved[w]
		if w == from/64 {
			open &^= 1<<(from%64) - 1 // the rows before from
		}
		if p.follows != nil && !followers {
			open &^= p.follows[w]
		}
		if p.strayBits != nil {
			open &^= p.strayBits[w]
		}
		if open != 0 {
			return min(w*64+bits.TrailingZeros64(open), p.rows)
		}
	}
	return p.rows
}

// nextNeeded returns the first row from row from on that the input's sequential reading needs,
// or -1 if none: a row open and not read by position (a stray). The input's chunks before it are
// passed over (batch.Reader.SkipChunks): rows handed back to the end of the queue (their
// submission kept failing, their operation vanished) are left open behind rows done, and without
// this a resume would read every row from the first of them on. A row that waits for its leader
// counts as needed: its chunk is verified as the reading reaches it, so that a change there stops
// the resume before the leader's answer comes back (the followers are read again by position when
// it does).
func (p *plan) nextNeeded(from int) int {
	if i := p.firstOpenFrom(from, true); i < p.rows {
		return i
	}
	return -1
}

// waiting returns the followers that wait for leader.
func (p *plan) waiting(leader int) []batch.Pos {
	if p.follows == nil {
		return nil
	}
	fs := p.dups.Followers(leader)
	out := fs[:0]
	for _, f := range fs {
		if p.following(f.Index) {
			out = append(out, f)
		}
	}
	return out
}

// row returns the phase, attempts and (when submitted) operation of row i.
func (p *plan) row(i int) store.Row {
	if r, ok := p.submitted[i]; ok {
		return r
	}
	if p.resolved == nil {
		return store.Row{}
	}
	r := store.Row{Attempt: uint16(p.attempts[i])} // none for a resolved row: never read
	switch bit := uint64(1) << (i % 64); {
	case p.resolved[i/64]&bit != 0:
		r.Phase = store.PhaseResolved
	case p.inFlight[i/64]&bit != 0:
		r.Phase = store.PhaseInFlight
	}
	return r
}

// recentSubmissions lists the submissions of the last hour before now, per second, to seed the
// hour window of the submission quota across restarts. A second counts as its last moment, so
// that the window frees its slots no earlier than the API's would.
func recentSubmissions(st *store.State, now time.Time) []api.Burst {
	var out []api.Burst
	for _, sc := range st.SubmittedSince(now.Add(-time.Hour)) {
		out = append(out, api.Burst{At: time.UnixMilli(sc.Second*1000 + 999), N: sc.N})
	}
	return out
}
