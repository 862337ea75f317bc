package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/batchgpt/batchgpt/internal/cmd"
	"github.com/batchgpt/batchgpt/internal/emulator"
	"github.com/batchgpt/batchgpt/internal/job"
)

// Spend limits, through the binary against the emulator.
//
// The prompts are made so that the budget's estimate of every row is its usage exactly: four
// words of three characters (15 characters, estimated 4 tokens; the emulator counts words), and
// --max-tokens 5, to which the emulator cuts every answer. The documented bound (billed ≤ limit +
// what the rows in flight billed beyond their estimates) is then billed ≤ limit, and how many rows
// a limit lets through is known: 9 tokens a row.

const (
	spendRows    = 30
	spendUnique  = 25 // rows from 25 on repeat an earlier row's prompt: deduplicated, never billed
	spendPerRow  = 9  // tokens billed per submitted row: 4 in, 5 out
	spendMaxToks = "5"
)

func spendPrompt(i int) string { return fmt.Sprintf("p%02d foo bar baz", i%spendUnique) }

// spendRun is one command of a spend test: its exit code, its summary, and what the emulator
// billed and received meanwhile.
type spendRun struct {
	code        int
	stderr      string
	sum         job.Summary
	billed      int64 // tokens the emulator reported as usage during the command
	submissions int64
}

func runSpend(t *testing.T, srv *emulator.Server, url, dir string, args ...string) spendRun {
	t.Helper()
	before := srv.Stats()
	summary := filepath.Join(dir, "summary.json")
	os.Remove(summary)
	args = append(args[:1:1], append([]string{"--no-progress", "--summary-json", summary, "--price", "yandexgpt-lite=1"}, args[1:]...)...)
	res := runCmd(t, withKey(command(url, args...), testKey))
	after := srv.Stats()
	r := spendRun{code: res.code, stderr: res.stderr,
		billed:      after.InputTokens + after.OutputTokens - before.InputTokens - before.OutputTokens,
		submissions: after.Submissions - before.Submissions}
	data, err := os.ReadFile(summary)
	if err != nil {
		t.Fatalf("%v: no summary: %v\n%s", args, err, res.stderr)
	}
	if err := json.Unmarshal(data, &r.sum); err != nil {
		t.Fatal(err)
	}
	return r
}

// stopped checks a command that stopped at the limit: exit 6, the spend reported as the emulator
// billed it over the whole run, within the limit (the documented bound with exact estimates), and
// the resume command printed.
func (r spendRun) stopped(t *testing.T, billedSoFar, limitTokens int64) {
	t.Helper()
	if r.code != cmd.ExitSpendLimit {
		t.Fatalf("exit code %d, want %d (stopped at the spend limit)\n%s", r.code, cmd.ExitSpendLimit, r.stderr)
	}
	sp := r.sum.Spend
	if !r.sum.StoppedAtLimit || sp == nil || sp.NotSubmitted == 0 || r.sum.Pending == 0 {
		t.Fatalf("summary does not say it stopped at the limit: %+v %+v", r.sum, sp)
	}
	if sp.Tokens != billedSoFar {
		t.Errorf("summary says %d tokens spent; the emulator billed %d over the run", sp.Tokens, billedSoFar)
	}
	if billedSoFar > limitTokens {
		t.Errorf("the emulator billed %d tokens, over the limit of %d", billedSoFar, limitTokens)
	}
	if billedSoFar+spendPerRow <= limitTokens {
		t.Errorf("stopped at %d tokens, with room for another row under %d", billedSoFar, limitTokens)
	}
	if !bytes.Contains([]byte(r.stderr), []byte("batchgpt resume ")) || !bytes.Contains([]byte(r.stderr), []byte("stopped at the spend limit")) {
		t.Errorf("no spend or resume command printed:\n%s", r.stderr)
	}
}

// checkSpendResults asserts that every row is in the results exactly once with the emulator's
// answer, and that every distinct request was submitted exactly once.
func checkSpendResults(t *testing.T, srv *emulator.Server, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	uri := "gpt://" + testFolder + "/yandexgpt-lite/latest"
	max, _ := strconv.ParseInt(spendMaxToks, 10, 64)
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		var r job.Result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("results line %q: %v", sc.Text(), err)
		}
		if seen[r.ID] {
			t.Fatalf("row %s appears twice in the results", r.ID)
		}
		seen[r.ID] = true
		var i int
		fmt.Sscanf(r.ID, "r%05d", &i)
		want, _, _ := emulator.Completion(uri, []emulator.Message{{Role: "user", Text: spendPrompt(i)}}, max)
		if r.Status != job.StatusSucceeded || r.Text != want {
			t.Fatalf("row %s: %q %q %+v, want %q", r.ID, r.Status, r.Text, r.Error, want)
		}
	}
	if len(seen) != spendRows {
		t.Fatalf("%d rows in the results, want %d", len(seen), spendRows)
	}
	for i := range spendUnique {
		if n := srv.OperationsFor(uri, []emulator.Message{{Role: "user", Text: spendPrompt(i)}}); n != 1 {
			t.Errorf("request of row %d submitted %d times, want once", i, n)
		}
	}
}

func spendInput(t *testing.T) (dir, input, ckpt string) {
	t.Helper()
	dir = t.TempDir()
	input = writeInputOf(t, filepath.Join(dir, "in.jsonl"), spendRows, spendPrompt)
	return dir, input, filepath.Join(dir, "in.checkpoint.json")
}

// --max-cost: the run stops at the limit (exit 6) within it; a resume without the flag keeps the
// limit and submits nothing; a higher limit goes further; --max-cost 0 removes it, and the run
// ends with every row exactly once.
func TestMaxCost(t *testing.T) {
	t.Parallel()
	srv, url := startEmulator(t, emulator.Config{})
	dir, input, ckpt := spendInput(t)
	// At 1 per 1,000 tokens a row costs 0.009: 0.05 lets 5 rows through (45 tokens).
	r := runSpend(t, srv, url, dir, "run", "--max-tokens", spendMaxToks, "--max-cost", "0.05", input)
	r.stopped(t, r.billed, 50)
	if r.sum.Spend.MaxCost != 0.05 || r.submissions != 5 {
		t.Errorf("limit %v, %d submissions; want 0.05 and 5", r.sum.Spend.MaxCost, r.submissions)
	}
	total := r.billed

	again := runSpend(t, srv, url, dir, "resume", ckpt)
	again.stopped(t, total, 50)
	if again.submissions != 0 || again.sum.Spend.MaxCost != 0.05 {
		t.Errorf("a resume without --max-cost made %d submissions under limit %v; want none under the kept 0.05", again.submissions, again.sum.Spend.MaxCost)
	}

	higher := runSpend(t, srv, url, dir, "resume", "--max-cost", "0.1", ckpt)
	total += higher.billed
	higher.stopped(t, total, 100)
	if higher.submissions != 6 {
		t.Errorf("--max-cost 0.1: %d more submissions, want 6", higher.submissions)
	}
	// The raised limit is the checkpoint's now.
	kept := runSpend(t, srv, url, dir, "resume", ckpt)
	kept.stopped(t, total, 100)
	if kept.submissions != 0 || kept.sum.Spend.MaxCost != 0.1 {
		t.Errorf("a resume after --max-cost 0.1 made %d submissions under limit %v; want none under 0.1", kept.submissions, kept.sum.Spend.MaxCost)
	}

	none := runSpend(t, srv, url, dir, "resume", "--max-cost", "0", ckpt)
	if none.code != 0 || none.sum.StoppedAtLimit || none.sum.Spend != nil {
		t.Fatalf("--max-cost 0: exit %d, summary %+v; want 0 and no limit\n%s", none.code, none.sum, none.stderr)
	}
	if total += none.billed; total != spendUnique*spendPerRow {
		t.Errorf("the emulator billed %d tokens in all, want %d", total, spendUnique*spendPerRow)
	}
	checkSpendResults(t, srv, filepath.Join(dir, "in.results.jsonl"))
}

// --max-total-tokens: the same with the token budget; a resume with a higher one goes to the end.
func TestMaxTotalTokens(t *testing.T) {
	t.Parallel()
	srv, url := startEmulator(t, emulator.Config{})
	dir, input, ckpt := spendInput(t)
	r := runSpend(t, srv, url, dir, "run", "--max-tokens", spendMaxToks, "--max-total-tokens", "100", "--concurrency", "4", input)
	r.stopped(t, r.billed, 100)
	if r.submissions != 11 || r.sum.Spend.MaxTotalTokens != 100 {
		t.Errorf("%d submissions under limit %d; want 11 under 100", r.submissions, r.sum.Spend.MaxTotalTokens)
	}

	again := runSpend(t, srv, url, dir, "resume", ckpt)
	again.stopped(t, r.billed, 100)
	if again.submissions != 0 {
		t.Errorf("a resume without --max-total-tokens made %d submissions; want none", again.submissions)
	}

	done := runSpend(t, srv, url, dir, "resume", "--max-total-tokens", "1000", ckpt)
	if done.code != 0 || done.sum.StoppedAtLimit || done.sum.Spend == nil || done.sum.Spend.MaxTotalTokens != 1000 {
		t.Fatalf("--max-total-tokens 1000: exit %d, summary %+v; want 0 within the limit\n%s", done.code, done.sum, done.stderr)
	}
	if total := r.billed + done.billed; done.sum.Spend.Tokens != total || total != spendUnique*spendPerRow {
		t.Errorf("spend %d, the emulator billed %d; want both %d", done.sum.Spend.Tokens, total, spendUnique*spendPerRow)
	}
	checkSpendResults(t, srv, filepath.Join(dir, "in.results.jsonl"))
}

// --dry-run says whether the estimated run fits the limits, and how far it would go.
func TestDryRunLimits(t *testing.T) {
	t.Parallel()
	_, input, _ := spendInput(t)
	for _, tc := range []struct{ limit, want string }{
		{"100", "--max-total-tokens 100: the run does not fit: ~225 tokens"},
		{"100", "about 11 of the 25 rows to submit go out before it stops (exit 6)"},
		{"225", "--max-total-tokens 225: the run fits: ~225 tokens"},
	} {
		res := runCmd(t, command("http://127.0.0.1:9", "run", "--dry-run", "--max-tokens", spendMaxToks, "--max-total-tokens", tc.limit, input))
		if res.code != 0 || !bytes.Contains([]byte(res.stdout), []byte(tc.want)) {
			t.Errorf("--max-total-tokens %s: exit %d, output lacks %q:\n%s%s", tc.limit, res.code, tc.want, res.stdout, res.stderr)
		}
	}
}
