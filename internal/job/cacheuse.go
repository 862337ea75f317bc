package job

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/batchgpt/batchgpt/batch"
	"github.com/batchgpt/batchgpt/cache"
	"github.com/batchgpt/batchgpt/internal/api"
)

// ResultCache is what a run needs of a result cache: the SQLite file of package cache, or a
// shared one some day.
type ResultCache interface {
	GetMany(ctx context.Context, keys []cache.Key, notBefore time.Time) ([]cache.Entry, []bool, error)
	Put(ctx context.Context, entries []cache.Entry) error
}

// cacheUse is one execution's use of the cache. A cache that fails is never a reason to fail the
// run: the first failure is logged once, and the run goes on without it.
type cacheUse struct {
	c       ResultCache
	log     *slog.Logger
	refresh bool          // never read; store what is answered
	ttl     time.Duration // 0: entries of any age
	// acceptFiltered (--accept-filtered) lets a content-filtered answer answer a row; without it
	// such an entry is a miss, as the answer would fail the row (see Result.judge).
	acceptFiltered bool

	off     atomic.Bool
	mu      sync.Mutex
	why     string
	todo    []cache.Entry
	room    *sync.Cond // todo was taken, or the queue was given up (off, closing)
	closing bool
	wake    chan struct{} // something was queued
	full    chan struct{} // a batch is full
	stop    chan struct{}
	done    chan struct{}
}

func newCacheUse(c ResultCache, log *slog.Logger, refresh bool, ttl time.Duration, acceptFiltered bool) *cacheUse {
	u := &cacheUse{c: c, log: log, refresh: refresh, ttl: ttl, acceptFiltered: acceptFiltered,
		wake: make(chan struct{}, 1), full: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	u.room = sync.NewCond(&u.mu)
	go u.run()
	return u
}

// disable stops using the cache after err, saying so once.
func (u *cacheUse) disable(what string, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.why != "" {
		return
	}
	u.why = what + ": " + err.Error()
	u.off.Store(true)
	u.todo = nil
	u.room.Broadcast()
	u.log.Warn("the result cache failed; going on without it (rows are submitted, answers are not stored)", "err", u.why)
}

// lookup returns the cached answers for keys (nil for a miss), or nil for all when the cache is
// not read; u nil is a run without a cache (a collided follower asks whatever the run has).
func (u *cacheUse) lookup(ctx context.Context, keys []batch.Key) []*cache.Entry {
	if u == nil || u.refresh || u.off.Load() {
		return nil
	}
	out, err := CacheLookup(ctx, u.c, keys, u.ttl, u.acceptFiltered)
	if err != nil {
		if ctx.Err() == nil && !errors.Is(err, context.Canceled) {
			u.disable("read", err)
		}
		return nil
	}
	return out
}

// CacheLookup returns the answers c holds for keys (nil for a miss): entries stored within ttl
// (0: any age), and a content-filtered answer only with acceptFiltered, as such an entry would
// fail the row (see Result.judge).
func CacheLookup(ctx context.Context, c ResultCache, keys []batch.Key, ttl time.Duration, acceptFiltered bool) ([]*cache.Entry, error) {
	ck := make([]cache.Key, len(keys))
	for i, k := range keys {
		ck[i] = cache.Key(k)
	}
	var notBefore time.Time
	if ttl > 0 {
		notBefore = time.Now().Add(-ttl)
	}
	entries, ok, err := c.GetMany(ctx, ck, notBefore)
	if err != nil {
		return nil, err
	}
	out := make([]*cache.Entry, len(keys))
	for i := range ok {
		if ok[i] && (acceptFiltered || entries[i].AlternativeStatus != string(api.AltContentFilter)) {
			out[i] = &entries[i]
		}
	}
	return out, nil
}

// store queues an answer whose result line is durable. It is called on the checkpoint writer's
// goroutine, so it only queues; but while maxQueued answers wait for the database it waits for
// room, holding the whole run to the pace the cache can store at rather than queueing without
// end (ten million answers queued are gigabytes).
func (u *cacheUse) store(e cache.Entry) {
	if u.off.Load() {
		return
	}
	u.mu.Lock()
	for len(u.todo) >= maxQueued && !u.off.Load() && !u.closing {
		u.room.Wait()
	}
	if u.off.Load() {
		u.mu.Unlock()
		return
	}
	u.todo = append(u.todo, e)
	n := len(u.todo)
	u.mu.Unlock()
	wake := u.wake
	if n >= putBatch {
		wake = u.full
	}
	select {
	case wake <- struct{}{}:
	default:
	}
}

// Answers are stored in transactions of up to putBatch entries, or what came in putDelay: one
// transaction per answer would cost more than the run itself on a fast emulator, and an entry
// lost to a crash in that time only costs one submission the next night.
const (
	putBatch  = 1024
	putDelay  = 500 * time.Millisecond
	maxQueued = 4 * putBatch // while one batch is stored, the next few fill
)

// run writes what is queued, one transaction per batch.
func (u *cacheUse) run() {
	defer close(u.done)
	timer := time.NewTimer(putDelay)
	timer.Stop()
	for {
		stopping := false
		select {
		case <-u.wake:
			u.mu.Lock()
			n := len(u.todo)
			u.mu.Unlock()
			if n < putBatch {
				timer.Reset(putDelay)
				select {
				case <-timer.C:
				case <-u.full:
				case <-u.stop:
					stopping = true
				}
				timer.Stop()
			}
		case <-u.stop:
			stopping = true
		}
		u.mu.Lock()
		todo := u.todo
		u.todo = nil
		u.room.Broadcast()
		u.mu.Unlock()
		if len(todo) > 0 && !u.off.Load() {
			// Not the run's context: answers already paid for are stored even on Ctrl-C.
			if err := u.c.Put(context.Background(), todo); err != nil {
				u.disable("write", err)
			}
		}
		if stopping {
			return
		}
	}
}

// close stores what is queued and returns why the cache was given up, if it was.
func (u *cacheUse) close() string {
	u.mu.Lock()
	u.closing = true // a store still waiting queues, and run takes it before it returns
	u.room.Broadcast()
	u.mu.Unlock()
	close(u.stop)
	<-u.done
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.why
}

// FromCache is the result of a row answered by a cache entry, judged like a fresh answer: a
// truncated one is marked so (the same request has the same maxTokens).
func FromCache(id string, e *cache.Entry, acceptFiltered bool) *Result {
	r := &Result{ID: id, Status: StatusSucceeded, Text: e.Text, AlternativeStatus: e.AlternativeStatus,
		Usage:        &Usage{InputTokens: e.InputTokens, CompletionTokens: e.CompletionTokens, TotalTokens: e.TotalTokens},
		ModelVersion: e.ModelVersion, OperationID: e.OperationID, Cached: true,
		CachedAt: e.CachedAt.UTC().Format(time.RFC3339)}
	r.judge(acceptFiltered)
	return r
}

// CacheEntry is what the cache keeps of a succeeded result.
func CacheEntry(key batch.Key, model string, res *Result) cache.Entry {
	e := cache.Entry{Key: cache.Key(key), ModelURI: model, Text: res.Text, AlternativeStatus: res.AlternativeStatus,
		ModelVersion: res.ModelVersion, OperationID: res.OperationID, CachedAt: time.Now().UTC()}
	if res.Usage != nil {
		e.InputTokens, e.CompletionTokens, e.TotalTokens = res.Usage.InputTokens, res.Usage.CompletionTokens, res.Usage.TotalTokens
	}
	return e
}
