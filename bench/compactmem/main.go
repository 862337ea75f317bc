// Command compactmem measures what the checkpoint's compactions cost in memory at a given size,
// without HTTP or an emulator: it creates a checkpoint of -rows rows, journals half of them as a
// run does (intent, operation, result line; 64 writers at once, so commits group as in a run),
// closes it, opens it again as a resume does and journals the other half. Every 5 seconds it
// prints the journal's size and the process's peak and current resident set (VmHWM, VmRSS), and
// the peak at the end of each phase. The writer compacts on its own whenever the journal has
// doubled, so the peaks are those compactions' (the program's own memory is a few MB); the peak is
// reset after the reopen, once the loaded state is dropped, as a resume drops it.
//
//	go run ./bench/compactmem -rows 10000000 -dir /tmp/compactmem
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/batchgpt/batchgpt/store"
)

func main() {
	rows := flag.Int("rows", 10_000_000, "rows of the checkpoint")
	dir := flag.String("dir", filepath.Join(os.TempDir(), "compactmem"), "directory for the checkpoint and results (emptied first)")
	tail := flag.Int64("tail", 0, "compact once the journal has grown by this many bytes since its last snapshot, if it has not doubled first (0: the store's default, 128 MiB)")
	flag.Parse()
	var opts []store.Option
	if *tail > 0 {
		opts = append(opts, store.CompactTail(*tail))
	}
	if err := run(*rows, *dir, opts); err != nil {
		fmt.Fprintln(os.Stderr, "compactmem:", err)
		os.Exit(1)
	}
}

// memory returns the process's VmHWM and VmRSS lines.
func memory() string {
	b, _ := os.ReadFile("/proc/self/status")
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM") || strings.HasPrefix(l, "VmRSS") {
			out = append(out, strings.Join(strings.Fields(l), " "))
		}
	}
	return strings.Join(out, " ")
}

// phase journals rows [from, to) as a run with 64 requests in flight does.
func phase(w *store.Writer, from, to int) error {
	var next atomic.Int64
	next.Store(int64(from))
	line := []byte(`{"id":"r0000000","status":"succeeded","text":"emulated answer 0123456789abcdef to: Benchmark prompt: answer in one short sentence.","operation_id":"d7qqr3frkl81js0udlr9","attempts":1}` + "\n")
	errs := make([]error, 64)
	var wg sync.WaitGroup
	for k := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= to {
					return
				}
				done := make(chan struct{})
				err := errors.Join(w.Intent(i, 1), w.SubmittedThen(i, 1, fmt.Sprintf("d7q%017d", i), time.Now(), nil))
				if err == nil {
					err = w.ResultThen(i, false, line, func() { close(done) })
				}
				if err != nil {
					errs[k] = fmt.Errorf("row %d: %w", i, err)
					return
				}
				<-done
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func run(rows int, dir string, opts []store.Option) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ck := filepath.Join(dir, "c.ckpt")
	h := store.Header{Input: os.DevNull, Rows: rows, Results: filepath.Join(dir, "r.jsonl"), ResultsFormat: "jsonl", Settings: []byte(`{}`)}
	w, err := store.Create(ck, h, nil, false, opts...)
	if err != nil {
		return err
	}
	go func() {
		for {
			time.Sleep(5 * time.Second)
			if fi, err := os.Stat(ck); err == nil {
				fmt.Printf("%s journal %d MB %s\n", time.Now().Format("15:04:05"), fi.Size()>>20, memory())
			}
		}
	}()
	t0 := time.Now()
	if err := errors.Join(phase(w, 0, rows/2), w.Close()); err != nil {
		return err
	}
	fmt.Println("first half journaled", time.Since(t0).Round(time.Millisecond), "compactions", w.Compactions(), memory())
	t1 := time.Now()
	w, st, err := store.Open(ck, opts...)
	if err != nil {
		return err
	}
	fmt.Println("opened", st.Len(), "rows in", time.Since(t1).Round(time.Millisecond), memory())
	t1 = time.Now()
	// A resume condenses the loaded state and drops it, and returns its memory (see job.Resume);
	// the peak is then reset, so that the second half's is its compactions' alone.
	st = nil
	debug.FreeOSMemory()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		return fmt.Errorf("reset the peak RSS: %w", err)
	}
	fmt.Println("state dropped, peak reset", memory())
	if err := errors.Join(phase(w, rows/2, rows), w.Close()); err != nil {
		return err
	}
	fmt.Println("second half journaled", time.Since(t1).Round(time.Millisecond), "compactions", w.Compactions(), memory())
	return nil
}
