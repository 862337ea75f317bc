package job

import (
	"context"
	"time"

	"github.com/batchgpt/batchgpt/batch"
	"github.com/batchgpt/batchgpt/cache"
	"github.com/batchgpt/batchgpt/store"
)

// backfillCache stores in the cache the answers of an earlier run that are not there yet. An
// answer is stored shortly after its result line is durable (see cacheUse), so a crash in
// between loses the entry, and the next night would pay again for a request it has the answer
// to. The journal names every submitted row (its id, request key and model URI), so the results
// file alone tells which answers belong to which request.
func (j *Job) backfillCache(ctx context.Context, checkpoint string, st *store.State) (int, error) {
	if j.cfg.Cache == nil || j.cfg.Settings.NoCache {
		return 0, nil
	}
	names, err := readNames(checkpoint)
	if err != nil || names.len() == 0 {
		return 0, err
	}
	var todo []cache.Entry
	stored := 0
	flush := func() error {
		keys := make([]batch.Key, len(todo))
		for i := range todo {
			keys[i] = batch.Key(todo[i].Key)
		}
		// Any entry counts as present here, a content-filtered one too.
		u := &cacheUse{c: j.cfg.Cache, log: j.log, acceptFiltered: true}
		hits := u.lookup(ctx, keys)
		var missing []cache.Entry
		for i := range todo {
			if hits == nil || hits[i] == nil {
				missing = append(missing, todo[i])
			}
		}
		todo = todo[:0]
		if len(missing) == 0 {
			return nil
		}
		stored += len(missing)
		return j.cfg.Cache.Put(context.Background(), missing)
	}
	var putErr error
	named := func(id []byte) bool { _, _, ok := names.lookup(string(id)); return ok }
	err = eachResult(st.Header.Results, st.Header.ResultsFormat, st.ResultsEnd, named, func(r *Result, _ int64) {
		if putErr != nil || r.Status != StatusSucceeded || r.Cached || r.DeduplicatedFrom != "" {
			return
		}
		key, model, ok := names.lookup(r.ID)
		if !ok || model == "" {
			return
		}
		e := CacheEntry(batch.Key(key), model, r)
		e.CachedAt = time.Now().UTC()
		if todo = append(todo, e); len(todo) == lookupBatch {
			putErr = flush()
		}
	})
	if err == nil && putErr == nil && len(todo) > 0 {
		putErr = flush()
	}
	if err == nil {
		err = putErr
	}
	return stored, err
}
