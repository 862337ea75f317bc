package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// writeTrace writes a whole trace, whether its span runs out or the process stops first, and
// nothing when the process stops before the span begins.
func TestWriteTrace(t *testing.T) {
	for _, tc := range []struct {
		name        string
		after, span time.Duration
		stopAt      time.Duration
		wantFile    bool
	}{
		{"span runs out", 0, 50 * time.Millisecond, time.Hour, true},
		{"stopped during the span", 0, time.Hour, 50 * time.Millisecond, true},
		{"stopped before it", time.Hour, time.Hour, 10 * time.Millisecond, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "trace.out")
			stop, done := make(chan struct{}), make(chan struct{})
			go func() { defer close(done); writeTrace(path, tc.after, tc.span, stop) }()
			select {
			case <-done:
			case <-time.After(tc.stopAt):
				close(stop)
				<-done
			}
			data, err := os.ReadFile(path)
			if !tc.wantFile {
				if err == nil {
					t.Fatalf("a trace of %d bytes written", len(data))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(data, []byte("go 1.")) || !bytes.Contains(data[:16], []byte(" trace")) {
				t.Fatalf("not an execution trace: %q", data[:min(len(data), 16)])
			}
		})
	}
}
