package job_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/batch"
	"github.com/batchgpt/batchgpt/internal/emulator"
	"github.com/batchgpt/batchgpt/internal/job"
	"github.com/batchgpt/batchgpt/store"
)

// extraOperations is the truth the emulator knows: the operations it created for the rows'
// requests beyond one per row. Every row of these tests succeeds, so exactly one operation per
// row is used and each other one is a billed duplicate.
func extraOperations(t *testing.T, srv *emulator.Server, n int) int {
	t.Helper()
	extra := 0
	for i := range n {
		ops := srv.OperationsFor(modelURI, []emulator.Message{{Role: "user", Text: prompt(i)}})
		if ops == 0 {
			t.Fatalf("row %d: no operation created", i)
		}
		extra += ops - 1
	}
	return extra
}

// TestPossibleDuplicatesExact runs with faults and compares the possible duplicates reported (the
// summary, and status from the checkpoint) with the operations the emulator created beyond one
// per row. Faults after which the client cannot know whether an operation was created are
// counted: where they did create one (a lost answer, a 500 or a reset after processing, a garbled
// answer, an operation that vanished or failed and was replaced) the count is exact; where they
// did not (a 500, 503 or reset before processing), it is an upper bound, never an undercount. A
// 429 creates nothing and counts nothing.
func TestPossibleDuplicatesExact(t *testing.T) {
	for _, tc := range []struct {
		name   string
		faults string
		exact  bool // every fault counted did create an operation
		some   bool // duplicates are expected
	}{
		{"lost answers after processing", "submit_lost=0.2,garbage=0.1", true, true},
		{"operations vanish (404) and are replaced", "vanish=0.1", true, true},
		{"operations fail and are replaced", "op_error=0.1", true, true},
		{"quota rejections create nothing", "429=0.3", true, false},
		{"all of those", "submit_lost=0.1,garbage=0.05,vanish=0.05,op_error=0.05,429=0.1,fresh404=0.1", true, true},
		{"5xx and resets before processing: an upper bound", "submit_lost=0.1,500=0.1,503=0.05,reset=0.05", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			faults, err := emulator.ParseFaults(tc.faults)
			if err != nil {
				t.Fatal(err)
			}
			lat, _ := emulator.ParseLatency("uniform:0s:30ms")
			srv, url := startEmulator(t, emulator.Config{Latency: lat, Faults: faults, Seed: 11})
			dir := t.TempDir()
			const n = 300
			in := writeJSONL(t, dir, n)
			cfg := config(dir, in, url)
			cfg.Tuning.MaxAttempts = 20
			sum, err := job.New(cfg).Run(context.Background())
			if err != nil {
				t.Fatalf("run: %v (%+v)", err, sum)
			}
			checkAll(t, readResults(t, cfg.Output), n)
			status, err := job.ReadStatus(cfg.Checkpoint, 10, 5000, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			st := srv.Stats()
			truth := extraOperations(t, srv, n)
			t.Logf("faults %v: %d extra operations; reported %d (summary), %d (status)", st.Faults, truth, sum.InDoubt, status.PossibleDuplicates)
			if int64(truth) != st.OpsCreated-n {
				t.Fatalf("emulator: %d operations for %d rows, but %d extra by request", st.OpsCreated, n, truth)
			}
			if tc.some && truth == 0 {
				t.Fatal("no duplicate was created: the test tested little")
			}
			if int64(status.PossibleDuplicates) != sum.InDoubt || status.InDoubt != 0 {
				t.Fatalf("status says %d possible duplicates (%d rows in doubt), the summary %d", status.PossibleDuplicates, status.InDoubt, sum.InDoubt)
			}
			got := status.PossibleDuplicates
			if tc.exact {
				if got != truth {
					t.Fatalf("reported %d possible duplicates, the API created %d extra operations", got, truth)
				}
				return
			}
			// Each fault before processing adds at most one to the count (poll faults are
			// counted in the emulator's figures too: a looser bound).
			ambiguous := int(st.Faults[emulator.Fault500] + st.Faults[emulator.Fault503] + st.Faults[emulator.FaultReset])
			if got < truth || got > truth+ambiguous {
				t.Fatalf("reported %d possible duplicates; want between the %d extra operations and %d", got, truth, truth+ambiguous)
			}
		})
	}
}

// TestInDoubtCountedWhenSent: rows a crashed run left in flight (an I record, no operation id) are
// counted as possible duplicates when a later process sends them again, once each, whether or not
// the crashed try had reached the API (it cannot tell). A resume that stops before sending them
// counts nothing.
func TestInDoubtCountedWhenSent(t *testing.T) {
	srv, url := startEmulator(t, emulator.Config{Seed: 5})
	dir := t.TempDir()
	const n, inFlight, reached = 80, 10, 5
	in := writeJSONL(t, dir, n)
	cfg := config(dir, in, url)
	cfg.Tuning.Concurrency = 4
	ctx, cancel := context.WithCancel(context.Background())
	j := job.New(cfg)
	go func() {
		for j.Progress().Submitted < 20 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	if _, err := j.Run(ctx); !errors.Is(err, job.ErrInterrupted) {
		t.Fatalf("first run: %v", err)
	}

	// A crash: the first rows not submitted yet were journaled as about to be sent; the API got
	// some of them (their answers were lost with the process).
	w, st, err := store.Open(cfg.Checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	rd, err := batch.Open(in, cfg.Settings.Input)
	if err != nil {
		t.Fatal(err)
	}
	marked := 0
	for marked < inFlight {
		row, err := rd.Next()
		if err != nil {
			t.Fatalf("input: %v (only %d rows in flight)", err, marked)
		}
		if st.Phase(row.Index) != store.PhaseNew {
			continue
		}
		if err := w.Intent(row.Index, 1); err != nil {
			t.Fatal(err)
		}
		if marked < reached {
			postRaw(t, url, row.Body)
		}
		marked++
	}
	rd.Close()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	after, err := store.Load(cfg.Checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	submitted := 0 // what seeds the hour window of the next process
	for _, sc := range after.SubmittedSince(time.Now().Add(-time.Hour)) {
		submitted += sc.N
	}

	// A resume that sends nothing: the hour quota is used up, and it is stopped.
	rcfg := config(dir, in, url)
	rcfg.Tuning.SubmitPerHour = submitted
	rcfg.Tuning.Concurrency = 4
	ctx, cancel = context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	before := srv.Stats().Submissions
	sum, err := job.New(rcfg).Resume(ctx)
	if !errors.Is(err, job.ErrInterrupted) || srv.Stats().Submissions != before {
		t.Fatalf("blocked resume: %v, %d submissions; want interrupted, none", err, srv.Stats().Submissions-before)
	}
	status, err := job.ReadStatus(cfg.Checkpoint, 10, 5000, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if sum.InDoubt != 0 || status.PossibleDuplicates != 0 || status.InDoubt != inFlight {
		t.Fatalf("after a resume that sent nothing: %d counted by it, status %d possible duplicates and %d in doubt; want 0, 0, %d",
			sum.InDoubt, status.PossibleDuplicates, status.InDoubt, inFlight)
	}

	sum, err = job.New(config(dir, in, url)).Resume(context.Background())
	if err != nil {
		t.Fatalf("resume: %v", err)
	}
	checkAll(t, readResults(t, cfg.Output), n)
	status, err = job.ReadStatus(cfg.Checkpoint, 10, 5000, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	truth := extraOperations(t, srv, n)
	if truth != reached || sum.InDoubt != inFlight || status.PossibleDuplicates != inFlight || status.InDoubt != 0 {
		t.Fatalf("%d extra operations (want %d); counted %d by the resume, %d in the checkpoint, %d rows in doubt; want %d, %d, 0",
			truth, reached, sum.InDoubt, status.PossibleDuplicates, status.InDoubt, inFlight, inFlight)
	}
}

// postRaw sends a completionAsync request the way a crashed batchgpt did, and drops the answer.
func postRaw(t *testing.T, url string, body []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+"/foundationModels/v1/completionAsync", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Api-Key test-key")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatal(fmt.Errorf("hand-made submission: %s", resp.Status))
	}
}
