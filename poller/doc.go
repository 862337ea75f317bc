// Package poller waits for operations to finish: it keeps every pending operation in a queue
// ordered by when it is worth looking at next (see Schedule), spends the shared poll quota on the
// ones most likely to be done, and hands each finished operation to the caller.
//
// What it owns: the pending operations (Add, Pending, CloseWhenEmpty), the order and timing of
// their polls (Schedule, and the 404s tolerated for a fresh operation: Config.FreshNotFound and
// FreshWindow), and the poll loop with its workers (Run).
//
// What it does not own, and takes from its caller: reading an operation (the read function given
// to New, which brings its own pacing and per-request retries), what a failed read means and how
// long to wait after one (Policy), and what an operation is (any type with Finished; the
// outcome carries it back as it was read). So the package knows nothing of the API it polls.
//
// It must not import batchgpt's internal/ packages: it is a public package, and none of its
// exported API may expose their types. Its tests may use them (the API client, the emulator).
package poller
