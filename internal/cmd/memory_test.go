package cmd

import (
	"os"
	"runtime/debug"
	"testing"
)

// A run sets the collector's soft limit and gives the one before back; a GOMEMLIMIT the user set
// is left alone.
func TestLimitMemory(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	for _, tc := range []struct {
		name, env string
		want      int64
	}{
		{"unset", "", memoryGoal},
		{"set by the user", "1GiB", before},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("GOMEMLIMIT", tc.env) // restored after the test
			if tc.env == "" {
				os.Unsetenv("GOMEMLIMIT")
			}
			restore := limitMemory()
			if got := debug.SetMemoryLimit(-1); got != tc.want {
				t.Errorf("limit %d during the run, want %d", got, tc.want)
			}
			restore()
			if got := debug.SetMemoryLimit(-1); got != before {
				t.Errorf("limit %d after the run, want %d as before", got, before)
			}
		})
	}
}
