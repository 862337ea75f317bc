package job

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/cache"
)

// slowCache is a real cache whose first Put waits until release is closed: a database that
// cannot keep up with the answers coming in.
type slowCache struct {
	*cache.Cache
	entered chan struct{}
	release chan struct{}
}

func (c *slowCache) Put(ctx context.Context, entries []cache.Entry) error {
	select {
	case c.entered <- struct{}{}:
		<-c.release
	default:
	}
	return c.Cache.Put(ctx, entries)
}

// TestCacheQueueIsBounded: while the database is busy, answers queue up to maxQueued and the
// caller (the checkpoint writer) then waits, rather than the queue growing with the run; once the
// database moves again, every answer is stored.
func TestCacheQueueIsBounded(t *testing.T) {
	t.Parallel()
	c, err := cache.Open(filepath.Join(t.TempDir(), "cache.db"), cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	slow := &slowCache{Cache: c, entered: make(chan struct{}), release: make(chan struct{})}
	u := newCacheUse(slow, slog.New(slog.NewTextHandler(io.Discard, nil)), false, 0, false)

	const n = 3 * maxQueued
	keys := make([]cache.Key, n)
	stored := make(chan struct{})
	go func() {
		defer close(stored)
		for i := range n {
			keys[i] = cache.Key(sha256.Sum256(fmt.Appendf(nil, "request %d", i)))
			u.store(cache.Entry{Key: keys[i], ModelURI: "gpt://b1g/yandexgpt-lite", Text: fmt.Sprint("answer ", i),
				AlternativeStatus: "ALTERNATIVE_STATUS_FINAL", OperationID: fmt.Sprint("op", i)})
		}
	}()
	<-slow.entered // the first batch is being stored, and stays so
	select {
	case <-stored:
		t.Errorf("all %d answers were queued while the database was busy", n)
	case <-time.After(300 * time.Millisecond):
	}
	u.mu.Lock()
	queued := len(u.todo)
	u.mu.Unlock()
	if queued > maxQueued {
		t.Errorf("%d answers queued, at most %d wanted", queued, maxQueued)
	}
	close(slow.release)
	<-stored
	if why := u.close(); why != "" {
		t.Fatalf("cache given up: %s", why)
	}
	_, ok, err := c.GetMany(context.Background(), keys, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range ok {
		if !ok[i] {
			t.Fatalf("answer %d of %d not stored", i, n)
		}
	}
}
