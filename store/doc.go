// Package store keeps batchgpt's crash-safe state: the checkpoint journal and
// the results file.
//
// It owns both files on disk: their formats, every write and fsync to them,
// the lock that keeps a second process out, and their repair after a crash.
// File by file:
//
//	load.go      Header, State, Load and LoadLean: replaying a journal, torn
//	             tails
//	record.go    one journal line: its checksum, encoding and parsing
//	names.go     EachNamed, the N records of a whole run
//	writer.go    Writer: the calls that queue or journal records, Close
//	create.go    Create: a new checkpoint and results file
//	open.go      Open: lock, load, truncate a torn tail, remove temp files,
//	             settle an interrupted Finalize
//	repair.go    cut the results file back to the end the journal vouches
//	             for; rows whose lines are gone move back
//	commit.go    the writer goroutine: group commit, fsync order, sticky
//	             errors
//	compact.go   snapshots of the journal (Compact, the writer's own
//	             compaction when the journal doubles, and the one Finalize,
//	             Open and Archive write)
//	lines.go     the L record: resolved rows in a few bytes each
//	summary.go   the K record: a snapshot's L records summed up for Open
//	finalize.go  Finalize: one line per row, the F record
//	settings.go  SetSettings: the header's settings replaced, every other
//	             record copied as it is (the run's spend limits change)
//	archive.go   Archive: a finished run moved aside
//	fsutil.go    atomic files, temp files, directory fsync, the lock, the
//	             hooks tests use to inject failures
//
// It imports no other package of this module: not the internal packages (the
// API client, auth, the job), nor batch, poller or cache. Rows reach it as
// row numbers, names ([Named]), operation ids and finished result lines; what
// a row is, how it is sent and how its line is formatted belong to its
// callers, so that the journal's format and its durability rules depend on
// nothing else.
//
// The checkpoint is an append-only journal, one record per line:
//
//	<payload> <crc32c of payload as 8 lowercase hex digits>\n
//
// with payloads
//
//	H <header JSON>                    first record, carries "version":3
//	                                   (Version; BatchVersion with B records)
//	N <row> <key> <model> <id JSON>    the row's name: its request key (64
//	                                   lowercase hex digits), model URI (no
//	                                   spaces) and id (a JSON string, last);
//	                                   journaled before its first I record
//	I <row> <attempt>                  about to POST this row (attempt >= 1)
//	S <row> <attempt> <opID> <unixMs>  the API accepted it as operation opID
//	R <row> <0|1 failed> <resultsEnd>  its result line is durable; the results
//	                                   file now ends at byte resultsEnd
//	U <row>                            row reopened: back to new, attempts kept
//	U <row> 0                          row reopened with its attempts reset
//	                                   (resume --retry-failed); older readers
//	                                   of version 2 skip it as corrupt
//	D <row>                            a try of this row may have created an
//	                                   operation whose answer is never used (a
//	                                   possible billed duplicate); counted, never
//	                                   reset. It closes the try in flight (I) or
//	                                   the operation given up on (S): the row is
//	                                   new again, attempts kept
//	P <offset>                         the next R record's line starts at offset
//	                                   (after a repair cut the results file, or
//	                                   in a snapshot, across superseded lines)
//	F <size> <crc32c> <0|1 row order>  Finalize is about to replace the results
//	                                   file with one of that size and checksum
//	K <records> <rows> ... <base64>    (snapshots) the L records just before it
//	                                   summed up: which rows they resolve, in
//	                                   runs, with attempts and failures, and
//	                                   where their lines end (see summary.go);
//	                                   Open's lean load takes it in their place
//	L <count> <base64>                 (snapshots, version 3) count resolved
//	                                   rows: each one's line, attempts and last
//	                                   operation, packed (see lines.go)
//	T <unix second> <count>            (snapshots, version 3) the submissions
//	                                   of that second, for the hour window
//	                                   (replaces the second's count so far)
//	G <base64>                         (version 4) part of the caller's blob of
//	                                   duplicate-row groups, right after the
//	                                   header (Groups); opaque to this package
//	B <json>                           (version 5) one step of the batch
//	                                   backend (docs/api.md §9): a JSON value
//	                                   on one line, opaque to this package;
//	                                   journaled and fsynced before
//	                                   Writer.Step returns
//
// The D records count exactly what may have been billed twice: a caller
// journals one for each try that failed in a way that may have created an
// operation (a 5xx, a reset or a timeout after sending, a garbage answer), for
// an operation it gives up on and replaces (vanished, or failed), and for a
// try left in flight by a crash (I without S) once the row is sent again or
// answered otherwise. Because a D closes the try it counts, a crash between
// it and the next record never counts one try twice; a row left in flight
// counts once, by whichever process next moves it on.
//
// The N record lets a later process collect a row's outstanding operation and
// write its result (the result line needs the row's id, the result cache its
// request key and model) without the input file, which may have been
// overwritten since. A row keeps its name, across reopens, until it is
// resolved; the loader then forgets it, so [State.Named] holds only the rows
// still open (a row reopened after its resolution is named again; Open names
// again the rows it moves back when their result lines are gone). Version 1
// had no N records, version 2 no L and T records; this package reads all
// three, writes version 3 (a new checkpoint, or a snapshot of an older one),
// and appends to an older one in its own records. A reader of version 2
// refuses version 3, rather than skipping its L records as damaged and taking
// their resolved rows for new ones.
//
// A checkpoint of the batch backend is created with "version":5 ([BatchVersion], [Version] + 1)
// and alone takes B records ([Writer.Step], [State.Steps]): a reader of version 4 refuses it
// instead of resuming its rows one request at a time, which would pay for them twice.
// Asynchronous checkpoints stay at [Version]. Snapshots (compaction, Finalize, Open, Archive)
// write every B record after the header and the G records, in order, and keep the version;
// SetSettings copies them as it copies every record.
//
// The writer compacts the journal whenever it has doubled since it was
// opened or last compacted, or grown by 128 MiB (and is at least 64 MiB): a
// snapshot keeps open rows as records of their own and resolved rows as L
// entries of a few dozen bytes, summed up by a K record when they fall in
// few runs, so a long run's journal stays within about twice a snapshot, and
// what a resume's lean load decodes is the open rows and about 128 MiB at
// most of records since.
//
// A result line starts where the previous R record's line ended (or at the
// preamble's end, or at a P record's offset), so the journal knows each
// resolved row's line exactly. [Writer.Finalize] uses that to rewrite the
// results file with one line per row, dropping lines superseded by retries.
//
// A torn tail (an unterminated last line, or unreadable records after the last
// good one) is the end of the log, not an error. A single [Writer] goroutine
// owns both files and commits in groups: result lines first (fsync), then
// journal records (fsync), then it wakes the callers. An R record is therefore
// never durable before its result line, and on [Open] the results file is cut
// back to the end the journal vouches for.
//
// Finalize journals an F record before it renames the new results file into
// place, and renames the new journal after it. If the journal ends with an F
// record, Open checks the results file against it: a match means the process
// died between the renames and Open finishes the job; otherwise the old
// results file is intact and the F record is void.
//
// The header is written once, by Create; SetSettings alone replaces it (its
// settings only), by rewriting the journal through a temp file and a rename,
// as a snapshot is written.
//
// Writes take no context on purpose: an operation id lost to a Ctrl-C would be
// a duplicate, billed request on resume.
package store
