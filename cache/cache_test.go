package cache_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/batchgpt/batchgpt/cache"
)

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 123_000_000, time.UTC)

var ctx = context.Background()

func TestMain(m *testing.M) {
	code := m.Run()
	removeBenchTemplate()
	os.Exit(code)
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func key(i int) cache.Key { return sha256.Sum256([]byte("request " + strconv.Itoa(i))) }

// entry is a realistic entry for request i, stored at at.
func entry(i int, at time.Time) cache.Entry {
	return cache.Entry{
		Key:               key(i),
		ModelURI:          "gpt://b1gxxxxxxxxxxxxxxxxx/yandexgpt-lite/latest",
		Text:              fmt.Sprintf("Ответ %d: to be or not to be, that is the question.", i),
		AlternativeStatus: "ALTERNATIVE_STATUS_FINAL",
		InputTokens:       int64(i),
		CompletionTokens:  int64(2 * i),
		TotalTokens:       int64(3 * i),
		ModelVersion:      "23.10.2024",
		OperationID:       fmt.Sprintf("d7qqr3frkl81js%06d", i),
		CachedAt:          at,
	}
}

// newCache opens a new cache in a directory of its own.
func newCache(t testing.TB) *cache.Cache {
	t.Helper()
	c, err := cache.Open(filepath.Join(t.TempDir(), "cache.db"), cache.Options{})
	must(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	c := newCache(t)
	tests := []cache.Entry{
		entry(1, t0),
		{Key: key(2), CachedAt: t0.Add(time.Hour)}, // empty strings, zero tokens
		{
			Key: key(3), ModelURI: "gpt://b1g/yandexgpt/rc", Text: "line 1\nline 2\t\"quoted\" <b>&</b> \\ 😀 \x00 after NUL",
			AlternativeStatus: "ALTERNATIVE_STATUS_TRUNCATED_FINAL", InputTokens: math.MaxInt64, CompletionTokens: -1, TotalTokens: 1 << 40,
			ModelVersion: "v", OperationID: "op", CachedAt: time.UnixMilli(1).UTC(),
		},
		{Key: key(4), Text: strings.Repeat("long answer ", 100_000), CachedAt: t0},
	}
	must(t, c.Put(ctx, tests))
	for _, want := range tests {
		got, ok, err := c.Get(ctx, want.Key, time.Time{})
		if err != nil || !ok {
			t.Fatalf("Get(%x) = ok %v, err %v", want.Key[:4], ok, err)
		}
		if got != want {
			t.Errorf("Get(%x):\n got %+.200v\nwant %+.200v", want.Key[:4], got, want)
		}
	}
	if _, ok, err := c.Get(ctx, key(99), time.Time{}); ok || err != nil {
		t.Errorf("Get of a key never stored: ok %v, err %v", ok, err)
	}
}

func TestCachedAt(t *testing.T) {
	t.Parallel()
	c := newCache(t)
	local := time.Date(2026, 11, 1, 15, 0, 0, 123_456_789, time.FixedZone("MSK", 3*3600))
	before := time.Now().Truncate(time.Millisecond)
	must(t, c.Put(ctx, []cache.Entry{entry(1, time.Time{}), entry(2, local)}))
	after := time.Now()
	e, _, err := c.Get(ctx, key(1), time.Time{})
	must(t, err)
	if e.CachedAt.Before(before) || e.CachedAt.After(after) || e.CachedAt.Location() != time.UTC {
		t.Errorf("zero CachedAt stored as %v, want the time of the Put (%v..%v) in UTC", e.CachedAt, before, after)
	}
	e, _, err = c.Get(ctx, key(2), time.Time{})
	must(t, err)
	if want := time.Date(2026, 11, 1, 12, 0, 0, 123_000_000, time.UTC); e.CachedAt != want {
		t.Errorf("CachedAt %v stored as %v, want %v", local, e.CachedAt, want)
	}
}

func TestPutReplaces(t *testing.T) {
	t.Parallel()
	c := newCache(t)
	old, repl := entry(1, t0), entry(2, t0.Add(time.Minute))
	repl.Key = old.Key
	must(t, c.Put(ctx, []cache.Entry{old}))
	must(t, c.Put(ctx, []cache.Entry{repl}))
	got, ok, err := c.Get(ctx, old.Key, time.Time{})
	if err != nil || !ok || got != repl {
		t.Fatalf("after a replace: %+v, %v, %v; want %+v", got, ok, err, repl)
	}
	// The same key twice in one batch: the last one wins.
	last := entry(3, t0)
	last.Key = old.Key
	must(t, c.Put(ctx, []cache.Entry{old, last}))
	if got, _, _ := c.Get(ctx, old.Key, time.Time{}); got != last {
		t.Errorf("same key twice in one Put: got %+v, want the last %+v", got, last)
	}
	st, err := c.Stats(ctx)
	must(t, err)
	if st.Entries != 1 {
		t.Errorf("Stats.Entries = %d after replacing one key, want 1", st.Entries)
	}
}

func TestGetMany(t *testing.T) {
	t.Parallel()
	c := newCache(t)
	stored := func(i int) bool { return i%3 != 0 && i < 1000 }
	var batch []cache.Entry
	for i := range 1000 {
		if stored(i) {
			batch = append(batch, entry(i, t0))
		}
	}
	must(t, c.Put(ctx, batch))
	seq := func(from, to, step int) []int {
		var s []int
		for i := from; i < to; i += step {
			s = append(s, i)
		}
		return s
	}
	tests := []struct {
		name string
		ids  []int
	}{
		{"none", nil},
		{"one hit", []int{1}},
		{"one miss", []int{3}},
		{"all misses", []int{0, 3, 6, 1000, 2000}},
		{"mixed", []int{1, 2, 3, 4, 5, 6, 7}},
		{"duplicates", []int{1, 1, 3, 1, 3, 2, 2}},
		{"exactly 256", seq(0, 256, 1)},
		{"257", seq(0, 257, 1)},
		{"600 with duplicates across batches", func() []int {
			s := seq(0, 300, 1)
			r := slices.Clone(s)
			slices.Reverse(r)
			return append(s, r...)
		}()},
		{"1500 with misses past the end", seq(0, 3000, 2)},
		{"same key 300 times", func() []int { s := make([]int, 300); s[0], s[299] = 3, 3; return s }()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys := make([]cache.Key, len(tt.ids))
			for i, id := range tt.ids {
				keys[i] = key(id)
			}
			got, ok, err := c.GetMany(ctx, keys, time.Time{})
			must(t, err)
			if len(got) != len(keys) || len(ok) != len(keys) {
				t.Fatalf("GetMany of %d keys returned %d entries, %d oks", len(keys), len(got), len(ok))
			}
			for i, id := range tt.ids {
				switch {
				case ok[i] != stored(id):
					t.Errorf("keys[%d] (request %d): ok %v, want %v", i, id, ok[i], stored(id))
				case ok[i] && got[i] != entry(id, t0):
					t.Errorf("keys[%d] (request %d): got %+v, want %+v", i, id, got[i], entry(id, t0))
				case !ok[i] && got[i] != (cache.Entry{}):
					t.Errorf("keys[%d] (request %d): a miss with a non-zero entry %+v", i, id, got[i])
				}
			}
		})
	}
}

func TestNotBefore(t *testing.T) {
	t.Parallel()
	c := newCache(t)
	must(t, c.Put(ctx, []cache.Entry{entry(1, t0), entry(2, t0.Add(time.Hour))}))
	tests := []struct {
		notBefore  time.Time
		hit1, hit2 bool
	}{
		{time.Time{}, true, true},
		{time.UnixMilli(0), true, true},
		{t0.Add(-time.Millisecond), true, true},
		{t0.Add(-time.Nanosecond), true, true},
		{t0, true, true},
		{t0.Add(time.Nanosecond), false, true}, // stored at t0's millisecond, which is before t0+1ns
		{t0.Add(time.Millisecond), false, true},
		{t0.Add(time.Hour), false, true},
		{t0.Add(time.Hour + time.Millisecond), false, false},
		{t0.In(time.FixedZone("X", -5*3600)), true, true},
	}
	for _, tt := range tests {
		_, ok1, err := c.Get(ctx, key(1), tt.notBefore)
		must(t, err)
		_, oks, err := c.GetMany(ctx, []cache.Key{key(1), key(2), key(1)}, tt.notBefore)
		must(t, err)
		if ok1 != tt.hit1 || oks[0] != tt.hit1 || oks[1] != tt.hit2 || oks[2] != tt.hit1 {
			t.Errorf("notBefore %v: Get %v, GetMany %v; want %v, [%v %v %v]", tt.notBefore, ok1, oks, tt.hit1, tt.hit1, tt.hit2, tt.hit1)
		}
	}
}

func TestPrune(t *testing.T) {
	t.Parallel()
	c := newCache(t)
	var batch []cache.Entry
	for i := range 10 {
		batch = append(batch, entry(i, t0.Add(time.Duration(i)*time.Hour)))
	}
	must(t, c.Put(ctx, batch))
	tests := []struct {
		olderThan time.Time
		deleted   int64
		left      int64
	}{
		{t0, 0, 10},
		{t0.Add(time.Nanosecond), 1, 9}, // entry 0 was stored in t0's millisecond, before t0+1ns
		{t0.Add(time.Nanosecond), 0, 9},
		{t0.Add(3*time.Hour + time.Millisecond), 3, 6},
		{t0.Add(100 * time.Hour), 6, 0},
	}
	for _, tt := range tests {
		n, err := c.Prune(ctx, tt.olderThan)
		must(t, err)
		st, err := c.Stats(ctx)
		must(t, err)
		if n != tt.deleted || st.Entries != tt.left {
			t.Errorf("Prune(%v) = %d, leaving %d; want %d, leaving %d", tt.olderThan, n, st.Entries, tt.deleted, tt.left)
		}
		for i := range 10 {
			at := t0.Add(time.Duration(i) * time.Hour)
			_, ok, err := c.Get(ctx, key(i), time.Time{})
			must(t, err)
			if want := !at.Before(tt.olderThan); ok != want {
				t.Errorf("after Prune(%v): entry stored at %v there: %v, want %v", tt.olderThan, at, ok, want)
			}
		}
	}
}

func TestPruneShrinksFile(t *testing.T) {
	t.Parallel()
	c := newCache(t)
	for b := range 10 {
		var batch []cache.Entry
		for i := range 500 {
			e := entry(b*500+i, t0)
			e.Text = strings.Repeat("x", 2000)
			batch = append(batch, e)
		}
		must(t, c.Put(ctx, batch))
	}
	must(t, c.Put(ctx, []cache.Entry{entry(-1, t0.Add(time.Hour))}))
	before, err := c.Stats(ctx)
	must(t, err)
	n, err := c.Prune(ctx, t0.Add(time.Minute))
	must(t, err)
	after, err := c.Stats(ctx)
	must(t, err)
	if n != 5000 || after.Entries != 1 {
		t.Fatalf("Prune deleted %d, left %d; want 5000, 1", n, after.Entries)
	}
	if after.Bytes > before.Bytes/10 {
		t.Errorf("Prune of all but one entry: %d bytes on disk before, %d after; want it to shrink", before.Bytes, after.Bytes)
	}
	if e, ok, err := c.Get(ctx, key(-1), time.Time{}); err != nil || !ok || e != entry(-1, t0.Add(time.Hour)) {
		t.Errorf("the entry kept: %+v, %v, %v", e, ok, err)
	}
}

func TestStats(t *testing.T) {
	t.Parallel()
	c := newCache(t)
	st, err := c.Stats(ctx)
	must(t, err)
	if st.Entries != 0 || !st.Oldest.IsZero() || !st.Newest.IsZero() || st.Models == nil || len(st.Models) != 0 || st.Bytes <= 0 {
		t.Errorf("Stats of an empty cache: %+v", st)
	}
	models := []string{"gpt://f/yandexgpt-lite/latest", "gpt://f/yandexgpt/rc", "gpt://f/llama-lite/latest"}
	var batch []cache.Entry
	for i := range 30 {
		e := entry(i, t0.Add(time.Duration(i%7)*time.Minute-time.Duration(i)*time.Second))
		e.ModelURI = models[i%len(models)]
		batch = append(batch, e)
	}
	must(t, c.Put(ctx, batch))
	want := map[string]int64{}
	oldest, newest := batch[0].CachedAt, batch[0].CachedAt
	for _, e := range batch {
		want[e.ModelURI]++
		if e.CachedAt.Before(oldest) {
			oldest = e.CachedAt
		}
		if e.CachedAt.After(newest) {
			newest = e.CachedAt
		}
	}
	st, err = c.Stats(ctx)
	must(t, err)
	if st.Entries != 30 || !st.Oldest.Equal(oldest) || !st.Newest.Equal(newest) || fmt.Sprint(st.Models) != fmt.Sprint(want) {
		t.Errorf("Stats = %+v\nwant 30 entries, oldest %v, newest %v, models %v", st, oldest, newest, want)
	}
	var files int64
	for _, suffix := range []string{"", "-wal"} {
		if fi, err := os.Stat(c.Path() + suffix); err == nil {
			files += fi.Size()
		}
	}
	if st.Bytes != files || st.Bytes < 30*100 {
		t.Errorf("Stats.Bytes = %d, the files have %d", st.Bytes, files)
	}
}

func TestExport(t *testing.T) {
	t.Parallel()
	c := newCache(t)
	var batch []cache.Entry
	for i := range 1000 {
		e := entry(i, t0.Add(time.Duration(i)*time.Millisecond))
		if i%10 == 0 {
			e.Text = "<b>\"quoted\"</b> & \\ \n\t 😀"
			e.ModelURI = "gpt://other/yandexgpt/latest"
		}
		batch = append(batch, e)
	}
	must(t, c.Put(ctx, batch))
	var out bytes.Buffer
	n, err := c.Export(ctx, &out)
	must(t, err)
	if n != int64(len(batch)) {
		t.Errorf("Export returned %d, want %d", n, len(batch))
	}
	want := map[cache.Key]cache.Entry{}
	for _, e := range batch {
		want[e.Key] = e
	}
	sc := bufio.NewScanner(&out)
	lines := 0
	for sc.Scan() {
		lines++
		var line struct {
			Key               string `json:"key"`
			ModelURI          string `json:"model_uri"`
			Text              string `json:"text"`
			AlternativeStatus string `json:"alternative_status"`
			Usage             struct {
				InputTokens      int64 `json:"input_tokens"`
				CompletionTokens int64 `json:"completion_tokens"`
				TotalTokens      int64 `json:"total_tokens"`
			} `json:"usage"`
			ModelVersion string `json:"model_version"`
			OperationID  string `json:"operation_id"`
			CachedAt     string `json:"cached_at"`
		}
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&line); err != nil {
			t.Fatalf("line %d: %v: %s", lines, err, sc.Bytes())
		}
		var k cache.Key
		if b, err := hex.DecodeString(line.Key); err != nil || len(b) != len(k) {
			t.Fatalf("line %d: key %q is not 64 hex digits", lines, line.Key)
		} else {
			copy(k[:], b)
		}
		at, err := time.Parse(time.RFC3339, line.CachedAt)
		if err != nil {
			t.Fatalf("line %d: cached_at: %v", lines, err)
		}
		got := cache.Entry{Key: k, ModelURI: line.ModelURI, Text: line.Text, AlternativeStatus: line.AlternativeStatus,
			InputTokens: line.Usage.InputTokens, CompletionTokens: line.Usage.CompletionTokens, TotalTokens: line.Usage.TotalTokens,
			ModelVersion: line.ModelVersion, OperationID: line.OperationID, CachedAt: at}
		w, ok := want[k]
		if !ok {
			t.Fatalf("line %d: key %s not stored, or exported twice", lines, line.Key)
		}
		if got != w {
			t.Errorf("line %d: %+v\nwant %+v", lines, got, w)
		}
		delete(want, k)
	}
	must(t, sc.Err())
	if lines != len(batch) || len(want) != 0 {
		t.Errorf("%d lines, %d entries not exported", lines, len(want))
	}

	// An empty cache exports nothing.
	out.Reset()
	if n, err := newCache(t).Export(ctx, &out); n != 0 || err != nil || out.Len() != 0 {
		t.Errorf("Export of an empty cache: %d, %v, %q", n, err, out.String())
	}
}

func TestFileModes(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	must(t, os.Chmod(root, 0o755))
	path := filepath.Join(root, "a", "b", "cache.db")
	c, err := cache.Open(path, cache.Options{})
	must(t, err)
	defer c.Close()
	must(t, c.Put(ctx, []cache.Entry{entry(1, t0)}))
	modes := map[string]fs.FileMode{
		root:                     0o755 | fs.ModeDir, // existing: left alone
		filepath.Dir(path):       0o700 | fs.ModeDir,
		filepath.Join(root, "a"): 0o700 | fs.ModeDir,
		path:                     0o600,
		path + "-wal":            0o600,
		path + "-shm":            0o600,
	}
	for name, want := range modes {
		fi, err := os.Stat(name)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		if got := fi.Mode(); got != want {
			t.Errorf("%s: mode %v, want %v", name, got, want)
		}
	}
	// An existing file keeps its mode.
	must(t, c.Close())
	must(t, os.Chmod(path, 0o640))
	c, err = cache.Open(path, cache.Options{})
	must(t, err)
	must(t, c.Close())
	if fi, _ := os.Stat(path); fi.Mode() != 0o640 {
		t.Errorf("reopened: mode %v, want the 0640 it had", fi.Mode())
	}
}

func TestSpecialPath(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	path := filepath.Join(root, "my cache ?#%&=+;'", "c?a#c%20he.db")
	c, err := cache.Open(path, cache.Options{})
	must(t, err)
	must(t, c.Put(ctx, []cache.Entry{entry(1, t0)}))
	must(t, c.Close())
	if _, err := os.Stat(path); err != nil {
		names, _ := filepath.Glob(filepath.Join(root, "*", "*"))
		t.Fatalf("the cache is not where asked: %v (files: %q)", err, names)
	}
	c, err = cache.Open(path, cache.Options{ReadOnly: true})
	must(t, err)
	defer c.Close()
	if _, ok, err := c.Get(ctx, key(1), time.Time{}); !ok || err != nil {
		t.Errorf("reopened: ok %v, err %v", ok, err)
	}
}

// damaged writes files that are not caches, or caches cut short.
func damaged(t *testing.T) map[string][]byte {
	t.Helper()
	c := newCache(t)
	for b := range 4 {
		batch := make([]cache.Entry, 500)
		for i := range batch {
			batch[i] = entry(b*500+i, t0)
		}
		must(t, c.Put(ctx, batch))
	}
	must(t, c.Close())
	db, err := os.ReadFile(c.Path())
	must(t, err)
	if len(db) < 64<<10 {
		t.Fatalf("the database has %d bytes: too small to cut", len(db))
	}
	random := make([]byte, 64<<10)
	rand.Read(random)
	files := map[string][]byte{
		"random":                random,
		"random with header":    append([]byte("SQLite format 3\x00"), random[16:]...),
		"text":                  []byte("this is not a database\n"),
		"header only":           db[:100],
		"cut in the header":     db[:50],
		"first page only":       db[:4096],
		"first page and a half": db[:4096+2048],
		"half":                  db[:len(db)/2],
		"half a page short":     db[:len(db)-2048],
		"a page short":          db[:len(db)-4096],
		"one byte short":        db[:len(db)-1],
	}
	zeroed := bytes.Clone(db)
	clear(zeroed[4096 : 3*4096])
	files["pages 2-3 zeroed"] = zeroed
	return files
}

func TestDamagedFile(t *testing.T) {
	t.Parallel()
	for name, data := range damaged(t) {
		for _, ro := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/readonly=%v", name, ro), func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "cache.db")
				must(t, os.WriteFile(path, data, 0o600))
				c, err := cache.Open(path, cache.Options{ReadOnly: ro})
				if err == nil {
					c.Close()
					t.Fatalf("Open of a damaged file (%s) succeeded", name)
				}
				if !strings.Contains(err.Error(), path) {
					t.Errorf("the error does not name the file: %v", err)
				}
				if errors.Is(err, cache.ErrNewerSchema) {
					t.Errorf("a damaged file reported as newer: %v", err)
				}
				t.Log(err)
				if got, _ := os.ReadFile(path); !bytes.Equal(got, data) {
					t.Errorf("Open changed the damaged file")
				}
			})
		}
	}
}

// rawExec runs statements on a cache file through SQLite directly.
func rawExec(t *testing.T, path string, stmts ...string) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	must(t, err)
	defer db.Close()
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

func TestSchemaVersion(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		stmts  []string
		newer  bool
		errHas string
	}{
		{"newer", []string{`UPDATE schema_version SET version = 2`}, true, "schema version 2"},
		{"much newer, entries gone", []string{`UPDATE schema_version SET version = 99`, `DROP TABLE entries`}, true, "schema version 99"},
		{"older", []string{`UPDATE schema_version SET version = 0`}, false, "unknown schema version 0"},
		{"no version row", []string{`DELETE FROM schema_version`}, false, "schema version"},
		{"entries table dropped", []string{`DROP TABLE entries`}, false, "no such table"},
	}
	for _, tt := range tests {
		for _, ro := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/readonly=%v", tt.name, ro), func(t *testing.T) {
				c := newCache(t)
				must(t, c.Close())
				rawExec(t, c.Path(), tt.stmts...)
				_, err := cache.Open(c.Path(), cache.Options{ReadOnly: ro})
				if err == nil {
					t.Fatal("Open succeeded")
				}
				if errors.Is(err, cache.ErrNewerSchema) != tt.newer || !strings.Contains(err.Error(), tt.errHas) || !strings.Contains(err.Error(), c.Path()) {
					t.Errorf("err = %v; want ErrNewerSchema %v, mentioning %q and the path", err, tt.newer, tt.errHas)
				}
			})
		}
	}
}

func TestNotACache(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "other.db")
	rawExec(t, path, `CREATE TABLE notes(text TEXT)`)
	for _, ro := range []bool{false, true} {
		_, err := cache.Open(path, cache.Options{ReadOnly: ro})
		if err == nil || !strings.Contains(err.Error(), "not a batchgpt cache") || !strings.Contains(err.Error(), path) {
			t.Errorf("Open (read-only %v) of another SQLite database: %v", ro, err)
		}
	}
	db, err := sql.Open("sqlite", path)
	must(t, err)
	defer db.Close()
	var n int
	must(t, db.QueryRow(`SELECT count(*) FROM sqlite_schema`).Scan(&n))
	if n != 1 {
		t.Errorf("Open added tables to another database: %d objects", n)
	}
}

func TestReadOnly(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, path := range []string{filepath.Join(dir, "cache.db"), filepath.Join(dir, "sub", "cache.db")} {
		_, err := cache.Open(path, cache.Options{ReadOnly: true})
		if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), path) {
			t.Errorf("read-only Open of a missing %s: %v, want fs.ErrNotExist naming the path", path, err)
		}
	}
	if names, _ := os.ReadDir(dir); len(names) != 0 {
		t.Errorf("read-only Open of a missing file created %v", names)
	}

	w := newCache(t)
	must(t, w.Put(ctx, []cache.Entry{entry(1, t0)}))
	must(t, w.Close())
	fi, err := os.Stat(w.Path())
	must(t, err)
	c, err := cache.Open(w.Path(), cache.Options{ReadOnly: true})
	must(t, err)
	defer c.Close()
	if err := c.Put(ctx, []cache.Entry{entry(2, t0)}); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("read-only Put: %v", err)
	}
	if _, err := c.Prune(ctx, t0.Add(time.Hour)); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("read-only Prune: %v", err)
	}
	if e, ok, err := c.Get(ctx, key(1), time.Time{}); err != nil || !ok || e != entry(1, t0) {
		t.Errorf("read-only Get: %+v, %v, %v", e, ok, err)
	}
	if st, err := c.Stats(ctx); err != nil || st.Entries != 1 {
		t.Errorf("read-only Stats: %+v, %v", st, err)
	}
	if n, err := c.Export(ctx, new(bytes.Buffer)); err != nil || n != 1 {
		t.Errorf("read-only Export: %d, %v", n, err)
	}
	must(t, c.Close())
	if fi2, err := os.Stat(w.Path()); err != nil || fi2.Size() != fi.Size() || !fi2.ModTime().Equal(fi.ModTime()) {
		t.Errorf("read-only use changed the file: %v -> %v (%v)", fi, fi2, err)
	}
}

func TestUnwritable(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	must(t, os.WriteFile(file, []byte("x"), 0o600))
	roDir := filepath.Join(dir, "ro")
	must(t, os.Mkdir(roDir, 0o500))
	t.Cleanup(func() { os.Chmod(roDir, 0o700) })
	roFile := filepath.Join(dir, "ro.db")
	w, err := cache.Open(roFile, cache.Options{})
	must(t, err)
	must(t, w.Close())
	must(t, os.Chmod(roFile, 0o400))
	root := os.Geteuid() == 0 // permissions do not stop root
	tests := []struct {
		name     string
		path     string
		readOnly bool
		skip     bool
	}{
		{"under a regular file", filepath.Join(file, "cache.db"), false, false},
		{"under a regular file, read-only", filepath.Join(file, "cache.db"), true, false},
		{"deeper under a regular file", filepath.Join(file, "a", "b", "cache.db"), false, false},
		{"a directory", dir, false, false},
		{"in a read-only directory", filepath.Join(roDir, "cache.db"), false, root},
		{"a read-only file", roFile, false, root},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.skip {
				t.Skip("running as root: file permissions do not stop writes")
			}
			c, err := cache.Open(tt.path, cache.Options{ReadOnly: tt.readOnly})
			if err == nil {
				c.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tt.path) {
				t.Errorf("the error does not name the path: %v", err)
			}
		})
	}
}

func TestCanceled(t *testing.T) {
	t.Parallel()
	c := newCache(t)
	must(t, c.Put(ctx, []cache.Entry{entry(1, t0)}))
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := c.Get(canceled, key(1), time.Time{}); err == nil {
		t.Error("Get with a canceled context succeeded")
	}
	if _, _, err := c.GetMany(canceled, []cache.Key{key(1)}, time.Time{}); err == nil {
		t.Error("GetMany with a canceled context succeeded")
	}
	if err := c.Put(canceled, []cache.Entry{entry(2, t0)}); err == nil {
		t.Error("Put with a canceled context succeeded")
	}
	if _, ok, err := c.Get(ctx, key(2), time.Time{}); ok || err != nil {
		t.Errorf("a canceled Put stored its entry (%v, %v)", ok, err)
	}
	if _, ok, err := c.Get(ctx, key(1), time.Time{}); !ok || err != nil {
		t.Errorf("after canceled calls: %v, %v", ok, err)
	}
}

func TestClosed(t *testing.T) {
	t.Parallel()
	c := newCache(t)
	must(t, c.Put(ctx, []cache.Entry{entry(1, t0)}))
	must(t, c.Close())
	must(t, c.Close())
	if _, _, err := c.Get(ctx, key(1), time.Time{}); err == nil {
		t.Error("Get after Close succeeded")
	}
	if _, _, err := c.GetMany(ctx, []cache.Key{key(1)}, time.Time{}); err == nil {
		t.Error("GetMany after Close succeeded")
	}
	if err := c.Put(ctx, []cache.Entry{entry(2, t0)}); err == nil {
		t.Error("Put after Close succeeded")
	}
	if _, err := c.Stats(ctx); err == nil {
		t.Error("Stats after Close succeeded")
	}
	if _, err := c.Prune(ctx, t0); err == nil {
		t.Error("Prune after Close succeeded")
	}
	if _, err := c.Export(ctx, new(bytes.Buffer)); err == nil {
		t.Error("Export after Close succeeded")
	}
	// Closing the last handle checkpoints the WAL into the file and removes it.
	for _, suffix := range []string{"-wal", "-shm"} {
		if _, err := os.Stat(c.Path() + suffix); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("after Close: %s%s: %v", c.Path(), suffix, err)
		}
	}
}

func TestDefaultPath(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	tests := []struct{ xdg, want string }{
		{"", filepath.Join(home, ".cache", "batchgpt", "cache.db")},
		{"relative/dir", filepath.Join(home, ".cache", "batchgpt", "cache.db")},
		{"/var/cache/me", "/var/cache/me/batchgpt/cache.db"},
	}
	for _, tt := range tests {
		t.Setenv("XDG_CACHE_HOME", tt.xdg)
		got, err := cache.DefaultPath()
		if err != nil || got != tt.want {
			t.Errorf("XDG_CACHE_HOME=%q: DefaultPath() = %q, %v; want %q", tt.xdg, got, err, tt.want)
		}
	}
	if names, _ := os.ReadDir(home); len(names) != 0 {
		t.Errorf("DefaultPath created %v", names)
	}
}

// worker stores n entries for requests from, from+1, ... in batches of 50,
// reading each batch back and some of other's entries, as a batchgpt run
// sharing the cache would.
func worker(c *cache.Cache, from, n, other int) error {
	for b := 0; b < n; b += 50 {
		batch := make([]cache.Entry, 0, 50)
		keys := make([]cache.Key, 0, 50)
		for i := from + b; i < from+min(b+50, n); i++ {
			batch = append(batch, entry(i, t0))
			keys = append(keys, key(i))
		}
		if err := c.Put(ctx, batch); err != nil {
			return err
		}
		got, ok, err := c.GetMany(ctx, keys, t0)
		if err != nil {
			return err
		}
		for i := range batch {
			if !ok[i] || got[i] != batch[i] {
				return fmt.Errorf("request %d: read back %v %+v", from+b+i, ok[i], got[i])
			}
		}
		if _, _, err := c.Get(ctx, key(other+b), time.Time{}); err != nil {
			return err
		}
		if _, _, err := c.GetMany(ctx, []cache.Key{key(other + b), key(other + b + 1)}, time.Time{}); err != nil {
			return err
		}
	}
	return nil
}

// checkAll checks that requests from..from+n are all in the cache at path.
func checkAll(t *testing.T, path string, ranges ...[2]int) {
	t.Helper()
	c, err := cache.Open(path, cache.Options{ReadOnly: true})
	must(t, err)
	defer c.Close()
	for _, r := range ranges {
		keys := make([]cache.Key, r[1])
		for i := range keys {
			keys[i] = key(r[0] + i)
		}
		got, ok, err := c.GetMany(ctx, keys, time.Time{})
		must(t, err)
		for i := range keys {
			if !ok[i] || got[i] != entry(r[0]+i, t0) {
				t.Fatalf("request %d: %v %+v", r[0]+i, ok[i], got[i])
			}
		}
	}
}

const childEnv = "BATCHGPT_CACHE_TEST_CHILD"

// TestTwoProcesses starts two processes that create one new cache at the
// same moment and write and read it at the same time.
func TestTwoProcesses(t *testing.T) {
	const n = 3000
	if v := os.Getenv(childEnv); v != "" {
		// The child: id,path,start-file.
		parts := strings.SplitN(v, ",", 3)
		id, _ := strconv.Atoi(parts[0])
		for {
			if _, err := os.Stat(parts[2]); err == nil {
				break
			}
			time.Sleep(time.Millisecond)
		}
		c, err := cache.Open(parts[1], cache.Options{})
		if err == nil {
			err = worker(c, id*n, n, (1-id)*n)
			err = errors.Join(err, c.Close())
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "child", id, "error:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if testing.Short() {
		t.Skip("starts two processes")
	}
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "new", "cache.db")
	start := filepath.Join(dir, "start")
	var cmds []*exec.Cmd
	var outs []*bytes.Buffer
	// A child stuck for a minute dumps its goroutines into its output.
	stuck, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for id := range 2 {
		cmd := exec.CommandContext(stuck, os.Args[0], "-test.run=^TestTwoProcesses$", "-test.count=1")
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGQUIT) }
		cmd.WaitDelay = 10 * time.Second
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d,%s,%s", childEnv, id, path, start))
		out := new(bytes.Buffer)
		cmd.Stdout, cmd.Stderr = out, out
		must(t, cmd.Start())
		cmds, outs = append(cmds, cmd), append(outs, out)
	}
	time.Sleep(200 * time.Millisecond) // both are waiting for the start file
	must(t, os.WriteFile(start, nil, 0o600))
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("child %d: %v\n%s", i, err, outs[i])
		}
	}
	if t.Failed() {
		return
	}
	checkAll(t, path, [2]int{0, n}, [2]int{n, n})
}

// TestConcurrentCreate opens one new file from several goroutines at once:
// switching a new file to WAL mode does not wait for busy_timeout, Open retries.
func TestConcurrentCreate(t *testing.T) {
	t.Parallel()
	for range 20 {
		path := filepath.Join(t.TempDir(), "new", "cache.db")
		var g errgroup.Group
		for range 8 {
			g.Go(func() error {
				c, err := cache.Open(path, cache.Options{})
				if err != nil {
					return err
				}
				return c.Close()
			})
		}
		must(t, g.Wait())
	}
}

// TestTwoHandles does what TestTwoProcesses does with two Caches in one
// process, for the race detector, and several goroutines per Cache.
func TestTwoHandles(t *testing.T) {
	t.Parallel()
	const n = 1000
	path := filepath.Join(t.TempDir(), "new", "cache.db")
	var g errgroup.Group
	for h := range 2 {
		g.Go(func() error {
			c, err := cache.Open(path, cache.Options{})
			if err != nil {
				return err
			}
			defer c.Close()
			var gh errgroup.Group
			for w := range 2 {
				from := (2*h + w) * n
				gh.Go(func() error { return worker(c, from, n, (from+n)%(4*n)) })
			}
			gh.Go(func() error {
				_, err := c.Stats(ctx)
				return err
			})
			return gh.Wait()
		})
	}
	must(t, g.Wait())
	checkAll(t, path, [2]int{0, 4 * n})
}

// The writer checkpoints the WAL at 10,000 pages, not SQLite's 1,000 (Put's speed with random
// keys), and a run's WAL does not outlive it: Close checkpoints it into the file and removes it.
func TestWALCheckpoints(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "cache.db")
	c, err := cache.Open(path, cache.Options{})
	must(t, err)
	pages, err := c.WALAutoCheckpoint()
	must(t, err)
	if pages != 10000 {
		t.Fatalf("wal_autocheckpoint %d pages, want 10000", pages)
	}
	batch := make([]cache.Entry, 0, 500)
	for i := range 5000 {
		batch = append(batch, entry(i, t0))
		if len(batch) == cap(batch) {
			must(t, c.Put(ctx, batch))
			batch = batch[:0]
		}
	}
	if fi, err := os.Stat(path + "-wal"); err != nil || fi.Size() == 0 {
		t.Fatalf("after 5000 puts, the WAL: %v, %v; want one not yet checkpointed", fi, err)
	}
	must(t, c.Close())
	if fi, err := os.Stat(path + "-wal"); err == nil && fi.Size() > 0 {
		t.Fatalf("the WAL after Close: %d bytes, want none", fi.Size())
	}
	c, err = cache.Open(path, cache.Options{})
	must(t, err)
	defer c.Close()
	got, ok, err := c.GetMany(ctx, []cache.Key{key(0), key(4999)}, time.Time{})
	must(t, err)
	if !ok[0] || !ok[1] || got[1].OperationID != entry(4999, t0).OperationID {
		t.Fatalf("after reopening: %v %+v", ok, got)
	}
}
