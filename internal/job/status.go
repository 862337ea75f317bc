package job

import (
	"math"
	"time"

	"github.com/batchgpt/batchgpt/store"
)

// Status is what `batchgpt status` reports.
type Status struct {
	Checkpoint         string   `json:"checkpoint"`
	Input              string   `json:"input"`
	Results            string   `json:"results"`
	Rows               int      `json:"rows"`
	Submitted          int      `json:"submitted"` // rows with an operation id, resolved or not
	Pending            int      `json:"pending"`   // rows not resolved yet
	NotSubmitted       int      `json:"not_submitted"`
	InDoubt            int      `json:"in_doubt"`            // rows being submitted when last seen: resume sends them again
	PossibleDuplicates int      `json:"possible_duplicates"` // tries or operations so far that may have been billed and never used
	Succeeded          int      `json:"succeeded"`
	Failed             int      `json:"failed"`
	InputTokens        int64    `json:"input_tokens"`     // billed
	OutputTokens       int64    `json:"output_tokens"`    // billed
	Cached             int      `json:"cached"`           // answered from the result cache
	Deduplicated       int      `json:"deduplicated"`     // answered by a row of the run with the same request
	SavedTokens        int64    `json:"saved_tokens"`     // tokens of those, not paid for again
	ContentFiltered    int      `json:"content_filtered"` // answers stopped by the content filter (failed unless --accept-filtered)
	Truncated          int      `json:"truncated"`        // answers cut at maxTokens (succeeded)
	SubmitETASeconds   float64  `json:"submit_eta_seconds"`
	Problems           []string `json:"problems,omitempty"`
}

// ReadStatus reads a checkpoint (without locking it) and the results it vouches for.
func ReadStatus(checkpoint string, rps float64, perHour int, now time.Time) (*Status, error) {
	st, err := store.LoadLean(checkpoint) // loads in full when a line was superseded (latestLines)
	if err != nil {
		return nil, err
	}
	c := st.Counts()
	s := &Status{Checkpoint: checkpoint, Input: st.Header.Input, Results: st.Header.Results, Rows: c.Rows,
		Submitted: c.Submitted + c.Succeeded + c.Failed, Pending: c.Rows - c.Succeeded - c.Failed,
		NotSubmitted: c.New + c.InFlight, InDoubt: c.InFlight, PossibleDuplicates: st.Doubts, Succeeded: c.Succeeded, Failed: c.Failed,
		Problems: st.Problems}
	t, err := tallyResults(st.Header.Results, st.Header.ResultsFormat, st.ResultsEnd, latestLines(st))
	if err != nil {
		s.Problems = append(s.Problems, err.Error())
	}
	s.InputTokens, s.OutputTokens = t.InputTokens, t.OutTokens
	s.Cached, s.Deduplicated, s.SavedTokens = t.Cached, t.Deduplicated, t.SavedTokens
	s.ContentFiltered, s.Truncated = t.ContentFiltered, t.Truncated
	used := 0
	for _, sc := range st.SubmittedSince(now.Add(-time.Hour)) {
		used += sc.N
	}
	s.SubmitETASeconds = SubmitETA(s.NotSubmitted, used, rps, perHour).Seconds()
	return s, nil
}

// SubmitETA estimates how long n more submissions take under both quota windows, given how many
// were made in the last hour. It is an estimate: the hour window frees slots as old submissions
// age out, which it spreads evenly.
func SubmitETA(n, usedLastHour int, rps float64, perHour int) time.Duration {
	if n <= 0 {
		return 0
	}
	secs := 0.0
	if rps > 0 {
		secs = float64(n) / rps
	}
	if perHour > 0 {
		avail := max(perHour-usedLastHour, 0)
		if n > avail {
			burst := 0.0
			if rps > 0 {
				burst = float64(avail) / rps
			}
			secs = math.Max(secs, burst+float64(n-avail)*3600/float64(perHour))
		}
	}
	return time.Duration(secs * float64(time.Second))
}
