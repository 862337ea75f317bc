package cmd

import (
	"os"
	"runtime/debug"
)

// memoryGoal is the collector's soft limit for a run or resume of the asynchronous backend. By
// default Go lets the heap grow to twice what is live before it collects; at ten million rows a
// resume keeps 40 to 80 MB live (the plan's bits, the operations not yet polled, a compaction's
// state), and twice that plus the binary, the stacks and SQLite's memory went past 200 MB. Below
// the limit nothing changes; near it the collector runs more often (Go caps the time it then takes
// at half the CPU). The flat arrays of the input's validation are mapped outside the Go heap and do
// not count toward it.
const memoryGoal = 128 << 20

// limitMemory sets memoryGoal unless the user set GOMEMLIMIT, and returns what restores the limit
// before it.
func limitMemory() (restore func()) {
	if _, set := os.LookupEnv("GOMEMLIMIT"); set {
		return func() {}
	}
	prev := debug.SetMemoryLimit(memoryGoal)
	return func() { debug.SetMemoryLimit(prev) }
}
