package store_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/store"
)

const childEnv = "BATCHGPT_STORE_KILL9_CHILD"

// kill9Child resumes the checkpoint and works through rows until killed. It
// prints "I <row>" after each Intent returned and "F <row>" after a Flush
// that covered everything up to row.
func kill9Child(path string) {
	w, st, err := store.Open(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	first := 0
	for first < st.Len() && st.Row(first).Phase != store.PhaseNew {
		first++
	}
	out := os.Stdout
	for row := first; row < st.Len(); row++ {
		if err := w.Intent(row, 1); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Fprintf(out, "I %d\n", row)
		if err := w.Submitted(row, 1, "op"+strconv.Itoa(row), time.Now()); err != nil {
			os.Exit(2)
		}
		if row%3 == 0 {
			if err := w.Result(row, false, []byte("row "+strconv.Itoa(row)+"\n")); err != nil {
				os.Exit(2)
			}
		}
		if row%7 == 0 {
			if err := w.Flush(); err != nil {
				os.Exit(2)
			}
			fmt.Fprintf(out, "F %d\n", row)
		}
	}
	w.Close()
	os.Exit(0)
}

func TestKill9(t *testing.T) {
	if path := os.Getenv(childEnv); path != "" {
		kill9Child(path)
	}
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	t.Parallel()
	const rows = 20000
	w, ckpt, results := newRun(t, rows, "row\n")
	must(t, w.Close())

	intents := map[int]bool{}
	for run := range 4 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKill9$")
		cmd.Env = append(os.Environ(), childEnv+"="+ckpt)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		must(t, err)
		must(t, cmd.Start())
		sc := bufio.NewScanner(stdout)
		killAfter := 1 + rand.IntN(250)
		lines, killed, runFirst, runFlushed := 0, false, -1, -1
		for sc.Scan() {
			kind, num, ok := strings.Cut(sc.Text(), " ")
			row, err := strconv.Atoi(num)
			if !ok || err != nil {
				continue // test framework chatter
			}
			switch kind {
			case "I":
				intents[row] = true
				if runFirst < 0 {
					runFirst = row
				}
			case "F":
				runFlushed = row
			}
			if lines++; lines == killAfter {
				must(t, cmd.Process.Signal(syscall.SIGKILL))
				killed = true
			}
		}
		err = cmd.Wait()
		if !killed {
			t.Fatalf("run %d: child ended after %d lines: %v\n%s", run, lines, err, stderr.String())
		}
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("run %d: child: %v\n%s", run, err, stderr.String())
		}
		t.Logf("run %d: killed after %d lines; %d intents, rows %d-%d flushed", run, lines, len(intents), runFirst, runFlushed)

		w, st, err := store.Open(ckpt)
		if err != nil {
			t.Fatalf("run %d: Open after kill: %v", run, err)
		}
		// Only the normal crash repair: a result line written, its R record not.
		if len(st.Problems) > 1 || len(st.Problems) == 1 && !strings.Contains(st.Problems[0], "after the last journaled result") {
			t.Errorf("run %d: problems %q", run, st.Problems)
		}
		for row := range intents {
			if st.Row(row).Phase == store.PhaseNew {
				t.Errorf("run %d: row %d: acknowledged intent lost", run, row)
			}
		}
		for row := max(runFirst, 0); row <= runFlushed; row++ {
			r := st.Row(row)
			want := store.PhaseSubmitted
			if row%3 == 0 {
				want = store.PhaseResolved
			}
			if r.Phase != want || want == store.PhaseSubmitted && r.OpID != "op"+strconv.Itoa(row) {
				t.Errorf("run %d: row %d: %+v after a flush, want %v", run, row, r, want)
			}
		}
		// The results file holds exactly one line per resolved row.
		must(t, w.Close())
		lines2 := strings.Split(strings.TrimSuffix(readFile(t, results), "\n"), "\n")[1:]
		seen := map[string]bool{}
		for _, l := range lines2 {
			if seen[l] {
				t.Errorf("run %d: result line %q written twice", run, l)
			}
			seen[l] = true
		}
		for row, r := range store.Rows(st) {
			if (r.Phase == store.PhaseResolved) != seen[fmt.Sprintf("row %d", row)] {
				t.Errorf("run %d: row %d is %v but its result line present=%v", run, row, r.Phase, seen[fmt.Sprintf("row %d", row)])
			}
		}
		if int(st.Counts().Succeeded) != len(lines2) {
			t.Errorf("run %d: %d resolved rows, %d result lines", run, st.Counts().Succeeded, len(lines2))
		}
	}
	if len(intents) == 0 {
		t.Error("no intents acknowledged: bad test")
	}
}

func TestDiskFullCreate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ckpt := filepath.Join(dir, "c")
	// The seam hands out a real temp file opened read-only: writes fail.
	readOnly := store.Hooks{CreateTemp: func(dir, pattern string) (*os.File, error) {
		f, err := os.CreateTemp(dir, pattern)
		if err != nil {
			return nil, err
		}
		f.Close()
		return os.Open(f.Name())
	}}
	_, err := store.CreateWith(readOnly, ckpt, header(1, filepath.Join(dir, "r")), nil, false)
	if err == nil || !strings.Contains(err.Error(), ckpt) {
		t.Errorf("Create with a failing temp file: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 || ents[0].Name() != "c.lock" {
		t.Errorf("left behind: %v", ents)
	}

	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	_, err = store.Create(ckpt, header(1, "/dev/full"), []byte("h\n"), true)
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "/dev/full") {
		t.Errorf("Create with results on /dev/full: %v", err)
	}
	if _, err := os.Stat(ckpt); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed Create left the checkpoint: %v", err)
	}
}

// failingFile fails writes to files whose name contains match once armed.
type failingFile struct {
	store.File
	armed *bool
}

func (f failingFile) Write(p []byte) (int, error) {
	if *f.armed {
		n := min(3, len(p)) // a short write leaves a torn record, as a full disk does
		f.File.Write(p[:n])
		return n, syscall.ENOSPC
	}
	return f.File.Write(p)
}

func TestDiskFullWriter(t *testing.T) {
	t.Parallel()
	for _, which := range []string{"results", "journal"} {
		t.Run(which, func(t *testing.T) {
			armed := new(bool)
			w, ckpt, _ := newRunWith(t, store.Hooks{WrapFile: func(f *os.File) store.File {
				if strings.HasSuffix(f.Name(), ".ckpt") == (which == "journal") {
					return failingFile{f, armed}
				}
				return f
			}}, 4, "p\n")
			must(t, w.Intent(0, 1))
			must(t, w.Submitted(0, 1, "op0", t0))
			must(t, w.Flush())
			*armed = true
			// The writer may commit these together or apart: an error is
			// either nil (queued) or the sticky one.
			errSub := w.Submitted(1, 1, "op1", t0)
			errRes := w.Result(0, false, []byte("r0\n"))
			for _, err := range []error{errSub, errRes} {
				if err != nil && !errors.Is(err, syscall.ENOSPC) {
					t.Fatalf("queued call: %v", err)
				}
			}
			if which == "journal" {
				// Make the journal write fail even if Submitted got in alone.
				must(t, errSub)
			}
			err := w.Flush()
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("Flush: %v", err)
			}
			// Sticky. After a results failure the journal still takes the records that need
			// no result line (operation ids must survive a full results disk); after a
			// journal failure nothing is taken.
			*armed = false
			journalOnly := []error{w.Name(2, named("row 2")), w.Intent(2, 1), w.Submitted(2, 1, "x", t0), w.Reopen(2)}
			for _, err2 := range journalOnly {
				if which == "results" && err2 != nil {
					t.Errorf("journal-only call after a results failure: %v", err2)
				}
				if which == "journal" && !errors.Is(err2, syscall.ENOSPC) {
					t.Errorf("later call: %v", err2)
				}
			}
			for _, err2 := range []error{w.Result(2, false, []byte("\n")), w.Flush(), w.Close()} {
				if !errors.Is(err2, syscall.ENOSPC) {
					t.Errorf("later call: %v", err2)
				}
			}
			w2, st, err := store.Open(ckpt)
			must(t, err)
			defer w2.Close()
			want := []store.Row{{Phase: store.PhaseSubmitted, Attempt: 1, OpID: "op0", SubmittedAt: t0.UnixMilli()}, {}, {}, {}}
			if which == "results" && errSub == nil {
				// An operation id queued before the results file failed,
				// or with it, survives.
				want[1] = store.Row{Phase: store.PhaseSubmitted, Attempt: 1, OpID: "op1", SubmittedAt: t0.UnixMilli()}
			}
			if which == "results" {
				want[2] = store.Row{Phase: store.PhaseNew, Attempt: 1} // intent, id, reopen: all journaled
			}
			diffRows(t, store.Rows(st), want)
			wantNamed := map[int]store.Named{}
			if which == "results" {
				wantNamed[2] = named("row 2") // journal-only as well
			}
			diffNamed(t, st.Named, wantNamed)
			if st.ResultsEnd != 2 {
				t.Errorf("ResultsEnd %d", st.ResultsEnd)
			}
		})
	}
}
