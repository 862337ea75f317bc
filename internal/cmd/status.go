package cmd

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/batchgpt/batchgpt/internal/batchjob"
	"github.com/batchgpt/batchgpt/internal/job"
)

func (e *env) statusCommand() *cli.Command {
	return &cli.Command{
		Name:      "status",
		Usage:     "print the counts of a CHECKPOINT (works while a run is in progress)",
		ArgsUsage: "CHECKPOINT",
		Description: "Reads the checkpoint without locking it: rows, submitted, pending, succeeded, failed, rows in doubt,\n" +
			"tokens used so far, the results path and an ETA for the rows not yet submitted under the quota.\n" +
			"Example:\n   batchgpt status --json prompts.checkpoint.json | jq .pending",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print JSON for scripts"},
			&cli.Float64Flag{Name: "submit-rps", Value: job.DefaultTuning().SubmitRPS, Usage: "the submission quota per second, for the ETA"},
			&cli.IntFlag{Name: "submit-per-hour", Value: job.DefaultTuning().SubmitPerHour, Usage: "the submission quota per hour, for the ETA"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef("status: want exactly one CHECKPOINT file, got %d arguments", c.NArg())
			}
			st, err := job.ReadStatus(c.Args().First(), c.Float64("submit-rps"), c.Int("submit-per-hour"), time.Now())
			if err != nil {
				return err
			}
			bs, err := statusBatch(c.Args().First())
			if err != nil {
				return err
			}
			if c.Bool("json") {
				enc := json.NewEncoder(e.stdout)
				enc.SetIndent("", "  ")
				if bs != nil {
					return enc.Encode(struct {
						*job.Status
						Backend string           `json:"backend"`
						Batch   *batchjob.Status `json:"batch"`
					}{st, backendBatch, bs})
				}
				return enc.Encode(st)
			}
			w := e.stdout
			if bs != nil {
				fmt.Fprintf(w, "backend:    batch (%s)\ndataset:    %s\ntask:       %s\nstatus:     %s, %d of %d batches done (as last seen)\nstep:       %s\n",
					bs.Endpoint, orNone(bs.Dataset), orNone(bs.Task), orNone(bs.Status), bs.Completed, bs.Total, bs.Step)
			}
			fmt.Fprintf(w, "checkpoint: %s\ninput:      %s\nresults:    %s\n", st.Checkpoint, st.Input, st.Results)
			fmt.Fprintf(w, "rows:       %d\nsubmitted:  %d\npending:    %d\nsucceeded:  %d\nfailed:     %d\n",
				st.Rows, st.Submitted, st.Pending, st.Succeeded, st.Failed)
			if st.InDoubt > 0 {
				fmt.Fprintf(w, "in doubt:   %d (being submitted when last seen; resume submits them again)\n", st.InDoubt)
			}
			if st.PossibleDuplicates > 0 {
				fmt.Fprintf(w, "possibly billed twice: %d (tries that failed after they may have reached the API, operations that vanished or failed, rows sent again after a crash)\n", st.PossibleDuplicates)
			}
			fmt.Fprintf(w, "cached:     %d, deduplicated: %d (answered without a submission)\n", st.Cached, st.Deduplicated)
			if st.ContentFiltered > 0 || st.Truncated > 0 {
				fmt.Fprintf(w, "answers:    %d stopped by the content filter, %d truncated at max tokens\n", st.ContentFiltered, st.Truncated)
			}
			fmt.Fprintf(w, "tokens:     %d in, %d out (billed; %d more answered without a submission)\n", st.InputTokens, st.OutputTokens, st.SavedTokens)
			if st.NotSubmitted > 0 {
				fmt.Fprintf(w, "eta:        %s to submit the remaining %d rows at %g/s and %d/hour, plus the operations' own time\n",
					time.Duration(st.SubmitETASeconds*float64(time.Second)).Round(time.Second), st.NotSubmitted, c.Float64("submit-rps"), c.Int("submit-per-hour"))
			}
			for _, p := range st.Problems {
				fmt.Fprintf(w, "note:       %s\n", p)
			}
			return nil
		},
	}
}

// orNone is s, or "none" when empty.
func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
