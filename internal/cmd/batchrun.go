package cmd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/batchgpt/batchgpt/internal/auth"
	"github.com/batchgpt/batchgpt/internal/batchapi"
	"github.com/batchgpt/batchgpt/internal/batchjob"
	"github.com/batchgpt/batchgpt/internal/emulator"
	"github.com/batchgpt/batchgpt/internal/emulator/batchmode"
	"github.com/batchgpt/batchgpt/internal/job"
	"github.com/batchgpt/batchgpt/internal/version"
	"github.com/batchgpt/batchgpt/store"
)

// Backends of run --backend.
const (
	backendAsync = "async"
	backendBatch = batchjob.Backend
)

// batchFlags choose the batch backend and tune it (run; resume takes all but --backend).
func batchFlags(run bool) []cli.Flag {
	fs := []cli.Flag{
		&cli.StringFlag{Name: "batch-endpoint", EnvVars: []string{"BATCHGPT_BATCH_ENDPOINT"}, Value: batchapi.DefaultEndpoint,
			Usage: "with --backend batch: `ADDRESS` (host:port) of AI Studio's gRPC services (TLS; plaintext to a loopback address, an emulator)"},
		&cli.BoolFlag{Name: "cleanup", Usage: "with --backend batch: delete the run's datasets and its task once every result is written"},
		&cli.DurationFlag{Name: "batch-poll", Value: batchjob.DefaultPollEvery, Usage: "with --backend batch: how often the task is described while it runs"},
	}
	if run {
		fs = append([]cli.Flag{&cli.StringFlag{Name: "backend", Value: backendAsync,
			Usage: "`BACKEND`: async (one completionAsync request per row) or batch (one dataset and one batch task of AI Studio)"}}, fs...)
	}
	return fs
}

// batchConfig is what the batch flags set.
type batchConfig struct {
	on       bool // --backend batch, or a resumed checkpoint of the batch backend
	endpoint string
	cleanup  bool
	poll     time.Duration
	faults   batchmode.Faults // --emulator-faults with --backend batch
}

// parseBatchFlags reads the batch flags into rc.
func parseBatchFlags(c *cli.Context, rc *runConfig) error {
	b := &rc.batch
	switch v := c.String("backend"); v {
	case "", backendAsync:
	case backendBatch:
		b.on = true
	default:
		return usagef("--backend %q: want async or batch", v)
	}
	b.endpoint, b.cleanup, b.poll = c.String("batch-endpoint"), c.Bool("cleanup"), c.Duration("batch-poll")
	if b.poll <= 0 {
		return usagef("--batch-poll must be positive")
	}
	if !b.on || rc.resume {
		return nil
	}
	if rc.settings.Input.Folder == "" {
		return usagef("--backend batch: --folder (or YC_FOLDER_ID) names the folder the datasets are created in")
	}
	if f := c.String("emulator-faults"); f != "" && rc.emulator {
		var err error
		if b.faults, err = batchmode.ParseFaults(f); err != nil {
			return usagef("--emulator-faults: %v", err)
		}
	}
	return nil
}

// isBatchCheckpoint reports whether the checkpoint at path is a run of the batch backend.
func isBatchCheckpoint(path string) bool {
	h, err := store.LoadHeader(path)
	return err == nil && batchjob.IsBatch(h)
}

// executeBatch runs or resumes a batch-backend job and reports how it ended, as execute does.
func (e *env) executeBatch(ctx context.Context, rc *runConfig) error {
	prog := e.newProgress(rc)
	logger := e.logger(rc, prog.logOut)
	build := version.Get()
	logger.Info("batchgpt starting", append(build.LogAttrs(), "backend", backendBatch)...)
	sum, err := e.runBatch(ctx, rc, logger, prog)
	_, err = writeSummary(rc, sum, build, err)
	return err
}

// batchConfigOf is the engine's configuration for rc.
func (e *env) batchConfigOf(rc *runConfig, logger *slog.Logger) batchjob.Config {
	s := batchjob.Settings{Settings: rc.settings, Cleanup: rc.batch.cleanup}
	s.Endpoint, s.OperationsEndpoint = rc.batch.endpoint, ""
	return batchjob.Config{Input: rc.input, Checkpoint: rc.checkpoint, Output: rc.output, Force: rc.force,
		Settings: s, HTTPClient: &http.Client{}, PollEvery: rc.batch.poll, Logger: logger, Insecure: loopbackAddr(s.Endpoint)}
}

// runBatch builds the engine rc describes and runs it.
func (e *env) runBatch(ctx context.Context, rc *runConfig, logger *slog.Logger, prog *progress) (job.Summary, error) {
	cfg := e.batchConfigOf(rc, logger)
	oc := e.openCache(rc.cache, logger, rc.settings.NoCache, false)
	defer oc.close()
	if oc.cache != nil {
		cfg.Cache, cfg.CacheTTL = oc.cache, oc.ttl
	}
	if rc.emulator {
		srv, target, key, err := startBatchEmulator(rc.batch.faults)
		if err != nil {
			return job.Summary{}, err
		}
		defer srv.Close()
		cfg.Settings.Endpoint, cfg.Settings.Emulator, cfg.Insecure = target, true, true
		cfg.Credentials = auth.APIKey(key)
		logger.Info("using the built-in batch-mode emulator", "grpc", target)
	} else {
		connect := connector(rc.auth, logger)
		cfg.Connect = func(ctx context.Context) (auth.Source, error) { return connect(ctx) }
	}
	eng := batchjob.New(cfg)
	// Rows resolve in bursts here (the cache's answers first, the task's at its end); how the
	// task moves between them is logged as its status and batches change.
	prog.start(rc, eng, logger, nil)
	var sum job.Summary
	var err error
	if rc.resume {
		sum, err = eng.Resume(ctx)
	} else {
		sum, err = eng.Run(ctx)
	}
	prog.stop()
	err = e.ended(rc, &sum, oc, cfg.Checkpoint, "every step of the batch run", err)
	return sum, err
}

// startBatchEmulator starts an in-process batch-mode emulator on loopback with a fresh API key.
func startBatchEmulator(f batchmode.Faults) (srv *batchmode.Server, target, key string, err error) {
	key = emulatorKey()
	srv = batchmode.New(batchmode.Config{Faults: f, Authorize: emulator.New(emulator.Config{APIKeys: []string{key}}).Authorize})
	target, _, err = srv.Start("127.0.0.1:0", "127.0.0.1:0")
	if err != nil {
		return nil, "", "", fmt.Errorf("start batch-mode emulator: %w", err)
	}
	return srv, target, key, nil
}

// dryRunBatch prints what a batch run would upload. Batch prices are not in docs/api.md: the
// cost is unknown, and said so.
func (e *env) dryRunBatch(ctx context.Context, rc *runConfig) error {
	logger := e.logger(rc, e.stderr)
	cfg := e.batchConfigOf(rc, logger)
	if rc.emulator {
		cfg.Settings.Emulator = true
	}
	oc := e.openCache(rc.cache, logger, rc.settings.NoCache, true)
	defer oc.close()
	if oc.cache != nil {
		cfg.Cache, cfg.CacheTTL = oc.cache, oc.ttl
	}
	p, err := batchjob.DryRun(ctx, cfg)
	if err != nil {
		return err
	}
	w := e.stdout
	fmt.Fprintf(w, "backend:    batch (one dataset, one task of %s)\n", p.Model)
	fmt.Fprintf(w, "rows:       %d\ncached:     %d (answered from the result cache, not uploaded)\n", p.Rows, p.Cached)
	fmt.Fprintf(w, "duplicates: %d (the same request as an earlier row: uploaded once)\n", p.Duplicates)
	fmt.Fprintf(w, "upload:     %d rows, %d bytes\n", p.Upload, p.Bytes)
	fmt.Fprintln(w, "cost:       unknown (batch-mode prices are not documented in docs/api.md)")
	return nil
}

// statusBatch adds the batch steps to status: the datasets, the task and its progress as last
// journaled.
func statusBatch(path string) (*batchjob.Status, error) {
	st, err := store.Load(path)
	if err != nil {
		return nil, err
	}
	if !batchjob.IsBatch(st.Header) {
		return nil, nil
	}
	s, err := batchjob.StatusOf(st)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", path, err)
	}
	return &s, nil
}

// cancelBatch cancels a batch run's task, then journals it.
func (e *env) cancelBatch(ctx context.Context, rc *runConfig, logger *slog.Logger) error {
	connect := connector(rc.auth, logger)
	dial := func(s batchjob.Settings) (*batchapi.Client, error) {
		if s.Emulator {
			return nil, fmt.Errorf("checkpoint %s was made against the built-in emulator, which stopped with its run: nothing to cancel", rc.checkpoint)
		}
		creds, err := connect(ctx)
		if err != nil {
			return nil, err
		}
		return batchapi.Dial(ctx, batchapi.Config{Endpoint: s.Endpoint, Insecure: loopbackAddr(s.Endpoint), Credentials: creds,
			FolderID: s.Input.Folder, Logger: logger})
	}
	task, err := batchjob.Cancel(ctx, rc.checkpoint, dial)
	if errors.Is(err, batchjob.ErrRunning) {
		return fmt.Errorf("cancel: %w", err)
	}
	if err != nil {
		return err
	}
	if task == "" {
		fmt.Fprintln(e.stdout, "no batch task was started: none will be; resume fails the rows still open as cancelled")
		return nil
	}
	fmt.Fprintf(e.stdout, "cancelled batch task %s; resume writes its rows as failed with error kind cancelled\n", task)
	return nil
}
