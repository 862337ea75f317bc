package cmd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/batchgpt/batchgpt/batch"
	"github.com/batchgpt/batchgpt/internal/api"
	"github.com/batchgpt/batchgpt/internal/auth"
	"github.com/batchgpt/batchgpt/internal/emulator"
	"github.com/batchgpt/batchgpt/internal/job"
	"github.com/batchgpt/batchgpt/internal/version"
	"github.com/batchgpt/batchgpt/store"
)

func (e *env) runCommand() *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "validate INPUT, then submit every row, poll and write the results",
		ArgsUsage: "INPUT.jsonl|INPUT.csv",
		Description: "The whole input is validated first: any problem is reported with file, line and field, and nothing is sent.\n" +
			"The same command serves every night: with the input's run unfinished it carries on; complete, it has nothing to do;\n" +
			"for new content it collects the earlier run's pending operations, archives that run under its date and starts anew.\n" +
			"Examples:\n" +
			"   batchgpt run --emulator samples/prompts.jsonl\n" +
			"   YC_API_KEY=... batchgpt run --folder b1g... --model yandexgpt prompts.jsonl\n" +
			"   batchgpt run --template 'Translate to English: {{.text}}' -o out.csv reviews.csv\n\n" + credentialsHelp + "\n\n" + exitCodesHelp,
		Flags: runFlags(),
		Action: func(c *cli.Context) error {
			rc, err := parseRunFlags(c, false)
			if err != nil {
				return e.usageError(rc, err)
			}
			switch {
			case rc.dryRun && rc.batch.on:
				return e.dryRunBatch(c.Context, rc)
			case rc.dryRun:
				return e.dryRun(c.Context, rc)
			case rc.batch.on:
				return e.executeBatch(c.Context, rc)
			}
			return e.execute(c.Context, rc)
		},
	}
}

func (e *env) resumeCommand() *cli.Command {
	return &cli.Command{
		Name:      "resume",
		Usage:     "continue an interrupted run from its CHECKPOINT",
		ArgsUsage: "CHECKPOINT",
		Description: "Submits rows never submitted, polls operations still pending and writes results not yet written.\n" +
			"A checkpoint of --backend batch carries on from its last step: a dataset or task an interrupted call may have\n" +
			"made is looked up before the call is made again, so there is never a second task.\n" +
			"A row whose operation id is in the checkpoint is never submitted again. Request settings come from the\n" +
			"checkpoint; only tuning (concurrency, rates, attempts) and credentials may change.\n" +
			"Examples:\n   batchgpt resume prompts.checkpoint.json\n   batchgpt resume --retry-failed prompts.checkpoint.json\n\n" + credentialsHelp + "\n\n" + exitCodesHelp,
		Flags: resumeFlags(),
		Action: func(c *cli.Context) error {
			rc, err := parseRunFlags(c, true)
			if err != nil {
				return e.usageError(rc, err)
			}
			if isBatchCheckpoint(rc.checkpoint) {
				if rc.retryFailed {
					return e.usageError(rc, usagef("--retry-failed: not supported yet for a run of --backend batch"))
				}
				rc.batch.on = true
				return e.executeBatch(c.Context, rc)
			}
			return e.execute(c.Context, rc)
		},
	}
}

// usageError returns err, a mistake in the command line that parseRunFlags found in rc. With
// --log-format json read before the mistake, the console reports it in JSON.
func (e *env) usageError(rc *runConfig, err error) error {
	if rc.logJSON {
		e.console.useJSON(e.newProgress(rc).logOut)
	}
	return err
}

// execute runs or resumes the job rc describes, then reports how it ended: the summary JSON,
// the metrics file with the exit code main will exit with, the webhook.
func (e *env) execute(ctx context.Context, rc *runConfig) error {
	prog := e.newProgress(rc)
	logger := e.logger(rc, prog.logOut)
	build := version.Get()
	logger.Info("batchgpt starting", build.LogAttrs()...)
	rep := newRunReport(rc, build, logger)
	j, sum, err := e.runJob(ctx, rc, prog, logger, rep)
	doc, err := writeSummary(rc, sum, build, err)
	rep.finish(e.kill, j, sum, exitCode(err), doc)
	return err
}

// runJob builds the job rc describes and runs it; j is nil when it could not be made.
func (e *env) runJob(ctx context.Context, rc *runConfig, prog *progress, logger *slog.Logger, rep *runReport) (*job.Job, job.Summary, error) {
	cfg := job.Config{
		Input: rc.input, Checkpoint: rc.checkpoint, Output: rc.output, Force: rc.force,
		DiscardPending: rc.discardPending, RetryFailed: rc.retryFailed,
		Limits: rc.limits, Prices: rc.prices,
		Settings:   rc.settings,
		Tuning:     rc.tuning,
		HTTPClient: &http.Client{Transport: api.NewTransport()},
		Logger:     logger,
		Kill:       e.kill,
	}
	oc := e.openCache(rc.cache, logger, cfg.Settings.NoCache, false)
	defer oc.close()
	if oc.cache != nil {
		cfg.Cache, cfg.CacheTTL = oc.cache, oc.ttl
	}

	if rc.emulator {
		srv, key, err := startEmulator(rc.emulatorLatency, rc.emulatorFaults)
		if err != nil {
			return nil, job.Summary{}, err
		}
		defer srv.Close()
		cfg.Settings.Endpoint, cfg.Settings.OperationsEndpoint = srv.URL, srv.URL
		cfg.Credentials = auth.APIKey(key)
		logger.Info("using the built-in emulator", "url", srv.URL)
	} else {
		cfg.Connect = connector(rc.auth, logger)
		defer limitMemory()() // not with the emulator in this process: its operations would count
	}

	j := job.New(cfg)
	prog.start(rc, j, logger, rep.tick(j))
	var sum job.Summary
	var err error
	if rc.resume {
		sum, err = j.Resume(ctx)
	} else {
		sum, err = j.Run(ctx)
	}
	prog.stop()
	if price, ok := rc.prices.For(j.ModelURI()); ok {
		sum.Currency = job.DefaultCurrency
		sum.EstimatedCost = job.Cost(sum.InputTokens+sum.OutputTokens, price)
		sum.SavedCost = job.Cost(sum.SavedTokens, price)
	}
	err = e.ended(rc, &sum, oc, cfg.Checkpoint, "every operation id", err)
	return j, sum, err
}

// ended reports how a run or resume ended: the summary (with the cache's path and problem), and
// the error the command returns for err, with how to continue a run that can be resumed; saved
// says what the checkpoint kept ("every operation id").
func (e *env) ended(rc *runConfig, sum *job.Summary, oc *openedCache, checkpoint, saved string, err error) error {
	if oc.cache != nil {
		sum.Cache = oc.path
	}
	if sum.CacheProblem == "" {
		sum.CacheProblem = oc.problem
	}
	if sum.Rows > 0 && !rc.quiet {
		e.printSummary(*sum)
	}
	if err != nil {
		var ve *batch.ValidationError
		switch {
		case errors.As(err, &ve):
			return err
		case errors.Is(err, store.ErrExists):
			return &UsageError{Msg: err.Error()}
		case errors.Is(err, job.ErrSpendLimit):
			return e.stoppedAtLimit(*sum, checkpoint, err)
		case sum.Rows > 0 && (errors.Is(err, job.ErrInterrupted) || errors.Is(err, job.ErrAuth) || sum.Pending > 0):
			msg, resumeCmd := auth.Redact(err.Error()), "batchgpt resume "+shellQuote(checkpoint)
			e.console.Error(msg+"; "+saved+" is saved",
				fmt.Sprintf("batchgpt: %s\nbatchgpt: %s is saved; to continue run:\n    %s\n", msg, saved, resumeCmd),
				"resume", resumeCmd)
			return errors.Join(err, ErrReported)
		}
		return err
	}
	if sum.Failed > rc.tolerated(sum.Rows) {
		return &FailedRowsError{Failed: sum.Failed, Rows: sum.Rows}
	}
	return nil
}

type emulatorHandle struct {
	URL   string
	Close func() error
}

// startEmulator starts an in-process emulator on a loopback port with a fresh API key.
func startEmulator(lat emulator.Latency, f emulator.Faults) (*emulatorHandle, string, error) {
	key := emulatorKey()
	srv := emulator.New(emulator.Config{Latency: lat, Faults: f, APIKeys: []string{key}})
	url, err := srv.Start("127.0.0.1:0")
	if err != nil {
		return nil, "", fmt.Errorf("start emulator: %w", err)
	}
	return &emulatorHandle{URL: url, Close: srv.Close}, key, nil
}

// emulatorKey is a fresh API key for an in-process emulator.
func emulatorKey() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return "AQVNemulator" + hex.EncodeToString(b[:])
}

// shellQuote quotes a path for the printed resume command when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r == '/' || r == '.' || r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
