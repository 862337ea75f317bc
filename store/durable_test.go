package store_test

import (
	"errors"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/batchgpt/batchgpt/store"
)

// recordingFile logs every write and fsync of a writer's file into a shared event list.
type recordingFile struct {
	store.File
	name   string
	mu     *sync.Mutex
	events *[]string
	fail   *bool // results writes fail once set
}

func (f recordingFile) log(e string) {
	f.mu.Lock()
	*f.events = append(*f.events, f.name+" "+e)
	f.mu.Unlock()
}

func (f recordingFile) Write(p []byte) (int, error) {
	if f.fail != nil && *f.fail {
		f.log("write failed")
		return 0, syscall.ENOSPC
	}
	f.log("write " + strings.TrimSpace(string(p)))
	return f.File.Write(p)
}

func (f recordingFile) Sync() error {
	f.log("sync")
	return f.File.Sync()
}

// TestResultThenAfterDurable: the callback of ResultThen runs only after the row's result line
// was synced and then its R record was synced, and never when the result line could not be
// written. The cache relies on it: an answer is stored only once its result is durable.
func TestResultThenAfterDurable(t *testing.T) {
	var mu sync.Mutex
	var events []string
	fail := new(bool)
	restore := store.SetWrapFile(func(f *os.File) store.File {
		if strings.HasSuffix(f.Name(), ".ckpt") {
			return recordingFile{f, "journal", &mu, &events, nil}
		}
		return recordingFile{f, "results", &mu, &events, fail}
	})
	w, _, _ := newRun(t, 3, "")
	restore()
	defer w.Close()
	logCallback := func(row string) func() {
		return func() {
			mu.Lock()
			events = append(events, "durable "+row)
			mu.Unlock()
		}
	}
	must(t, w.ResultThen(0, false, []byte("r0\n"), logCallback("0")))
	must(t, w.Flush())
	mu.Lock()
	got := strings.Join(events, "|")
	mu.Unlock()
	want := []string{"results write r0", "results sync", "journal write R 0 0 3", "journal sync", "durable 0"}
	last := -1
	for _, e := range want {
		i := strings.Index(got, e)
		if i < 0 || i < last {
			t.Fatalf("events %q: want %q in order", got, want)
		}
		last = i
	}

	*fail = true
	err := w.ResultThen(1, false, []byte("r1\n"), logCallback("1"))
	if err == nil {
		err = w.Flush()
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("flush after a failed results write: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, e := range events {
		if e == "durable 1" {
			t.Fatalf("the callback ran for a result that is not durable: %q", events)
		}
	}
}
