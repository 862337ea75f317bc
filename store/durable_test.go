package store_test

import (
	"errors"
	"fmt"
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
	t.Parallel()
	var mu sync.Mutex
	var events []string
	fail := new(bool)
	w, _, _ := newRunWith(t, store.Hooks{WrapFile: func(f *os.File) store.File {
		if strings.HasSuffix(f.Name(), ".ckpt") {
			return recordingFile{f, "journal", &mu, &events, nil}
		}
		return recordingFile{f, "results", &mu, &events, fail}
	}}, 3, "")
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

// syncTracker follows, byte by byte, what a writer's two files have written and what of it an
// fsync has made durable, and checks every journal record against the results file.
type syncTracker struct {
	t  *testing.T
	mu sync.Mutex
	// Bytes written, and bytes durable (written before the file's last Sync).
	resultsWritten, resultsSynced int64
	journalWritten, journalSynced int64
	intentEnd, submittedEnd       map[int]int64 // row → journal offset just past its latest I / S record
	rRecords                      int
}

type trackedFile struct {
	store.File
	tr      *syncTracker
	journal bool
}

func (f trackedFile) Write(p []byte) (int, error) {
	n, err := f.File.Write(p)
	tr := f.tr
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if !f.journal {
		tr.resultsWritten += int64(n)
		return n, err
	}
	off := tr.journalWritten
	for _, line := range strings.SplitAfter(string(p[:n]), "\n") {
		off += int64(len(line))
		var row int
		var end int64
		switch {
		case strings.HasPrefix(line, "I "):
			fmt.Sscanf(line, "I %d", &row)
			tr.intentEnd[row] = off
		case strings.HasPrefix(line, "S "):
			fmt.Sscanf(line, "S %d", &row)
			tr.submittedEnd[row] = off
		case strings.HasPrefix(line, "R "):
			var failed int
			fmt.Sscanf(line, "R %d %d %d", &row, &failed, &end)
			tr.rRecords++
			// The result line ends at end: those bytes must be durable before the R record
			// that vouches for them is even written.
			if end > tr.resultsSynced {
				tr.t.Errorf("R record of row %d (line up to byte %d) written with only %d results bytes synced (%d written)",
					row, end, tr.resultsSynced, tr.resultsWritten)
			}
		}
	}
	tr.journalWritten = off
	return n, err
}

func (f trackedFile) Sync() error {
	err := f.File.Sync()
	tr := f.tr
	tr.mu.Lock()
	if f.journal {
		tr.journalSynced = tr.journalWritten
	} else {
		tr.resultsSynced = tr.resultsWritten
	}
	tr.mu.Unlock()
	return err
}

// durable reports whether the journal bytes up to end were synced.
func (tr *syncTracker) durable(end map[int]int64, row int) (bool, string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	e, ok := end[row]
	return ok && e <= tr.journalSynced, fmt.Sprintf("record ends at %d, journal synced to %d of %d", e, tr.journalSynced, tr.journalWritten)
}

// TestFsyncOrder records every write and fsync of the checkpoint and the results file while
// workers journal rows concurrently, and checks the order durability rests on: the bytes of a
// result line are synced before the R record that vouches for them is written (and its callback
// runs after both); the journal is synced past an I record before Intent returns (so the request
// may leave), and past an S record before the row counts as submitted (SubmittedThen's callback).
// Deleting either fsync in the writer fails it.
func TestFsyncOrder(t *testing.T) {
	t.Parallel()
	const preamble = "id,answer\n"
	tr := &syncTracker{t: t, resultsWritten: int64(len(preamble)), resultsSynced: int64(len(preamble)),
		intentEnd: map[int]int64{}, submittedEnd: map[int]int64{}}
	const workers, perWorker = 16, 40
	w, _, _ := newRunWith(t, store.Hooks{WrapFile: func(f *os.File) store.File {
		if strings.HasSuffix(f.Name(), ".ckpt") {
			return trackedFile{f, tr, true}
		}
		return trackedFile{f, tr, false}
	}}, workers*perWorker, preamble)
	// Everything the journal held before the writer opened it (the header) is durable.
	tr.journalWritten, tr.journalSynced = 0, 0
	var wg sync.WaitGroup
	for g := range workers {
		wg.Go(func() {
			for k := range perWorker {
				row := g*perWorker + k
				if err := w.Intent(row, 1); err != nil {
					t.Error(err)
					return
				}
				if ok, why := tr.durable(tr.intentEnd, row); !ok {
					t.Errorf("Intent(%d) returned before its record was synced: %s", row, why)
				}
				err := w.SubmittedThen(row, 1, fmt.Sprintf("op%d", row), t0, func() {
					if ok, why := tr.durable(tr.submittedEnd, row); !ok {
						t.Errorf("row %d counted as submitted before its S record was synced: %s", row, why)
					}
				})
				if err == nil {
					line := fmt.Sprintf("%d,answer %d\n", row, row)
					err = w.ResultThen(row, false, []byte(line), func() {
						tr.mu.Lock()
						defer tr.mu.Unlock()
						if tr.journalSynced != tr.journalWritten {
							t.Errorf("row %d: result callback before its R record was synced", row)
						}
					})
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	must(t, w.Flush())
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.rRecords != workers*perWorker || len(tr.submittedEnd) != workers*perWorker || tr.journalSynced != tr.journalWritten {
		t.Errorf("%d R records and %d S records seen, journal synced to %d of %d after Flush",
			tr.rRecords, len(tr.submittedEnd), tr.journalSynced, tr.journalWritten)
	}
}

// blockingSync holds the first results fsync until released.
type blockingSync struct {
	store.File
	syncing chan<- struct{}
	release <-chan struct{}
	once    *sync.Once
}

func (f blockingSync) Sync() error {
	f.once.Do(func() {
		f.syncing <- struct{}{}
		<-f.release
	})
	return f.File.Sync()
}

// TestLateRecordsJoinCommit: an operation id that arrives while a commit syncs result lines joins
// that commit's journal write, after the R record queued before it, instead of waiting for the
// next commit: one journal fsync for both, and a shorter window for a kill -9 to leave it in doubt.
func TestLateRecordsJoinCommit(t *testing.T) {
	t.Parallel()
	syncing, release := make(chan struct{}), make(chan struct{})
	w, ckpt, _ := newRunWith(t, store.Hooks{WrapFile: func(f *os.File) store.File {
		if strings.HasSuffix(f.Name(), ".ckpt") {
			return f
		}
		return blockingSync{f, syncing, release, new(sync.Once)}
	}}, 3, "")
	must(t, w.Result(0, false, []byte("r0\n")))
	<-syncing // the commit of row 0's result is under way
	submitted := make(chan int64, 1)
	must(t, w.Name(1, named("row 1")))
	must(t, w.SubmittedThen(1, 1, "op1", t0, func() {
		c, _ := w.Stats()
		submitted <- c
	}))
	close(release)
	if c := <-submitted; c != 1 {
		t.Errorf("the S record became durable with commit %d, want the first", c)
	}
	must(t, w.Flush())
	if c, recs := w.Stats(); c != 1 || recs != 3 {
		t.Errorf("%d commits, %d records; want 1, 3", c, recs)
	}
	must(t, w.Close())
	j := readFile(t, ckpt)
	if r, s := strings.Index(j, "\nR 0 "), strings.Index(j, "\nS 1 "); r < 0 || s < r {
		t.Errorf("journal %q: want row 0's R record, then row 1's S", j)
	}
}
