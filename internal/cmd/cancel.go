package cmd

import (
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/urfave/cli/v2"

	"github.com/batchgpt/batchgpt/internal/api"
	"github.com/batchgpt/batchgpt/internal/auth"
	"github.com/batchgpt/batchgpt/internal/job"
	"github.com/batchgpt/batchgpt/store"
)

func (e *env) cancelCommand() *cli.Command {
	return &cli.Command{
		Name:      "cancel",
		Usage:     "cancel the operations of a CHECKPOINT still pending at the API; their rows fail with error kind cancelled",
		ArgsUsage: "CHECKPOINT",
		Description: "Cancels every operation still pending (GET …/operations/{id}:cancel) and records its row as failed with\n" +
			"error kind \"cancelled\"; an operation that finished before its cancel arrived keeps its real result. Rows never\n" +
			"submitted stay so, and rows that were being submitted when a run stopped (no operation id) cannot be cancelled.\n" +
			"It takes the checkpoint's lock: stop a running batchgpt first (SIGTERM or Ctrl-C; it saves every operation id).\n" +
			"Endpoints come from the checkpoint, credentials as for resume. `batchgpt resume --retry-failed` submits the\n" +
			"cancelled rows again.\n" +
			"Example:\n   batchgpt cancel prompts.checkpoint.json\n\n" + credentialsHelp + "\n\n" + exitCodesHelp,
		Flags: slices.Concat(pickFlags(tuningFlags(), "poll-rps", "max-attempts", "request-timeout"),
			pickFlags(cacheFlags(), "cache", "no-cache"), authFlags(),
			pickFlags(outputFlags(), "log-format", "quiet", "verbose")),
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef("cancel: want exactly one CHECKPOINT file, got %d arguments", c.NArg())
			}
			rc := &runConfig{quiet: c.Bool("quiet"), verbose: c.Bool("verbose")}
			switch c.String("log-format") {
			case "text", "":
			case "json":
				rc.logJSON = true
			default:
				return usagef("--log-format %q: want text or json", c.String("log-format"))
			}
			rc.checkpoint = c.Args().First()
			rc.tuning = job.DefaultTuning()
			rc.tuning.PollRPS, rc.tuning.MaxAttempts, rc.tuning.RequestTimeout = c.Float64("poll-rps"), c.Int("max-attempts"), c.Duration("request-timeout")
			if rc.tuning.PollRPS < 0 || rc.tuning.MaxAttempts <= 0 {
				return usagef("--poll-rps must not be negative and --max-attempts must be positive")
			}
			rc.auth = auth.Config{SAKeyFile: c.String("sa-key-file"), IAMEndpoint: c.String("iam-endpoint"),
				MetadataURL: c.String("metadata-url"), UseMetadata: c.Bool("metadata"), AutoMetadata: true}
			if _, err := api.CheckEndpoint("--iam-endpoint", rc.auth.IAMEndpoint); err != nil {
				return &UsageError{Msg: err.Error()}
			}
			rc.cache.path = c.String("cache")
			return e.cancel(c, rc, c.Bool("no-cache"))
		},
	}
}

// cancel runs job.Cancel for rc and prints its one summary line.
func (e *env) cancel(c *cli.Context, rc *runConfig, noCache bool) error {
	logger := e.logger(rc, e.stderr)
	if isBatchCheckpoint(rc.checkpoint) {
		return e.cancelBatch(c.Context, rc, logger)
	}
	cfg := job.Config{Checkpoint: rc.checkpoint, Tuning: rc.tuning, Logger: logger, Kill: e.kill,
		HTTPClient: &http.Client{Transport: api.NewTransport()}, Connect: connector(rc.auth, logger)}
	// Answers of operations done before their cancel go to the cache, as a collection stores them.
	// Whether the checkpoint's run used one is its settings' say (Settings.NoCache).
	cfg.Settings.NoCache = noCache
	oc := e.openCache(rc.cache, logger, noCache, false)
	defer oc.close()
	if oc.cache != nil {
		cfg.Cache = oc.cache
	}
	sum, err := job.New(cfg).Cancel(c.Context)
	if errors.Is(err, store.ErrLocked) {
		return fmt.Errorf("cancel: %w: stop it first (SIGTERM or Ctrl-C; it saves every operation id), then run batchgpt cancel again", err)
	}
	if sum.Results != "" {
		fmt.Fprintf(e.stdout, "cancelled %d, finished before the cancel %d, left pending %d\n", sum.Cancelled, sum.Finished, sum.Pending)
		if sum.InFlight > 0 {
			fmt.Fprintf(e.stdout, "note: %d row(s) were being submitted when the run stopped and have no operation id: they cannot be cancelled and were left as they are\n", sum.InFlight)
		}
		if sum.NotSubmitted > 0 {
			fmt.Fprintf(e.stdout, "note: %d row(s) were never submitted and stay so\n", sum.NotSubmitted)
		}
		if sum.Cancelled > 0 {
			fmt.Fprintf(e.stdout, "the cancelled rows failed with error kind cancelled in %s; `batchgpt resume --retry-failed %s` submits them again\n",
				sum.Results, shellQuote(rc.checkpoint))
		}
	}
	return err
}

// pickFlags returns the flags of fs called names, in their order in fs.
func pickFlags(fs []cli.Flag, names ...string) []cli.Flag {
	var out []cli.Flag
	for _, f := range fs {
		if slices.Contains(names, f.Names()[0]) {
			out = append(out, f)
		}
	}
	return out
}
