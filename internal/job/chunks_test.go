package job_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/batch"
	"github.com/batchgpt/batchgpt/internal/emulator"
	"github.com/batchgpt/batchgpt/internal/job"
	"github.com/batchgpt/batchgpt/store"
)

// chunkSize is small enough that the inputs of these tests have many chunks.
const chunkSize = 400

// A new run keeps its input's chunk table in the checkpoint, cut at the run's chunk size.
func TestRunKeepsTheChunkTable(t *testing.T) {
	_, url := startEmulator(t, emulator.Config{})
	dir := t.TempDir()
	in := writeCSV(t, dir, 50)
	cfg := config(dir, in, url)
	cfg.ChunkSize = chunkSize
	if _, err := job.New(cfg).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	sum, err := batch.Validate(in, cfg.Settings.Input, 0, batch.WithChunkSize(chunkSize))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Load(cfg.Checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Header.InputChunks; len(got) < 5 || !reflect.DeepEqual(got, storeChunks(sum.Chunks)) {
		t.Fatalf("checkpoint's chunks %+v\nwant %+v", got, sum.Chunks)
	}
}

func storeChunks(cs []batch.Chunk) []store.InputChunk {
	var out []store.InputChunk
	for _, c := range cs {
		out = append(out, store.InputChunk{Row: c.Row, Line: c.Line, Offset: c.Offset, SHA256: c.SHA256})
	}
	return out
}

// halfDone writes the checkpoint of a run of in (n rows) stopped with rows [0, done) resolved,
// row done in flight (its intent journaled, no operation id) and the rest new, as job.Run would
// have made it (with the chunk table, unless withChunks is false: an earlier batchgpt).
func halfDone(t *testing.T, cfg job.Config, n, done int, withChunks bool) batch.Summary {
	t.Helper()
	sum, err := batch.Validate(cfg.Input, cfg.Settings.Input, 0, batch.WithChunkSize(chunkSize))
	if err != nil {
		t.Fatal(err)
	}
	settings, _ := json.Marshal(cfg.Settings)
	h := store.Header{Version: store.Version, Created: time.Now().UTC(), Input: cfg.Input, InputSHA256: sum.SHA256,
		InputSize: sum.Size, Rows: n, Results: cfg.Output, ResultsFormat: job.FormatJSONL, Settings: settings}
	if withChunks {
		h.InputChunks = storeChunks(sum.Chunks)
	}
	w, err := store.Create(cfg.Checkpoint, h, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	for i := range done {
		res := job.Result{ID: fmt.Sprintf("r%05d", i), Status: job.StatusSucceeded, OperationID: fmt.Sprintf("op%d", i), Attempts: 1,
			Text:  emulator.Answer(modelURI, []emulator.Message{{Role: "user", Text: prompt(i)}}),
			Usage: &job.Usage{InputTokens: 1, CompletionTokens: 1, TotalTokens: 2}}
		line, _ := json.Marshal(res)
		if err := w.ResultThen(i, false, append(line, '\n'), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := errors.Join(w.Name(done, store.Named{ID: fmt.Sprintf("r%05d", done), Model: modelURI}), w.Intent(done, 1), w.Close()); err != nil {
		t.Fatal(err)
	}
	return sum
}

// chunkOf returns the index of the chunk that holds row i.
func chunkOf(chunks []batch.Chunk, i int) int {
	k := 1
	for k+1 < len(chunks) && chunks[k+1].Row <= i {
		k++
	}
	return k
}

// changeID changes the first digit of the first row of chunk k: its id, the file's size kept.
func changeID(t *testing.T, path string, chunk batch.Chunk) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i := chunk.Offset + int64(strings.IndexAny(string(data[chunk.Offset:]), "0123456789"))
	data[i] = '0' + (data[i]-'0'+1)%10
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A resume reads the input from the chunk of the first row it still needs, and verifies only the
// chunks it reads: a change before that chunk goes unseen (those rows are done), a change after
// it stops the resume before any row of the changed chunk is sent; so does a change of size at
// once. A checkpoint without a chunk table hashes the whole input, as before.
func TestResumeVerifiesTheChunksItReads(t *testing.T) {
	const n, done = 120, 60
	for _, format := range []string{"jsonl", "csv"} {
		for _, tc := range []struct {
			name       string
			noChunks   bool
			change     func(t *testing.T, in string, chunks []batch.Chunk, seek int) // nil: none
			changedAt  func(chunks []batch.Chunk, seek int) int                      // the chunk that differs; -1 the size
			wantChange bool
		}{
			{name: "intact"},
			{name: "before the seek point", change: func(t *testing.T, in string, chunks []batch.Chunk, seek int) {
				changeID(t, in, chunks[seek-2])
			}},
			{name: "after the seek point", wantChange: true, change: func(t *testing.T, in string, chunks []batch.Chunk, seek int) {
				changeID(t, in, chunks[seek+2])
			}, changedAt: func(chunks []batch.Chunk, seek int) int { return seek + 2 }},
			{name: "size", wantChange: true, change: func(t *testing.T, in string, chunks []batch.Chunk, seek int) {
				f, err := os.OpenFile(in, os.O_APPEND|os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				f.WriteString("\n")
				f.Close()
			}, changedAt: func([]batch.Chunk, int) int { return -1 }},
			{name: "no chunk table, intact", noChunks: true},
			{name: "no chunk table, before the seek point", noChunks: true, wantChange: true,
				change:    func(t *testing.T, in string, chunks []batch.Chunk, seek int) { changeID(t, in, chunks[seek-2]) },
				changedAt: func([]batch.Chunk, int) int { return -1 }},
		} {
			t.Run(format+"/"+tc.name, func(t *testing.T) {
				srv, url := startEmulator(t, emulator.Config{})
				dir := t.TempDir()
				in := writeJSONL(t, dir, n)
				if format == "csv" {
					in = writeCSV(t, dir, n)
				}
				cfg := config(dir, in, url)
				cfg.Tuning.Concurrency = 4
				sum := halfDone(t, cfg, n, done, !tc.noChunks)
				seek := chunkOf(sum.Chunks, done)
				if seek < 3 || seek+3 > len(sum.Chunks) {
					t.Fatalf("row %d is in chunk %d of %d: the test tests little", done, seek, len(sum.Chunks))
				}
				if tc.change != nil {
					tc.change(t, in, sum.Chunks, seek)
				}

				rcfg := cfg
				rcfg.Input, rcfg.Output, rcfg.Settings = "", "", job.Settings{Endpoint: url, OperationsEndpoint: url}
				res, err := job.New(rcfg).Resume(context.Background())
				if !tc.wantChange {
					if err != nil {
						t.Fatalf("resume: %v", err)
					}
					if res.Succeeded != n || srv.Stats().Submissions != n-done {
						t.Fatalf("resume: %+v, %d submissions; want %d rows succeeded, %d submitted", res, srv.Stats().Submissions, n, n-done)
					}
					checkAll(t, readResults(t, cfg.Output), n)
					return
				}

				if !errors.Is(err, job.ErrInputChanged) || !strings.Contains(err.Error(), in) || !strings.Contains(err.Error(), "collected") {
					t.Fatalf("resume: %v; want the input changed, naming %s, its operations collected", err, in)
				}
				first := n // the first row that must not be sent
				if k := tc.changedAt(sum.Chunks, seek); k >= 0 {
					first = sum.Chunks[k].Row
					last := fmt.Sprintf("lines %d-%d differ", sum.Chunks[k].Line, sum.Chunks[k+1].Line-1)
					if !strings.Contains(err.Error(), last) {
						t.Fatalf("resume: %v; want %q", err, last)
					}
				} else {
					first = done
				}
				for i := first; i < n; i++ {
					if c := srv.SubmissionsFor(modelURI, []emulator.Message{{Role: "user", Text: prompt(i)}}); c != 0 {
						t.Fatalf("row %d submitted %d times; rows from %d on must not be", i, c, first)
					}
				}
				st, err := store.Load(cfg.Checkpoint)
				if err != nil {
					t.Fatal(err)
				}
				for i := first; i < n; i++ {
					if r := st.Row(i); r.Phase != store.PhaseNew && i != done {
						t.Fatalf("row %d: %+v; want it new", i, r)
					}
				}
				// The rows sent before the change were collected.
				c := st.Counts()
				if c.Submitted != 0 || c.Succeeded < done || int64(c.Succeeded-done) != srv.Stats().Submissions {
					t.Fatalf("after the resume: %+v, %d submissions", c, srv.Stats().Submissions)
				}
			})
		}
	}
}
