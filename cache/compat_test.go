package cache_test

import (
	"context"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/cache"
)

// A cache file written by an earlier batchgpt (testdata/schema<N>-<commit>.db, never edited) opens
// with this one and answers as it did: a nightly job must not lose its cache to an upgrade.
func TestCacheOfEarlierVersions(t *testing.T) {
	src := filepath.Join("testdata", "schema1-9df7750.db")
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "cache.db")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := cache.Open(path, cache.Options{})
	if err != nil {
		t.Fatalf("open a cache of schema 1: %v", err)
	}
	defer c.Close()
	at := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	for i, want := range []struct{ text, status string }{
		{"Four.", "ALTERNATIVE_STATUS_FINAL"},
		{"Blue, as the sky.", "ALTERNATIVE_STATUS_FINAL"},
		{"Once upon a", "ALTERNATIVE_STATUS_TRUNCATED_FINAL"},
	} {
		k := cache.Key(sha256.Sum256([]byte{byte(i)}))
		e, ok, err := c.Get(context.Background(), k, time.Time{})
		if err != nil || !ok {
			t.Fatalf("entry %d: ok %v, %v", i, ok, err)
		}
		if e.Text != want.text || e.AlternativeStatus != want.status || e.ModelURI != "gpt://b1gfolder/yandexgpt-lite/latest" ||
			e.InputTokens != int64(10+i) || e.CompletionTokens != int64(3+i) || e.TotalTokens != int64(13+2*i) ||
			e.ModelVersion != "23.10.2024" || !e.CachedAt.Equal(at.Add(time.Duration(i)*time.Minute)) {
			t.Errorf("entry %d: %+v", i, e)
		}
	}
	// And it takes new entries.
	k := cache.Key(sha256.Sum256([]byte("new")))
	if err := c.Put(context.Background(), []cache.Entry{{Key: k, ModelURI: "gpt://b1gfolder/yandexgpt/latest", Text: "x"}}); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Export(context.Background(), io.Discard); err != nil || n != 4 {
		t.Fatalf("export: %d entries, %v", n, err)
	}
}
