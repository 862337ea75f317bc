// Package batchapi is the client of Yandex AI Studio's batch mode over gRPC (docs/api.md §9):
// datasets of requests are created, uploaded through presigned Object Storage URLs (one PUT, or
// a multipart upload for big files) and validated; a batch completion task runs over one; its
// result dataset is downloaded as Parquet files and read row by row.
//
// Every call asks the credentials source for a header, so that IAM tokens are refreshed over
// waits of days, and an UNAUTHENTICATED answer invalidates it and is tried once more. Idempotent
// reads are retried with back-off on UNAVAILABLE, RESOURCE_EXHAUSTED and DEADLINE_EXCEEDED;
// calls that create or change something are not, since the API has no idempotency (docs/api.md
// §6): a failure that may have come after the server acted is ErrOutcomeUnknown, and the caller
// looks the object up (FindDatasets by labels, FindTasks by source dataset) before repeating it.
// Neither credentials nor presigned URLs (their query is a signature) appear in errors or logs.
//
// # Joining results to input rows
//
// Confirmed by a recorded download (docs/api.md §9, "Result file"): a result file has only the
// columns request (the request again) and response (the answer's text); no line number or id.
// Not settled by the sources: whether the service keeps the input order, and how many files it
// writes. The emulator keeps the order and writes one file per batch, read in the SDK's order.
//
// So rows are joined by content, not position: RequestKey hashes a request's messages, the
// caller keeps for each key the input lines that send that request, in input order, and gives
// each result row with that key the next of those lines. Identical requests are ambiguous — no
// result says which of them it answers — so each gets one of the answers to that request, in
// the order the results come. With a deterministic model they are interchangeable; with a
// temperature they are not, and a caller that cares sends each request once. EncodeLine refuses
// text (invalid UTF-8) that would not come back byte for byte, which would break the join.
package batchapi
