// Package store keeps batchgpt's crash-safe state: the checkpoint journal and
// the results file.
//
// The checkpoint is an append-only journal, one record per line:
//
//	<payload> <crc32c of payload as 8 lowercase hex digits>\n
//
// with payloads
//
//	H <header JSON>                    first record, carries "version":1
//	I <row> <attempt>                  about to POST this row (attempt >= 1)
//	S <row> <attempt> <opID> <unixMs>  the API accepted it as operation opID
//	R <row> <0|1 failed> <resultsEnd>  its result line is durable; the results
//	                                   file now ends at byte resultsEnd
//	U <row>                            row reopened: back to new, attempts kept
//
// A torn tail (an unterminated last line, or unreadable records after the last
// good one) is the end of the log, not an error. A single [Writer] goroutine
// owns both files and commits in groups: result lines first (fsync), then
// journal records (fsync), then it wakes the callers. An R record is therefore
// never durable before its result line, and on [Open] the results file is cut
// back to the end the journal vouches for.
//
// Writes take no context on purpose: an operation id lost to a Ctrl-C would be
// a duplicate, billed request on resume.
package store
