package cache_test

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/cache"
)

// benchEntries is the size of the pre-filled cache of the benchmarks;
// BATCHGPT_CACHE_BENCH_ENTRIES changes it (e.g. 1000000).
func benchEntries() int {
	if n, err := strconv.Atoi(os.Getenv("BATCHGPT_CACHE_BENCH_ENTRIES")); err == nil && n > 0 {
		return n
	}
	return 100_000
}

// benchText is a ~200-byte answer, mixed Cyrillic and Latin like real ones.
var benchText = func() string {
	s := strings.Repeat("Быть или не быть — to be or not to be. ", 5)
	for len(s) > 200 {
		_, size := utf8LastRune(s)
		s = s[:len(s)-size]
	}
	return s
}()

func utf8LastRune(s string) (rune, int) {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i]&0xC0 != 0x80 {
			return rune(s[i]), len(s) - i
		}
	}
	return 0, 1
}

// benchEntry is a realistic entry for request i.
func benchEntry(i int) cache.Entry {
	e := entry(i, t0.Add(time.Duration(i)*time.Millisecond))
	e.Text = benchText
	e.InputTokens, e.CompletionTokens, e.TotalTokens = 31, 60, 91
	return e
}

// fill puts requests from..from+n in batches of 500.
func fill(tb testing.TB, c *cache.Cache, from, n int) {
	batch := make([]cache.Entry, 0, 500)
	for i := from; i < from+n; i++ {
		batch = append(batch, benchEntry(i))
		if len(batch) == cap(batch) || i == from+n-1 {
			must(tb, c.Put(ctx, batch))
			batch = batch[:0]
		}
	}
}

var template struct {
	once sync.Once
	dir  string
	err  error
}

func removeBenchTemplate() {
	if template.dir != "" {
		os.RemoveAll(template.dir)
	}
}

// prefilled returns a copy of a cache holding benchEntries() entries
// (requests 0, 1, ...), made once per process.
func prefilled(b *testing.B) *cache.Cache {
	b.Helper()
	template.once.Do(func() {
		if template.dir, template.err = os.MkdirTemp("", "cachebench"); template.err != nil {
			return
		}
		c, err := cache.Open(filepath.Join(template.dir, "cache.db"), cache.Options{})
		if err != nil {
			template.err = err
			return
		}
		fill(b, c, 0, benchEntries())
		template.err = c.Close()
	})
	must(b, template.err)
	path := filepath.Join(b.TempDir(), "cache.db")
	src, err := os.Open(filepath.Join(template.dir, "cache.db"))
	must(b, err)
	defer src.Close()
	dst, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
	must(b, err)
	_, err = io.Copy(dst, src)
	must(b, err)
	must(b, dst.Sync()) // no writeback of the copy during the measurement
	must(b, dst.Close())
	c, err := cache.Open(path, cache.Options{})
	must(b, err)
	b.Cleanup(func() { c.Close() })
	return c
}

// randomKeys are keys of n stored requests, in random order.
func randomKeys(n int) []cache.Key {
	keys := make([]cache.Key, n)
	for i, id := range rand.New(rand.NewPCG(1, 2)).Perm(benchEntries())[:n] {
		keys[i] = key(id)
	}
	return keys
}

func BenchmarkGet(b *testing.B) {
	c := prefilled(b)
	keys := randomKeys(min(benchEntries(), 1<<16))
	for i := 0; b.Loop(); i++ {
		if _, ok, err := c.Get(ctx, keys[i%len(keys)], time.Time{}); err != nil || !ok {
			b.Fatal(ok, err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lookups/s")
}

func BenchmarkGetParallel(b *testing.B) {
	c := prefilled(b)
	keys := randomKeys(min(benchEntries(), 1<<16))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := rand.IntN(len(keys))
		for pb.Next() {
			if _, ok, err := c.Get(ctx, keys[i%len(keys)], time.Time{}); err != nil || !ok {
				b.Error(ok, err)
				return
			}
			i++
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lookups/s")
}

// BenchmarkGetMany looks up batches of 256 keys (one statement) and of 4096
// (statements on several connections at once).
func BenchmarkGetMany(b *testing.B) {
	c := prefilled(b)
	hits := randomKeys(min(benchEntries(), 1<<16))
	misses := make([]cache.Key, len(hits))
	for i := range misses {
		misses[i] = key(-1 - i)
	}
	for _, bm := range []struct {
		name  string
		batch int
		keys  []cache.Key
	}{{"batch=256/hits", 256, hits}, {"batch=256/misses", 256, misses}, {"batch=4096/hits", 4096, hits}} {
		b.Run(bm.name, func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				from := i * bm.batch % (len(bm.keys) - bm.batch)
				_, ok, err := c.GetMany(ctx, bm.keys[from:from+bm.batch], time.Time{})
				if err != nil || ok[0] != (&bm.keys[0] == &hits[0]) {
					b.Fatal(ok[0], err)
				}
			}
			b.ReportMetric(float64(b.N*bm.batch)/b.Elapsed().Seconds(), "lookups/s")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*bm.batch), "ns/lookup")
		})
	}
}

func BenchmarkPut(b *testing.B) {
	const batch = 500
	c := prefilled(b)
	next := benchEntries()
	entries := make([]cache.Entry, batch)
	for b.Loop() {
		for i := range entries {
			entries[i] = benchEntry(next)
			next++
		}
		must(b, c.Put(ctx, entries))
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "entries/s")
}

func BenchmarkOpen(b *testing.B) {
	path := prefilled(b).Path()
	for b.Loop() {
		c, err := cache.Open(path, cache.Options{})
		must(b, err)
		must(b, c.Close())
	}
}

// BenchmarkBytesPerEntry fills a new cache and reports its size on disk per
// entry once the WAL is checkpointed (closed).
func BenchmarkBytesPerEntry(b *testing.B) {
	n := benchEntries()
	var size int64
	for i := 0; b.Loop(); i++ {
		path := filepath.Join(b.TempDir(), fmt.Sprint(i), "cache.db")
		c, err := cache.Open(path, cache.Options{})
		must(b, err)
		fill(b, c, 0, n)
		must(b, c.Close())
		fi, err := os.Stat(path)
		must(b, err)
		size = fi.Size()
	}
	b.ReportMetric(float64(size)/float64(n), "B/entry")
	b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "entries/s")
}

func BenchmarkStats(b *testing.B) {
	c := prefilled(b)
	for b.Loop() {
		st, err := c.Stats(ctx)
		if err != nil || st.Entries != int64(benchEntries()) {
			b.Fatal(st.Entries, err)
		}
	}
}

func BenchmarkExport(b *testing.B) {
	c := prefilled(b)
	for b.Loop() {
		if n, err := c.Export(ctx, io.Discard); err != nil || n != int64(benchEntries()) {
			b.Fatal(n, err)
		}
	}
	b.ReportMetric(float64(b.N*benchEntries())/b.Elapsed().Seconds(), "entries/s")
}
