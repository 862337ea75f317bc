// Package batch reads batchgpt input files (JSONL or CSV prompts), validates
// them before anything is sent, and turns each row into a completionAsync
// request body.
//
// Inputs are streamed: a file of millions of rows, with lines of any length,
// is read with constant memory except for 8 bytes a row that Validate keeps to
// find duplicate ids, and 8 more that ValidateDedup keeps to find duplicate
// requests, both in flat arrays outside the Go heap (flat.go).
//
// What it owns, file by file:
//
//	input.go         Options, Row, Summary, the errors (InputError,
//	                 ValidationError), Validate, CheckOptions and the scanner
//	                 interface both formats implement
//	ids.go           the duplicate-id check: a sorted array of id hashes, and
//	                 a second pass over the rows only when a hash repeats
//	flat.go          the flat arrays of a pass, mapped outside the Go heap
//	                 (flat_mmap.go; flat_heap.go elsewhere)
//	input_reader.go  Reader (Open, Next) and ReadRow, which re-reads one row
//	                 by its offset
//	chunks.go        the chunk table a pass takes (Summary.Chunks: sections of
//	                 ChunkSize bytes that start at a row, each with its SHA-256),
//	                 and OpenChunks, a Reader that starts at a row's chunk and
//	                 verifies each chunk before it parses it
//	linereader.go    lines of any length with their offsets and numbers
//	input_jsonl.go   JSONL rows: what a row may contain and the problems it
//	                 reports, with the field's path
//	rawjson.go       splitting JSON that json.Valid accepted into members and
//	                 elements without decoding it, and finding the path of a
//	                 byte offset
//	input_csv.go     CSV rows: the header, the columns, the prompt template
//	request.go       the completionAsync request body (docs/api.md §2) and
//	                 model URIs
//	dedup.go         request keys, and rows that send the same request: a
//	                 sorted array of fingerprints packed with row indexes
//
// It imports no other package of this module: not the internal packages (the
// API client, auth, the job), nor store, poller or cache. They are built on
// rows and request bodies, never the other way round, so that validating an
// input never needs credentials, a checkpoint or the network.
package batch
