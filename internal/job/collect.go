package job

import (
	"context"
	"time"

	"github.com/batchgpt/batchgpt/store"
)

// Collect polls the operations of a checkpoint that are still outstanding — submitted, paid for,
// not yet written — and writes their results to its results file and their answers to the cache,
// without its input file and without submitting anything: a failed or vanished operation is
// written as failed, never sent again. Rows never submitted stay so.
func (j *Job) Collect(ctx context.Context) (Summary, error) {
	start := time.Now()
	w, st, s, err := j.open()
	if err != nil {
		return Summary{}, err
	}
	if err := j.adopt(st.Header, s); err != nil {
		w.Close()
		return Summary{}, err
	}
	pl := newPlan(st, nil)
	pl.collect = map[int]store.Named{}
	for i, n := range st.Named {
		if st.Phase(i) == store.PhaseSubmitted {
			pl.collect[i] = n
		}
	}
	if len(pl.submitted) == 0 {
		c := pl.counts
		j.succeeded.Store(int64(c.Succeeded))
		j.failed.Store(int64(c.Failed))
		if err := w.Close(); err != nil {
			return Summary{}, err
		}
		return j.summary(st.Header, start, false), nil
	}
	if err := j.connect(ctx); err != nil {
		w.Close()
		return Summary{}, err
	}
	j.log.Info("collecting the outstanding operations of an earlier run (nothing is submitted)",
		"run_of", st.Header.Created.Local().Format(time.DateOnly), "operations", len(pl.submitted), "results", st.Header.Results)
	return j.execute(ctx, start, w, st.Header, pl, nil)
}
