package store

import "testing"

// TestScheduleCompaction: the writer compacts when the journal has doubled, but no later than
// a tail's bound past its size at the last snapshot, and not below its floor.
func TestScheduleCompaction(t *testing.T) {
	t.Parallel()
	const mib = 1 << 20
	for _, tc := range []struct{ size, want int64 }{
		{0, defaultCompactMin},
		{10 * mib, defaultCompactMin},
		{40 * mib, 80 * mib},
		{128 * mib, 256 * mib},
		{129 * mib, 257 * mib},
		{400 * mib, 528 * mib},
		{4096 * mib, 4224 * mib},
	} {
		w := &Writer{journalSize: tc.size}
		if w.scheduleCompaction(); w.compactAt != tc.want {
			t.Errorf("journal of %d MiB: compacts at %d MiB, want %d", tc.size/mib, w.compactAt/mib, tc.want/mib)
		}
	}
}
