package job_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/batch"
	"github.com/batchgpt/batchgpt/cache"
	"github.com/batchgpt/batchgpt/internal/emulator"
	"github.com/batchgpt/batchgpt/internal/job"
	"github.com/batchgpt/batchgpt/store"
)

// dupPrompt is the prompt of row i of the inputs below: rows from 90 on repeat rows 60 to 89.
func dupPrompt(i int) string {
	if i >= 90 {
		i -= 30
	}
	return prompt(i)
}

// halfDoneWithDuplicates writes a 120-row input whose last 30 rows repeat the 30 before them, and
// the checkpoint of a run of it stopped with rows [0, 60) resolved: leaders 60-89 are open and
// their followers wait for them. The checkpoint keeps the groups, as job.Run writes them.
func halfDoneWithDuplicates(t *testing.T, dir, url string) (job.Config, batch.Summary) {
	t.Helper()
	in := writePrompts(t, dir, 120, dupPrompt)
	cfg := config(dir, in, url)
	cfg.Tuning.Concurrency = 4
	sum, dups, err := batch.ValidateDedup(in, cfg.Settings.Input, 0, cfg.Settings.KeyScope(), batch.WithChunkSize(chunkSize))
	if err != nil {
		t.Fatal(err)
	}
	if dups.Count() != 30 {
		t.Fatalf("%d duplicate rows, want 30", dups.Count())
	}
	blob, err := dups.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	writeResolved(t, cfg, sum, dups.Count(), blob, func(i int) bool { return i < 60 })
	return cfg, sum
}

// writeResolved writes the checkpoint of a 120-row run of cfg's input (sum) with dups duplicate
// rows in groups blob, stopped with the rows done(i) resolved, as the run would have left it.
func writeResolved(t *testing.T, cfg job.Config, sum batch.Summary, dups int, blob []byte, done func(i int) bool) {
	t.Helper()
	settings, _ := json.Marshal(cfg.Settings)
	h := store.Header{Version: store.Version, Created: time.Now().UTC(), Input: cfg.Input, InputSHA256: sum.SHA256,
		InputSize: sum.Size, Rows: 120, Results: cfg.Output, ResultsFormat: job.FormatJSONL, Settings: settings,
		Duplicates: dups, InputChunks: storeChunks(sum.Chunks)}
	w, err := store.Create(cfg.Checkpoint, h, nil, false, store.Groups(blob))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 120 {
		if !done(i) {
			continue
		}
		res := job.Result{ID: fmt.Sprintf("r%05d", i), Status: job.StatusSucceeded, OperationID: fmt.Sprintf("op%d", i), Attempts: 1,
			Text:  emulator.Answer(modelURI, []emulator.Message{{Role: "user", Text: prompt(i)}}),
			Usage: &job.Usage{InputTokens: 1, CompletionTokens: 1, TotalTokens: 2}}
		line, _ := json.Marshal(res)
		if err := w.ResultThen(i, false, append(line, '\n'), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// A resume of a run with duplicate rows takes the groups from the checkpoint instead of reading
// the whole input again: a change in a chunk of rows already done goes unseen (reading the whole
// input would refuse it), while a change in a chunk of followers still waiting stops it before
// any of them is answered.
func TestResumeTakesTheGroupsFromTheCheckpoint(t *testing.T) {
	for _, tc := range []struct {
		name       string
		changeRow  int // the row whose chunk changes; -1 none
		wantChange bool
	}{
		{"intact", -1, false},
		{"done rows changed", 20, false},
		{"waiting followers changed", 100, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, url := startEmulator(t, emulator.Config{})
			dir := t.TempDir()
			cfg, sum := halfDoneWithDuplicates(t, dir, url)
			k := -1
			if tc.changeRow >= 0 {
				k = chunkOf(sum.Chunks, tc.changeRow)
				if first := sum.Chunks[k].Row; tc.changeRow < 60 && (first >= 60 || k+1 < len(sum.Chunks) && sum.Chunks[k+1].Row > 60) {
					t.Fatalf("chunk %d (rows from %d) reaches the open rows: the test tests little", k, first)
				}
				changeID(t, cfg.Input, sum.Chunks[k])
			}
			rcfg := cfg
			rcfg.Input, rcfg.Output, rcfg.Settings = "", "", job.Settings{Endpoint: url, OperationsEndpoint: url}
			res, err := job.New(rcfg).Resume(context.Background())
			results := readResults(t, cfg.Output)
			if tc.wantChange {
				if !errors.Is(err, job.ErrInputChanged) {
					t.Fatalf("resume: %v; want the input changed", err)
				}
				// The rows of the changed chunk; a follower in a later, intact chunk may be
				// answered before the change is seen, if its leader's answer comes first.
				end := 120
				if k+1 < len(sum.Chunks) {
					end = sum.Chunks[k+1].Row
				}
				for i := sum.Chunks[k].Row; i < end; i++ {
					if _, ok := results[fmt.Sprintf("r%05d", i)]; ok && i >= 90 {
						t.Fatalf("row %d, a follower in the changed chunk %d, was answered", i, k)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("resume: %v", err)
			}
			if res.Succeeded != 120 || srv.Stats().Submissions != 30 {
				t.Fatalf("resume: %+v, %d submissions; want 120 rows succeeded, the 30 open leaders submitted", res, srv.Stats().Submissions)
			}
			for i := range 120 {
				id := fmt.Sprintf("r%05d", i)
				r := results[id]
				want := emulator.Answer(modelURI, []emulator.Message{{Role: "user", Text: dupPrompt(i)}})
				if r.Status != job.StatusSucceeded || r.Text != want || (i >= 90) != (r.DeduplicatedFrom != "") {
					t.Fatalf("row %s: %+v; want %q (deduplicated: %v)", id, r, want, i >= 90)
				}
			}
		})
	}
}

// chunkedInput writes a 120-row input in dir, validated in small chunks, and the config of a run
// of it against url, four requests at a time.
func chunkedInput(t *testing.T, dir, url string) (job.Config, batch.Summary) {
	t.Helper()
	in := writeJSONL(t, dir, 120)
	cfg := config(dir, in, url)
	cfg.Tuning.Concurrency = 4
	sum, err := batch.Validate(in, cfg.Settings.Input, 0, batch.WithChunkSize(chunkSize))
	if err != nil {
		t.Fatal(err)
	}
	return cfg, sum
}

// row5Follows2 returns row 5 of cfg's input and the groups of a run that took it for a duplicate
// of row 2, as the run encodes them (batch.Duplicates.MarshalBinary): format 1, one follower,
// leader 2, follower 2+3, its line and offset.
func row5Follows2(t *testing.T, cfg job.Config) (batch.Row, []byte) {
	t.Helper()
	rd, err := batch.Open(cfg.Input, cfg.Settings.Input)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	var row batch.Row
	for row.Index != 5 || row.Body == nil {
		if row, err = rd.Next(); err != nil {
			t.Fatal(err)
		}
	}
	blob := binary.AppendUvarint([]byte{1, 1, 2, 3}, uint64(row.Line))
	return row, binary.AppendUvarint(blob, uint64(row.Offset))
}

// strayCheckpoint writes a 120-row input of different requests and the checkpoint of a run of it
// stopped with rows [0, 60) resolved except row 5, whose fingerprint collided with row 2's: the
// checkpoint's groups say it follows row 2, and the run found it independent and put it at the
// back of its queue, so it is still new.
func strayCheckpoint(t *testing.T, dir, url string) (job.Config, batch.Summary) {
	t.Helper()
	cfg, sum := chunkedInput(t, dir, url)
	_, blob := row5Follows2(t, cfg)
	writeResolved(t, cfg, sum, 1, blob, func(i int) bool { return i < 60 && i != 5 })
	return cfg, sum
}

// A resume reads a row left open behind a resolved leader (a fingerprint collision) by position,
// and reads the input in sequence from the first row open otherwise: a change between the two
// goes unseen (those rows are done), a change in the stray row's own chunk stops the resume before
// it is sent.
func TestResumeReadsStraysByPosition(t *testing.T) { resumeAroundRow5(t, strayCheckpoint) }

// handedBackCheckpoint writes a 120-row input and the checkpoint of a run of it stopped with rows
// [0, 60) resolved except row 5, which was tried once and handed back to the end of the queue (its
// submission kept failing, or its operation vanished): it is new again, behind rows done.
func handedBackCheckpoint(t *testing.T, dir, url string) (job.Config, batch.Summary) {
	t.Helper()
	cfg, sum := chunkedInput(t, dir, url)
	writeResolved(t, cfg, sum, 0, nil, func(i int) bool { return i < 60 && i != 5 })
	w, _, err := store.Open(cfg.Checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(w.Intent(5, 1), w.Reopen(5), w.Close()); err != nil {
		t.Fatal(err)
	}
	return cfg, sum
}

// A resume passes over the chunks whose rows are all done between a row handed back and the rows
// never sent: a change there goes unseen, a change in the handed-back row's own chunk stops the
// resume before that row is sent.
func TestResumeSkipsChunksOfRowsDone(t *testing.T) { resumeAroundRow5(t, handedBackCheckpoint) }

// resumeAroundRow5 resumes the checkpoint that build writes (rows [0, 60) resolved but row 5,
// rows [60, 120) new), with its input intact, changed in a chunk of rows done between row 5 and
// row 60, and changed in row 5's chunk.
func resumeAroundRow5(t *testing.T, build func(t *testing.T, dir, url string) (job.Config, batch.Summary)) {
	for _, tc := range []struct {
		name       string
		changeRow  int // the row whose chunk changes; -1 none
		wantChange bool
	}{
		{"intact", -1, false},
		{"between row 5 and the others", 30, false},
		{"row 5's chunk", 5, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, url := startEmulator(t, emulator.Config{})
			cfg, sum := build(t, t.TempDir(), url)
			if tc.changeRow >= 0 {
				k := chunkOf(sum.Chunks, tc.changeRow)
				if k == chunkOf(sum.Chunks, 5) != (tc.changeRow == 5) || k == chunkOf(sum.Chunks, 60) {
					t.Fatalf("row %d is in chunk %d: the test tests little", tc.changeRow, k)
				}
				changeID(t, cfg.Input, sum.Chunks[k])
			}
			rcfg := cfg
			rcfg.Input, rcfg.Output, rcfg.Settings = "", "", job.Settings{Endpoint: url, OperationsEndpoint: url}
			res, err := job.New(rcfg).Resume(context.Background())
			sent := srv.SubmissionsFor(modelURI, []emulator.Message{{Role: "user", Text: prompt(5)}})
			if tc.wantChange {
				if !errors.Is(err, job.ErrInputChanged) || sent != 0 {
					t.Fatalf("resume: %v, row 5 sent %d times; want the input changed and row 5 not sent", err, sent)
				}
				return
			}
			if err != nil {
				t.Fatalf("resume: %v", err)
			}
			if res.Succeeded != 120 || srv.Stats().Submissions != 61 || sent != 1 {
				t.Fatalf("resume: %+v, %d submissions, row 5 sent %d times; want 120 rows, 61 submissions", res, srv.Stats().Submissions, sent)
			}
			checkAll(t, readResults(t, cfg.Output), 120)
		})
	}
}

// A row whose fingerprint collided with its leader's (two different requests taken for one) is
// answered from the cache when the leader's answer turns out not to be its own, not submitted. It
// was submitted: about 45 rows of ten million collide, and a nightly run paid for them again
// every night.
func TestCollidedFollowerAsksTheCache(t *testing.T) {
	srv, url := startEmulator(t, emulator.Config{})
	dir := t.TempDir()
	cfg, sum := chunkedInput(t, dir, url)
	cfg.Cache = openCache(t, dir)
	row5, blob := row5Follows2(t, cfg)
	cached := job.Result{ID: "earlier-5", Status: job.StatusSucceeded, OperationID: "op-of-an-earlier-run",
		Text:  emulator.Answer(modelURI, []emulator.Message{{Role: "user", Text: prompt(5)}}),
		Usage: &job.Usage{InputTokens: 3, CompletionTokens: 4, TotalTokens: 7}}
	key := batch.RequestKey(cfg.Settings.KeyScope(), row5.Body)
	if err := cfg.Cache.Put(context.Background(), []cache.Entry{job.CacheEntry(key, batch.ModelOf(row5.Body), &cached)}); err != nil {
		t.Fatal(err)
	}
	// Row 5 follows row 2; neither is done, the rest of rows [0, 60) are.
	writeResolved(t, cfg, sum, 1, blob, func(i int) bool { return i < 60 && i != 5 && i != 2 })

	before := srv.Stats().Submissions
	if _, err := job.New(cfg).Resume(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := srv.Stats().Submissions - before; got != 61 {
		t.Fatalf("%d submissions, want 61: rows 60-119 and row 2, row 5 from the cache", got)
	}
	r := readResults(t, cfg.Output)["r00005"]
	if !r.Cached || r.OperationID != cached.OperationID || r.Text != cached.Text || r.DeduplicatedFrom != "" {
		t.Fatalf("row 5: %+v; want the cached answer of %s", r, cached.OperationID)
	}
}

// Rows whose fingerprint collided with their leader's and that send the same request as each
// other go out once: the later ones take the first one's answer. Each was submitted, and billed,
// on its own. Here rows 5 and 6 send the same request and the checkpoint's groups say both follow
// row 2; the leader is open (its answer finds them) or resolved (a resume finds them as strays).
func TestCollidedTwinsAreSubmittedOnce(t *testing.T) {
	for _, tc := range []struct {
		name           string
		leaderResolved bool
		want           int64
	}{
		{"leader open", false, 62},    // rows 60-119, row 2, row 5 for itself and row 6
		{"leader resolved", true, 61}, // rows 60-119, row 5 for itself and row 6
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, url := startEmulator(t, emulator.Config{})
			dir := t.TempDir()
			cfg, sum, blob := twinsFollow2(t, dir, url)
			writeResolved(t, cfg, sum, 2, blob, func(i int) bool {
				return i < 60 && i != 5 && i != 6 && (i != 2 || tc.leaderResolved)
			})
			before := srv.Stats().Submissions
			if _, err := job.New(cfg).Resume(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := srv.Stats().Submissions - before; got != tc.want {
				t.Fatalf("%d submissions, want %d", got, tc.want)
			}
			res := readResults(t, cfg.Output)
			r5, r6 := res["r00005"], res["r00006"]
			want := emulator.Answer(modelURI, []emulator.Message{{Role: "user", Text: prompt(5)}})
			if r5.Status != job.StatusSucceeded || r5.Text != want || r5.DeduplicatedFrom != "" {
				t.Fatalf("row 5: %+v; want its own answer", r5)
			}
			if r6.Status != job.StatusSucceeded || r6.Text != want || r6.DeduplicatedFrom != "r00005" || r6.OperationID != r5.OperationID {
				t.Fatalf("row 6: %+v; want row 5's answer (operation %s)", r6, r5.OperationID)
			}
		})
	}
}

// twinsFollow2 writes a 120-row input whose row 6 sends the same request as row 5, and returns the
// groups of a run that took rows 5 and 6 for duplicates of row 2 (a fingerprint collision), as the
// run encodes them (batch.Duplicates.MarshalBinary).
func twinsFollow2(t *testing.T, dir, url string) (job.Config, batch.Summary, []byte) {
	t.Helper()
	in := writePrompts(t, dir, 120, func(i int) string {
		if i == 6 {
			return prompt(5)
		}
		return prompt(i)
	})
	cfg := config(dir, in, url)
	cfg.Tuning.Concurrency = 4
	sum, err := batch.Validate(in, cfg.Settings.Input, 0, batch.WithChunkSize(chunkSize))
	if err != nil {
		t.Fatal(err)
	}
	rd, err := batch.Open(cfg.Input, cfg.Settings.Input)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	blob := []byte{1, 2} // format 1, two followers
	prevLeader := 0
	for {
		row, err := rd.Next()
		if err != nil {
			t.Fatal(err)
		}
		if row.Index != 5 && row.Index != 6 {
			continue
		}
		for _, v := range []int{2 - prevLeader, row.Index - 2, row.Line, int(row.Offset)} {
			blob = binary.AppendUvarint(blob, uint64(v))
		}
		prevLeader = 2
		if row.Index == 6 {
			return cfg, sum, blob
		}
	}
}

// Groups as validation makes them when many fingerprints collide: rows are grouped by a bucket of
// their request (five buckets for 17 distinct requests over 120 rows), the first row of a bucket
// leads it. Whatever a group mixes, every distinct request is submitted once and every row gets
// the answer to its own request: a follower that sends its leader's request takes its answer,
// and the others go out once for each request they send, the rest of them waiting for that one.
// With the leaders resolved, a resume finds the followers as strays and must do the same; with a
// cache (empty at the start), nothing changes; stopped midway and resumed, the total is the same.
func TestManyCollisionsSubmitEachRequestOnce(t *testing.T) {
	const distinct, buckets = 17, 5
	promptOf := func(i int) string { return prompt(i % distinct) }
	bucket := func(i int) int { return i % distinct % buckets }
	for _, tc := range []struct {
		name                             string
		leaderResolved, cache, interrupt bool
	}{
		{"leaders open", false, false, false},
		{"leaders resolved", true, false, false},
		{"leaders open, with a cache", false, true, false},
		{"leaders resolved, with a cache", true, true, false},
		{"leaders open, interrupted and resumed", false, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ecfg emulator.Config
			if tc.interrupt {
				// Operations that take a while, so that the interruption finds some in flight.
				ecfg.Latency, _ = emulator.ParseLatency("uniform:50ms:150ms")
			}
			srv, url := startEmulator(t, ecfg)
			dir := t.TempDir()
			in := writePrompts(t, dir, 120, promptOf)
			cfg := config(dir, in, url)
			cfg.Tuning.Concurrency = 4
			if tc.cache {
				cfg.Cache = openCache(t, dir)
			}
			sum, err := batch.Validate(in, cfg.Settings.Input, 0, batch.WithChunkSize(chunkSize))
			if err != nil {
				t.Fatal(err)
			}
			// The groups blob (batch.Duplicates.MarshalBinary): followers sorted by leader, then
			// by row, each as its leader's delta from the previous leader, its distance from its
			// leader, its line and offset.
			rows := readRows(t, cfg)
			leaderOf := map[int]int{} // bucket -> its first row
			followers := map[int][]batch.Row{}
			var leaders []int
			for _, row := range rows {
				b := bucket(row.Index)
				l, ok := leaderOf[b]
				if !ok {
					leaderOf[b] = row.Index
					leaders = append(leaders, row.Index)
					continue
				}
				followers[l] = append(followers[l], row)
			}
			blob := binary.AppendUvarint([]byte{1}, uint64(len(rows)-len(leaders)))
			prev := 0
			for _, l := range leaders {
				for _, f := range followers[l] {
					for _, v := range []int{l - prev, f.Index - l, f.Line, int(f.Offset)} {
						blob = binary.AppendUvarint(blob, uint64(v))
					}
					prev = l
				}
			}
			writeResolved(t, cfg, sum, len(rows)-len(leaders), blob, func(i int) bool {
				return tc.leaderResolved && leaderOf[bucket(i)] == i
			})

			before := srv.Stats().Submissions
			if tc.interrupt {
				// Stopped after 10 of the 17 requests went out (the 5 leaders and some of the rows
				// that collided with them), then resumed: the followers of resolved leaders are
				// strays, what was sent is polled, not sent again, and the rows that waited for it
				// still wait for it.
				ctx, cancel := context.WithCancel(context.Background())
				go func() {
					for srv.Stats().Submissions-before < 10 {
						time.Sleep(time.Millisecond)
					}
					cancel()
				}()
				if sum, err := job.New(cfg).Resume(ctx); !errors.Is(err, job.ErrInterrupted) || sum.Pending == 0 {
					t.Fatalf("interrupted resume: err %v, summary %+v", err, sum)
				}
			}
			if _, err := job.New(cfg).Resume(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := srv.Stats().Submissions - before; got != distinct {
				t.Fatalf("%d submissions, want %d: one for each distinct request", got, distinct)
			}
			res := readResults(t, cfg.Output)
			if len(res) != len(rows) {
				t.Fatalf("%d results, want %d", len(res), len(rows))
			}
			for _, row := range rows {
				r := res[row.ID]
				want := emulator.Answer(modelURI, []emulator.Message{{Role: "user", Text: promptOf(row.Index)}})
				if r.Status != job.StatusSucceeded || r.Text != want {
					t.Fatalf("row %d: %+v; want the answer to its own request", row.Index, r)
				}
			}
		})
	}
}

// readRows reads every row of cfg's input.
func readRows(t *testing.T, cfg job.Config) []batch.Row {
	t.Helper()
	rd, err := batch.Open(cfg.Input, cfg.Settings.Input)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	var rows []batch.Row
	for {
		row, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return rows
		}
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, row)
	}
}
