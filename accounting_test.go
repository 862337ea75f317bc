package main

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/internal/emulator"
	"github.com/batchgpt/batchgpt/internal/job"
	"github.com/batchgpt/batchgpt/store"
)

// TestPossibleDuplicatesUnderKill9 runs the binary with faults that create operations behind
// failures (lost answers, 500s and resets after processing, garbled answers, operations that
// vanish or fail and are replaced), SIGKILLs it at random moments and resumes it, then compares,
// row by row, the possible duplicates the checkpoint counted with the operations the emulator
// created beyond the one whose answer was written. No row may be undercounted. A row may be
// overcounted only by a try that was in flight at a kill (journaled, its fate unknown: it may
// never have left the process), at most once per kill that found it so.
func TestPossibleDuplicatesUnderKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("long")
	}
	lat, _ := emulator.ParseLatency("uniform:0s:300ms")
	faults, _ := emulator.ParseFaults("submit_lost=0.05,garbage=0.03,vanish=0.02,op_error=0.02")
	srv, url := startEmulator(t, emulator.Config{Latency: lat, Faults: faults, Seed: 19})
	dir := t.TempDir()
	const n = 600
	in := writeInput(t, dir, n)
	cp := filepath.Join(dir, "in.checkpoint.json")
	rng := rand.New(rand.NewPCG(19, 19))
	inFlightAtKills := make([]int, n) // per row: kills that found a try of it in flight
	kills, finished := 0, false
	for i := 0; i < 30 && !finished; i++ {
		args := []string{"resume", "--poll-rps", "2000", "--submit-rps", "1500", "--concurrency", "32", "--max-attempts", "20", cp}
		if i == 0 {
			args = []string{"run", "--no-cache", "--poll-rps", "2000", "--submit-rps", "1500", "--concurrency", "32", "--max-attempts", "20", in}
		}
		cmd := withKey(command(url, args...), testKey)
		stderr := start(t, cmd)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		var err error
		if i < 8 {
			select {
			case err = <-done:
			case <-time.After(time.Duration(100+rng.IntN(600)) * time.Millisecond):
				cmd.Process.Signal(syscall.SIGKILL)
				err = <-done
				kills++
				st, lerr := store.Load(cp)
				if lerr != nil {
					t.Fatalf("after kill %d: %v", kills, lerr)
				}
				for r := range st.Len() {
					if st.Phase(r) == store.PhaseInFlight {
						inFlightAtKills[r]++
					}
				}
			}
		} else {
			err = <-done
		}
		var ee *exec.ExitError
		switch {
		case err == nil:
			finished = true
		case errors.As(err, &ee) && ee.ExitCode() == -1: // killed
		default:
			t.Fatalf("attempt %d: %v\n%s", i, err, stderr.String())
		}
	}
	if !finished {
		t.Fatal("the run never finished")
	}
	checkResults(t, filepath.Join(dir, "in.results.jsonl"), n)

	sres := runCmd(t, command(url, "status", "--json", cp))
	var status job.Status
	if err := json.Unmarshal([]byte(sres.stdout), &status); err != nil {
		t.Fatalf("status: %v\n%s%s", err, sres.stdout, sres.stderr)
	}
	st, err := store.Load(cp)
	if err != nil {
		t.Fatal(err)
	}
	uri := "gpt://" + testFolder + "/yandexgpt-lite/latest"
	truth, reported, slack, overcounted := 0, 0, 0, 0
	for r := range n {
		extra := srv.OperationsFor(uri, []emulator.Message{{Role: "user", Text: prompt(r)}}) - 1
		got := int(st.Row(r).Doubts)
		truth += extra
		reported += got
		slack += inFlightAtKills[r]
		if got < extra || got > extra+inFlightAtKills[r] {
			t.Errorf("row %d: %d possible duplicates counted, %d extra operations created, %d kills found it in flight",
				r, got, extra, inFlightAtKills[r])
		}
		if got > extra {
			overcounted += got - extra
		}
	}
	t.Logf("kills %d; extra operations %d; reported %d (status %d); in flight at kills %d, overcounted %d; faults %v",
		kills, truth, reported, status.PossibleDuplicates, slack, overcounted, srv.Stats().Faults)
	if kills < 4 || truth == 0 || slack == 0 {
		t.Fatalf("%d kills, %d extra operations, %d rows in flight at kills: the test tested little", kills, truth, slack)
	}
	if status.PossibleDuplicates != reported || status.InDoubt != 0 {
		t.Fatalf("status: %d possible duplicates, %d in doubt; the journal holds %d", status.PossibleDuplicates, status.InDoubt, reported)
	}
}
