package cache

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/bits"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Key is the SHA-256 of the canonical request body (computed by the caller).
type Key [32]byte

// Entry is one cached answer.
type Entry struct {
	Key               Key
	ModelURI          string
	Text              string
	AlternativeStatus string
	InputTokens       int64
	CompletionTokens  int64
	TotalTokens       int64
	ModelVersion      string
	OperationID       string
	CachedAt          time.Time // when the answer was stored (UTC, millisecond precision); Put stores a zero CachedAt as the time of the Put
}

// ErrNewerSchema says the cache file was written by a newer batchgpt.
var ErrNewerSchema = errors.New("the cache was written by a newer batchgpt")

// errClosed is returned by the methods of a closed cache.
var errClosed = errors.New("closed")

// errReadOnly is returned by the writing methods of a cache opened with Options.ReadOnly.
var errReadOnly = errors.New("the cache is open read-only")

// schemaVersion is the version this package reads and writes; see doc.go.
const schemaVersion = 1

// Options are the options of Open.
type Options struct {
	// ReadOnly never creates the file or its directory and never writes to
	// it (dry runs, stats, export): Put and Prune return an error, and a
	// missing file is an error wrapping fs.ErrNotExist. SQLite may still
	// create the -shm and -wal files it needs to read a WAL database.
	ReadOnly bool
}

const (
	// busyTimeout is how long a statement waits for another connection's lock
	// (another batchgpt process writing) before it fails.
	busyTimeout = 10 * time.Second
	// maxBatch, 256, is the most keys one lookup statement carries. Measured:
	// batches of 64 and 256 are equally fast per key.
	logMaxBatch = 8
	maxBatch    = 1 << logMaxBatch
	// maxReaders caps the reader connections of one Cache.
	maxReaders = 4
)

const entryColumns = "key, model_uri, text, alternative_status, input_tokens, completion_tokens, total_tokens, model_version, operation_id, cached_at"

var schema = []string{
	`CREATE TABLE IF NOT EXISTS schema_version(version INTEGER NOT NULL)`,
	`CREATE TABLE IF NOT EXISTS entries(
	key                BLOB NOT NULL CHECK(length(key) = 32),
	model_uri          TEXT NOT NULL,
	text               TEXT NOT NULL,
	alternative_status TEXT NOT NULL,
	input_tokens       INTEGER NOT NULL,
	completion_tokens  INTEGER NOT NULL,
	total_tokens       INTEGER NOT NULL,
	model_version      TEXT NOT NULL,
	operation_id       TEXT NOT NULL,
	cached_at          INTEGER NOT NULL
)`,
	`CREATE UNIQUE INDEX IF NOT EXISTS entries_key ON entries(key)`,
	`CREATE INDEX IF NOT EXISTS entries_cached_at ON entries(cached_at)`,
}

const putSQL = `INSERT INTO entries(` + entryColumns + `) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(key) DO UPDATE SET model_uri = excluded.model_uri, text = excluded.text,
	alternative_status = excluded.alternative_status, input_tokens = excluded.input_tokens,
	completion_tokens = excluded.completion_tokens, total_tokens = excluded.total_tokens,
	model_version = excluded.model_version, operation_id = excluded.operation_id, cached_at = excluded.cached_at`

// Cache is an open cache file. It is safe for concurrent use.
type Cache struct {
	path     string // as given to Open
	file     string // absolute
	readOnly bool
	// w is the single writer connection (nil when read-only): SQLite allows
	// one writer at a time anyway, and queueing in database/sql is cheaper
	// than queueing on the file lock. r is the pool of reader connections,
	// which in WAL mode never wait for the writer.
	w, r    *sql.DB
	readers int // connections of r
	put     *sql.Stmt

	mu     sync.Mutex
	closed bool
	lookup [logMaxBatch + 1]*sql.Stmt // lookup[i] looks up 1<<i keys
}

// DefaultPath returns $XDG_CACHE_HOME/batchgpt/cache.db if XDG_CACHE_HOME is
// set to an absolute path, else ~/.cache/batchgpt/cache.db. It creates nothing.
func DefaultPath() (string, error) {
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "batchgpt", "cache.db"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("default cache path: %w (set XDG_CACHE_HOME or choose a path)", err)
	}
	return filepath.Join(home, ".cache", "batchgpt", "cache.db"), nil
}

// Open opens the cache at path, creating it (and its directory) unless
// opt.ReadOnly. Several processes may open one file at once.
func Open(path string, opt Options) (_ *Cache, err error) {
	if path == "" {
		return nil, errors.New("open cache: empty path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open cache %s: %w", path, err)
	}
	c := &Cache{path: path, file: abs, readOnly: opt.ReadOnly}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if opt.ReadOnly {
		// sqlite would report a missing file as "unable to open database file";
		// fs.ErrNotExist lets callers say there is no cache yet.
		if _, err := os.Stat(abs); err != nil {
			return nil, fmt.Errorf("open cache %s: %w", path, err)
		}
	} else {
		if err := createFile(abs); err != nil {
			return nil, fmt.Errorf("open cache %s: %w", path, err)
		}
		c.w, err = sql.Open("sqlite", dsn(abs, url.Values{
			// NORMAL syncs the WAL at checkpoints, not at every commit: the
			// database cannot be corrupted, and a power loss can only drop the
			// last commits, which costs a resubmission, never a wrong answer.
			"_synchronous": {"NORMAL"},
			// Writers take the write lock at BEGIN: a deferred transaction that
			// read first cannot upgrade while another process writes, and fails
			// at once instead of waiting for busy_timeout.
			"_txlock": {"immediate"},
			// A checkpoint when the WAL holds 10,000 pages (40 MB of 4 KB pages), not
			// SQLite's 1,000: random keys dirty index pages all over the file, and each
			// checkpoint copies and syncs every page written since the last, so with a
			// tenth as many checkpoints a page written again and again is copied a tenth
			// as often (Put: 30,500 to 37,700 entries a second). Lookups are as fast; the
			// WAL is checkpointed and removed when the last connection closes.
			"_pragma": {"wal_autocheckpoint(10000)"},
		}))
		if err != nil {
			return nil, c.wrap("open", err)
		}
		c.w.SetMaxOpenConns(1)
		c.w.SetMaxIdleConns(1)
		if err := retryBusy(c.initFile); err != nil {
			return nil, err
		}
		if c.put, err = c.w.Prepare(putSQL); err != nil {
			return nil, c.wrap("open", err)
		}
	}
	q := url.Values{}
	if opt.ReadOnly {
		// mode=ro: SQLite itself refuses to create the file or to write.
		q.Set("mode", "ro")
	}
	if c.r, err = sql.Open("sqlite", dsn(abs, q)); err != nil {
		return nil, c.wrap("open", err)
	}
	c.readers = min(max(runtime.GOMAXPROCS(0), 1), maxReaders)
	c.r.SetMaxOpenConns(c.readers)
	c.r.SetMaxIdleConns(c.readers)
	if opt.ReadOnly {
		if err := retryBusy(func() error { return c.checkVersion(c.r) }); err != nil {
			return nil, err
		}
	}
	if err := c.checkSize(); err != nil {
		return nil, err
	}
	// Preparing the lookup of one key checks that the entries table is there
	// and readable: a damaged file fails here rather than at the first lookup.
	if _, err := c.lookupStmt(1); err != nil {
		return nil, err
	}
	return c, nil
}

// createFile makes the directory (0700) and the file (0600) unless they
// exist, and checks that an existing file can be written.
func createFile(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		f, err = os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return err
		}
		return f.Close()
	}
	if err != nil {
		return err
	}
	// The umask may have taken bits away from 0600; make it exactly that.
	err = f.Chmod(0o600)
	return errors.Join(err, f.Close())
}

// dsn is the modernc.org/sqlite data source name of the file at the absolute
// path with the parameters of q and those every connection gets.
func dsn(path string, q url.Values) string {
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	// No memory mapping (mmap_size stays 0): it made lookups about 40% faster in isolation, but
	// every page read through it counts in the process's resident memory, and a million-row run
	// answered from the cache peaked at 393 MiB with it against a run equally fast without it.
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(path), RawQuery: q.Encode()}
	if !strings.HasPrefix(u.Path, "/") { // a Windows path: file:///C:/...
		u.Path = "/" + u.Path
	}
	return u.String()
}

// initFile makes a new file a cache: WAL mode, incremental auto-vacuum and
// the tables; of an existing file it only checks the version, without writing.
// Two processes may create the same new file at once: the second waits for
// the first one's BEGIN IMMEDIATE and then finds its tables, and switching to
// WAL mode fails with SQLITE_BUSY rather than wait, so Open retries it.
func (c *Cache) initFile() error {
	err := c.checkVersion(c.w)
	if !errors.Is(err, errNoSchema) {
		return err
	}
	var mode string
	if err := c.w.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil {
		return c.wrap("open", err)
	}
	if mode != "wal" {
		// auto_vacuum can only be chosen before the first page is written, and
		// switching to WAL mode writes it.
		var pages int64
		if err := c.w.QueryRow(`PRAGMA page_count`).Scan(&pages); err != nil {
			return c.wrap("open", err)
		}
		if pages == 0 {
			// So that Prune can give the space of deleted entries back.
			if _, err := c.w.Exec(`PRAGMA auto_vacuum = INCREMENTAL`); err != nil {
				return c.wrap("open", err)
			}
		}
		if err := c.w.QueryRow(`PRAGMA journal_mode = WAL`).Scan(&mode); err != nil {
			return c.wrap("open", err)
		}
		if mode != "wal" {
			return fmt.Errorf("open cache %s: cannot switch to WAL mode (journal mode %q)", c.path, mode)
		}
	}
	tx, err := c.w.Begin()
	if err != nil {
		return c.wrap("create schema", err)
	}
	defer tx.Rollback()
	var tables int
	if err := tx.QueryRow(`SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name IN ('schema_version', 'entries')`).Scan(&tables); err != nil {
		return c.wrap("create schema", err)
	}
	if tables == 0 {
		if err := tx.QueryRow(`SELECT count(*) FROM sqlite_schema`).Scan(&tables); err != nil {
			return c.wrap("create schema", err)
		}
		if tables > 0 {
			return fmt.Errorf("open cache %s: a SQLite database of something else, not a batchgpt cache (it has no schema_version table)", c.path)
		}
		for _, s := range schema {
			if _, err := tx.Exec(s); err != nil {
				return c.wrap("create schema", err)
			}
		}
		if _, err := tx.Exec(`INSERT INTO schema_version(version) VALUES(?)`, schemaVersion); err != nil {
			return c.wrap("create schema", err)
		}
		if err := tx.Commit(); err != nil {
			return c.wrap("create schema", err)
		}
	}
	// Another process made the tables meanwhile: let go of the lock and of
	// the only writer connection before checking them.
	tx.Rollback()
	return c.checkVersion(c.w)
}

// retryBusy runs f until it does not fail with SQLITE_BUSY, for at most
// busyTimeout.
func retryBusy(f func() error) error {
	deadline := time.Now().Add(busyTimeout)
	for {
		err := f()
		var se *sqlite.Error
		if !errors.As(err, &se) || se.Code()&0xff != sqlite3.SQLITE_BUSY || time.Now().After(deadline) {
			return err
		}
		time.Sleep(time.Duration(5+rand.IntN(20)) * time.Millisecond)
	}
}

// checkSize checks that the file is whole pages: SQLite writes it in pages,
// so anything else is a file cut short, which SQLite would only notice when
// it reads the last page. (A file cut at a page boundary is shorter than its
// header says, which SQLite notices at once.)
func (c *Cache) checkSize() error {
	var pageSize int64
	if err := c.r.QueryRow(`PRAGMA page_size`).Scan(&pageSize); err != nil {
		return c.wrap("open", err)
	}
	var size int64
	for try := range 2 {
		fi, err := os.Stat(c.file)
		if err != nil {
			return fmt.Errorf("open cache %s: %w", c.path, err)
		}
		if size = fi.Size(); pageSize <= 0 || size%pageSize == 0 {
			return nil
		}
		if try == 0 {
			// Another process's checkpoint may be extending the file right now.
			time.Sleep(50 * time.Millisecond)
		}
	}
	return fmt.Errorf("open cache %s: damaged: %d bytes is not a whole number of %d-byte pages (the file was cut short; deleting it and its -wal and -shm files only costs resubmissions)", c.path, size, pageSize)
}

var errNoSchema = errors.New("no schema_version table")

// checkVersion reads the schema version: errNoSchema when the file has no
// schema_version table yet (a new file), an error wrapping ErrNewerSchema
// when it is newer than ours.
func (c *Cache) checkVersion(db *sql.DB) error {
	var n int
	err := db.QueryRow(`SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'schema_version'`).Scan(&n)
	if err != nil {
		return c.wrap("open", err)
	}
	if n == 0 {
		if c.readOnly {
			return fmt.Errorf("open cache %s: not a batchgpt cache, or not initialized (it has no schema_version table)", c.path)
		}
		return errNoSchema
	}
	var v int64
	err = db.QueryRow(`SELECT max(version) FROM schema_version`).Scan(&v)
	switch {
	case err != nil:
		// max() of no rows is NULL: Scan into int64 fails.
		return c.wrap("read the schema version of", err)
	case v > schemaVersion:
		return fmt.Errorf("open cache %s: %w (schema version %d; this one reads version %d): upgrade batchgpt, or use another cache file", c.path, ErrNewerSchema, v, schemaVersion)
	case v < schemaVersion:
		return fmt.Errorf("open cache %s: unknown schema version %d", c.path, v)
	}
	return nil
}

// wrap names the file in an error, and says what a damaged file means.
func (c *Cache) wrap(op string, err error) error {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT:
			return fmt.Errorf("%s cache %s: not a SQLite database, or damaged (deleting it and its -wal and -shm files only costs resubmissions): %w", op, c.path, err)
		}
	}
	return fmt.Errorf("%s cache %s: %w", op, c.path, err)
}

// lookupStmt returns the statement that looks up n keys, n a power of two
// up to maxBatch, preparing it on first use.
func (c *Cache) lookupStmt(n int) (*sql.Stmt, error) {
	i := bits.Len(uint(n)) - 1
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("cache %s: %w", c.path, errClosed)
	}
	if s := c.lookup[i]; s != nil {
		return s, nil
	}
	q := `SELECT ` + entryColumns + ` FROM entries WHERE key IN (?` + strings.Repeat(", ?", n-1) + `) AND cached_at >= ?`
	s, err := c.r.Prepare(q)
	if err != nil {
		return nil, c.wrap("open", err)
	}
	c.lookup[i] = s
	return s, nil
}

// Get looks up one key; entries with CachedAt before notBefore are ignored
// (a zero notBefore takes any age).
func (c *Cache) Get(ctx context.Context, k Key, notBefore time.Time) (Entry, bool, error) {
	stmt, err := c.lookupStmt(1)
	if err != nil {
		return Entry{}, false, err
	}
	var e Entry
	var ok bool
	if err := c.query(ctx, stmt, []any{k[:], sinceMilli(notBefore)}, func(f *Entry) { e, ok = *f, true }); err != nil {
		return Entry{}, false, c.wrap("lookup in", err)
	}
	return e, ok, nil
}

// GetMany looks up keys, up to 256 in one statement, and the statements of
// more keys on several connections at once. The results are aligned
// with keys: ok[i] is false when keys[i] is not cached (or older than
// notBefore). Keys may repeat.
func (c *Cache) GetMany(ctx context.Context, keys []Key, notBefore time.Time) (entries []Entry, ok []bool, err error) {
	entries, ok = make([]Entry, len(keys)), make([]bool, len(keys))
	since := sinceMilli(notBefore)
	chunks := (len(keys) + maxBatch - 1) / maxBatch
	// Statements of several chunks run at once, one per reader connection:
	// a lookup is CPU-bound (the pages are in memory), and SQLite runs one
	// statement per connection at a time.
	workers := min(chunks, c.readers)
	var next atomic.Int64 // the next chunk to look up
	work := func(ctx context.Context) error {
		l := newLookup()
		for {
			start := int(next.Add(1)-1) * maxBatch
			if start >= len(keys) {
				return nil
			}
			end := min(start+maxBatch, len(keys))
			if err := l.run(ctx, c, keys[start:end], since, entries[start:end], ok[start:end]); err != nil {
				return err
			}
		}
	}
	if workers <= 1 {
		err = work(ctx)
	} else {
		g, gctx := errgroup.WithContext(ctx)
		for range workers {
			g.Go(func() error { return work(gctx) })
		}
		err = g.Wait()
	}
	if err != nil {
		return nil, nil, err
	}
	return entries, ok, nil
}

// lookup is the state of one goroutine of GetMany.
type lookup struct {
	args  []any
	found map[Key]Entry
}

func newLookup() *lookup {
	return &lookup{args: make([]any, 0, maxBatch+1), found: make(map[Key]Entry, maxBatch)}
}

// run looks up at most maxBatch keys with one statement and stores the
// results in entries and ok, aligned with keys.
func (l *lookup) run(ctx context.Context, c *Cache, keys []Key, since int64, entries []Entry, ok []bool) error {
	n := 1 << bits.Len(uint(len(keys)-1)) // the next power of two: few statements to prepare
	stmt, err := c.lookupStmt(n)
	if err != nil {
		return err
	}
	l.args = l.args[:0]
	for i := range n {
		l.args = append(l.args, keys[min(i, len(keys)-1)][:]) // the padding repeats the last key
	}
	l.args = append(l.args, since)
	clear(l.found)
	if err := c.query(ctx, stmt, l.args, func(e *Entry) { l.found[e.Key] = *e }); err != nil {
		return c.wrap("lookup in", err)
	}
	for i, k := range keys {
		entries[i], ok[i] = l.found[k]
	}
	return nil
}

// sinceMilli is the least cached_at that is not before notBefore.
func sinceMilli(notBefore time.Time) int64 {
	if notBefore.IsZero() {
		return math.MinInt64
	}
	return ceilMilli(notBefore)
}

// ceilMilli is t in Unix milliseconds, rounded up: an entry stored in the
// millisecond t falls in is not "at or after" t unless t is on the millisecond.
func ceilMilli(t time.Time) int64 {
	ms := t.UnixMilli()
	if time.UnixMilli(ms).Before(t) {
		ms++
	}
	return ms
}

// query runs a lookup and calls fn with each entry (valid only during the call).
func (c *Cache) query(ctx context.Context, stmt *sql.Stmt, args []any, fn func(*Entry)) error {
	rows, err := stmt.QueryContext(ctx, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	var e Entry
	for rows.Next() {
		if err := scanEntry(rows, &e); err != nil {
			return err
		}
		fn(&e)
	}
	return rows.Err()
}

// scanEntry reads a row of entryColumns.
func scanEntry(rows *sql.Rows, e *Entry) error {
	var key sql.RawBytes
	var ms int64
	if err := rows.Scan(&key, &e.ModelURI, &e.Text, &e.AlternativeStatus, &e.InputTokens, &e.CompletionTokens,
		&e.TotalTokens, &e.ModelVersion, &e.OperationID, &ms); err != nil {
		return err
	}
	if len(key) != len(e.Key) {
		return fmt.Errorf("damaged entry: a key of %d bytes", len(key))
	}
	copy(e.Key[:], key)
	e.CachedAt = time.UnixMilli(ms).UTC()
	return nil
}

// Put stores entries in one transaction, replacing entries with the same key.
func (c *Cache) Put(ctx context.Context, entries []Entry) error {
	if c.readOnly {
		return fmt.Errorf("put into cache %s: %w", c.path, errReadOnly)
	}
	if len(entries) == 0 {
		return nil
	}
	now := time.Now()
	tx, err := c.w.BeginTx(ctx, nil)
	if err != nil {
		return c.wrap("write to", err)
	}
	defer tx.Rollback()
	stmt := tx.StmtContext(ctx, c.put)
	for i := range entries {
		e := &entries[i]
		at := e.CachedAt
		if at.IsZero() {
			at = now
		}
		if _, err := stmt.ExecContext(ctx, e.Key[:], e.ModelURI, e.Text, e.AlternativeStatus, e.InputTokens,
			e.CompletionTokens, e.TotalTokens, e.ModelVersion, e.OperationID, at.UnixMilli()); err != nil {
			return c.wrap("write to", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return c.wrap("write to", err)
	}
	return nil
}

// Stats describes the contents of a cache.
type Stats struct {
	Entries int64
	Bytes   int64            // size on disk: the database file plus its -wal file
	Oldest  time.Time        // zero when empty
	Newest  time.Time        // zero when empty
	Models  map[string]int64 // entries per model URI
}

// Stats counts the entries (reading them all: about a second for a million).
func (c *Cache) Stats(ctx context.Context) (Stats, error) {
	st := Stats{Models: map[string]int64{}}
	rows, err := c.r.QueryContext(ctx, `SELECT model_uri, count(*), min(cached_at), max(cached_at) FROM entries GROUP BY model_uri`)
	if err != nil {
		return Stats{}, c.wrap("stats of", err)
	}
	defer rows.Close()
	oldest, newest := int64(math.MaxInt64), int64(math.MinInt64)
	for rows.Next() {
		var model string
		var n, lo, hi int64
		if err := rows.Scan(&model, &n, &lo, &hi); err != nil {
			return Stats{}, c.wrap("stats of", err)
		}
		st.Models[model] = n
		st.Entries += n
		oldest, newest = min(oldest, lo), max(newest, hi)
	}
	if err := rows.Err(); err != nil {
		return Stats{}, c.wrap("stats of", err)
	}
	if st.Entries > 0 {
		st.Oldest, st.Newest = time.UnixMilli(oldest).UTC(), time.UnixMilli(newest).UTC()
	}
	for _, name := range []string{c.file, c.file + "-wal"} {
		fi, err := os.Stat(name)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return Stats{}, fmt.Errorf("stats of cache: %w", err)
		}
		if err == nil {
			st.Bytes += fi.Size()
		}
	}
	return st, nil
}

// Prune deletes the entries stored before olderThan and returns how many it
// deleted. In the same transaction it gives the freed pages back to the file
// system (PRAGMA incremental_vacuum, for files made by this package), so the
// file shrinks instead of keeping free space; then it checkpoints the WAL and
// truncates it, if no other process is reading at that moment (it waits up to
// the busy timeout). It does not VACUUM: that rewrites the whole file.
func (c *Cache) Prune(ctx context.Context, olderThan time.Time) (int64, error) {
	if c.readOnly {
		return 0, fmt.Errorf("prune cache %s: %w", c.path, errReadOnly)
	}
	tx, err := c.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, c.wrap("prune", err)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `DELETE FROM entries WHERE cached_at < ?`, ceilMilli(olderThan))
	if err != nil {
		return 0, c.wrap("prune", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, c.wrap("prune", err)
	}
	if n > 0 {
		if _, err := tx.ExecContext(ctx, `PRAGMA incremental_vacuum`); err != nil {
			return 0, c.wrap("prune", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, c.wrap("prune", err)
	}
	if n > 0 {
		// Best effort: the entries are gone; a reader in another process only
		// keeps the WAL file as long as it is until a later checkpoint.
		var busy, log, done int64
		_ = c.w.QueryRowContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &log, &done)
	}
	return n, nil
}

// exportLine is one line of Export.
type exportLine struct {
	Key               string      `json:"key"`
	ModelURI          string      `json:"model_uri"`
	Text              string      `json:"text"`
	AlternativeStatus string      `json:"alternative_status"`
	Usage             exportUsage `json:"usage"`
	ModelVersion      string      `json:"model_version"`
	OperationID       string      `json:"operation_id"`
	CachedAt          string      `json:"cached_at"`
}

type exportUsage struct {
	InputTokens      int64 `json:"input_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
}

// Export writes every entry to w as a JSON object per line and returns how
// many it wrote. It streams from one
// read transaction: a consistent snapshot, in constant memory.
func (c *Cache) Export(ctx context.Context, w io.Writer) (int64, error) {
	tx, err := c.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return 0, c.wrap("export", err)
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT `+entryColumns+` FROM entries ORDER BY rowid`)
	if err != nil {
		return 0, c.wrap("export", err)
	}
	defer rows.Close()
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	var n int64
	var e Entry
	for rows.Next() {
		if err := scanEntry(rows, &e); err != nil {
			return n, c.wrap("export", err)
		}
		if err := enc.Encode(exportLine{
			Key: hex.EncodeToString(e.Key[:]), ModelURI: e.ModelURI, Text: e.Text, AlternativeStatus: e.AlternativeStatus,
			Usage:        exportUsage{InputTokens: e.InputTokens, CompletionTokens: e.CompletionTokens, TotalTokens: e.TotalTokens},
			ModelVersion: e.ModelVersion, OperationID: e.OperationID, CachedAt: e.CachedAt.Format(time.RFC3339Nano),
		}); err != nil {
			return n, fmt.Errorf("export cache %s: %w", c.path, err)
		}
		n++
	}
	if err := rows.Err(); err != nil {
		return n, c.wrap("export", err)
	}
	if err := bw.Flush(); err != nil {
		return n, fmt.Errorf("export cache %s: %w", c.path, err)
	}
	return n, nil
}

// Close closes the cache. The writer connection closes last: it then
// checkpoints the WAL into the database file and removes the -wal and -shm
// files, unless another process still has the cache open.
func (c *Cache) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	var errs []error
	for _, s := range c.lookup {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	if c.r != nil {
		errs = append(errs, c.r.Close())
	}
	if c.put != nil {
		errs = append(errs, c.put.Close())
	}
	if c.w != nil {
		errs = append(errs, c.w.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close cache %s: %w", c.path, err)
	}
	return nil
}
