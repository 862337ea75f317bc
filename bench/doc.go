// Package bench holds batchgpt's end-to-end benchmarks (see BENCHMARKS.md).
//
// Every benchmark builds the batchgpt binary once, starts `batchgpt emulator`
// as a separate process, generates its input in a temporary directory and runs
// batchgpt as a child process, so that the resource usage it reports (peak RSS
// from the child's /proc status, CPU from its rusage) is batchgpt's own. Run
// them with `make bench`.
package bench
