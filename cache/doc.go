// Package cache is batchgpt's durable result cache: a request answered before
// is answered from disk instead of being submitted, and billed, again.
// Nightly jobs re-run mostly unchanged files, so most of their rows are hits.
//
// The cache is one SQLite database (through the pure-Go driver
// modernc.org/sqlite, no cgo), by default $XDG_CACHE_HOME/batchgpt/cache.db or
// ~/.cache/batchgpt/cache.db (see [DefaultPath]). It is an ordinary file that
// `sqlite3 cache.db` opens; the schema, version 1, is
//
//	CREATE TABLE schema_version(version INTEGER NOT NULL);  -- one row: 1
//	CREATE TABLE entries(
//	    key                BLOB NOT NULL CHECK(length(key) = 32), -- SHA-256 of the canonical request body
//	    model_uri          TEXT NOT NULL,
//	    text               TEXT NOT NULL,     -- the answer
//	    alternative_status TEXT NOT NULL,     -- e.g. ALTERNATIVE_STATUS_FINAL
//	    input_tokens       INTEGER NOT NULL,
//	    completion_tokens  INTEGER NOT NULL,
//	    total_tokens       INTEGER NOT NULL,
//	    model_version      TEXT NOT NULL,
//	    operation_id       TEXT NOT NULL,     -- the operation that produced the answer
//	    cached_at          INTEGER NOT NULL   -- when it was stored: Unix milliseconds, UTC
//	);
//	CREATE UNIQUE INDEX entries_key ON entries(key);
//	CREATE INDEX entries_cached_at ON entries(cached_at);  -- prune, TTL, oldest/newest
//
// for example
//
//	sqlite3 ~/.cache/batchgpt/cache.db \
//	  "SELECT hex(key), model_uri, datetime(cached_at/1000, 'unixepoch') FROM entries LIMIT 5"
//
// Entries live in a rowid table with a unique index on the key rather than in
// a WITHOUT ROWID table keyed by it. Measured on 100,000 entries (2 cores):
// with ~200-byte answers both look up equally fast, but a WITHOUT ROWID table
// keeps whole rows in its interior pages, so with 2 KB answers its lookups were
// twice as slow; and as keys are random, its inserts split pages of whole rows
// anywhere in the file, so puts were 2.4 times slower and the file 10-14%
// bigger. Here a row is appended to the table and only the small index takes
// random inserts; a lookup is two B-tree descents, over pages that stay in
// memory.
//
// # Sharing one file
//
// Several batchgpt processes may use one cache at the same time. The database
// is in WAL mode: readers never wait for the writer, and writers queue on
// SQLite's lock for up to 10 seconds (busy_timeout) instead of failing. Every
// write transaction starts with BEGIN IMMEDIATE, so it takes the write lock
// first and never has to upgrade a read lock, which in WAL mode fails at once
// whatever the busy timeout. In one process, writes go through a single
// connection and lookups through a small pool of reader connections.
//
// A new file is switched to WAL mode once; when two processes create the file
// at the same moment, that switch fails with SQLITE_BUSY instead of waiting,
// and Open retries it. Opening an existing file writes nothing.
//
// Commits use synchronous=NORMAL: in WAL mode that cannot corrupt the
// database, and a power loss can lose only the last transactions, which costs
// a resubmission of those requests, never a wrong answer. The writer
// checkpoints when the WAL reaches 10,000 pages instead of SQLite's 1,000:
// each checkpoint copies every page written since the last into the file and
// syncs it, and with random keys the same index pages are written again and
// again, so fewer checkpoints copy them fewer times (puts 24% faster, lookups
// unchanged). The WAL is checkpointed and removed when the last connection
// closes. The file is not mapped into memory: pages read through a mapping
// count as the process's resident memory, and a run answered from a large
// cache is no faster with it.
// [Cache.GetMany] looks up 256 keys per statement, and runs the statements of
// a longer list on several reader connections at once.
//
// A new file is made 0600 in a directory made 0700: answers may be as private
// as prompts. SQLite creates the -wal and -shm files with the permissions of
// the database file; closing the last connection that writes removes them (a
// read-only one leaves them behind, empty).
//
// A new file has incremental auto-vacuum, so that [Cache.Prune] gives the
// pages of the entries it deletes back to the file system instead of keeping
// them free inside the file.
//
// # Versions
//
// [Open] refuses a file whose schema version is newer than this package's,
// with an error wrapping [ErrNewerSchema], rather than guess at it; a file that
// is not a SQLite database, is damaged (including cut short), or is a SQLite
// database of something else is an error naming the path. Open checks what it
// can cheaply (the header, the schema, the size); damage deeper in a file
// shows as an error of the lookup that reads it. Deleting the file (and its
// -wal and -shm files) is always safe: it only costs resubmissions.
//
// A file of every schema version ever written is kept in testdata
// (schema<N>-<commit>.db, never edited); a test opens each with this package,
// reads its entries and adds one. A new schema version must upgrade older
// files in Open, and add its own file there.
package cache
