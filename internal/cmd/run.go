package cmd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/batchgpt/batchgpt/batch"
	"github.com/batchgpt/batchgpt/internal/api"
	"github.com/batchgpt/batchgpt/internal/auth"
	"github.com/batchgpt/batchgpt/internal/emulator"
	"github.com/batchgpt/batchgpt/internal/job"
	"github.com/batchgpt/batchgpt/store"
)

const (
	defaultEndpoint           = "https://llm.api.cloud.yandex.net"
	defaultOperationsEndpoint = "https://operation.api.cloud.yandex.net"
	demoFolder                = "b1gemulatorfolder000"
)

func requestFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "folder", EnvVars: []string{"YC_FOLDER_ID"}, Usage: "folder `ID` for model URIs built from short names (with --emulator a demo folder is used when unset)"},
		&cli.StringFlag{Name: "model", Value: "yandexgpt-lite", Usage: "model: a short `NAME` (yandexgpt-lite, yandexgpt, yandexgpt/rc, llama-lite, ...) or a full gpt:// URI"},
		&cli.StringFlag{Name: "system", Usage: "system message for rows that have none"},
		&cli.Float64Flag{Name: "temperature", Usage: "sampling temperature 0..1 (API default 0.3)"},
		&cli.Int64Flag{Name: "max-tokens", Usage: "maximum tokens per answer"},
		&cli.StringFlag{Name: "reasoning-mode", Usage: "reasoningOptions.mode: DISABLED or ENABLED_HIDDEN"},
		&cli.StringFlag{Name: "format", Usage: "input `FORMAT`: jsonl or csv (default: by file extension)"},
		&cli.StringFlag{Name: "prompt-column", Usage: "CSV: column holding the prompt (default \"prompt\")"},
		&cli.StringFlag{Name: "id-column", Usage: "CSV: column holding the row id (default \"id\"; the row number when the file has no such column)"},
		&cli.StringFlag{Name: "system-column", Usage: "CSV: column holding a per-row system message"},
		&cli.StringFlag{Name: "template", Usage: "CSV: Go text/template over the row's columns that builds the prompt, e.g. 'Summarize: {{.body}}'"},
		&cli.BoolFlag{Name: "no-data-logging", Usage: "ask the API not to log requests (x-data-logging-enabled: false)"},
		&cli.StringFlag{Name: "endpoint", EnvVars: []string{"BATCHGPT_ENDPOINT"}, Value: defaultEndpoint, Usage: "API `URL` for completionAsync"},
		&cli.StringFlag{Name: "operations-endpoint", EnvVars: []string{"BATCHGPT_OPERATIONS_ENDPOINT"}, Value: defaultOperationsEndpoint, Usage: "API `URL` for operations"},
	}
}

// cacheFlags choose the result cache (run and resume).
func cacheFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "cache", EnvVars: []string{"BATCHGPT_CACHE"}, Usage: "result cache `FILE` (default: $XDG_CACHE_HOME/batchgpt/cache.db, else ~/.cache/batchgpt/cache.db)"},
		&cli.BoolFlag{Name: "no-cache", Usage: "neither read nor write the result cache (kept by resume)"},
		&cli.StringFlag{Name: "cache-ttl", Usage: "ignore cache entries older than `AGE` (e.g. 7d, 12h)"},
	}
}

func tuningFlags() []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "concurrency", Value: 16, Usage: "submissions in flight at once"},
		&cli.Float64Flag{Name: "submit-rps", Value: 10, Usage: "submissions per second for the whole process (the folder quota; 0 = unlimited)"},
		&cli.IntFlag{Name: "submit-per-hour", Value: 5000, Usage: "submissions in any sliding hour (the folder quota; 0 = unlimited)"},
		&cli.Float64Flag{Name: "poll-rps", Value: 50, Usage: "operation polls per second (the folder quota; 0 = unlimited)"},
		&cli.IntFlag{Name: "max-attempts", Value: 8, Usage: "tries of a call on transient errors, and submissions of a row whose operation failed transiently"},
		&cli.DurationFlag{Name: "request-timeout", Value: time.Minute, Usage: "deadline of every HTTP request"},
		&cli.StringFlag{Name: "max-failed", Value: "0", Usage: "failed rows tolerated before the exit code says so (exit 3): a count `N` or a percentage such as 0.5%"},
	}
}

func authFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "sa-key-file", EnvVars: []string{"YC_SERVICE_ACCOUNT_KEY_FILE"}, Usage: "service account authorized-key JSON `FILE` (IAM tokens are made and refreshed from it)"},
		&cli.StringFlag{Name: "iam-endpoint", EnvVars: []string{"BATCHGPT_IAM_ENDPOINT"}, Value: auth.DefaultIAMEndpoint, Usage: "IAM token exchange `URL`"},
		&cli.BoolFlag{Name: "metadata", Usage: "take IAM tokens from the VM metadata service (auto-detected when nothing else is set)"},
		&cli.StringFlag{Name: "metadata-url", EnvVars: []string{"BATCHGPT_METADATA_URL"}, Value: auth.DefaultMetadataURL, Usage: "VM metadata service `URL`"},
	}
}

func outputFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "emulator", Usage: "start the built-in API emulator in this process and use it (no credentials needed)"},
		&cli.StringFlag{Name: "emulator-latency", Value: "lognormal:400ms:0.6:5s", Usage: "with --emulator: operation latency `SPEC` (see batchgpt emulator --help)"},
		&cli.StringFlag{Name: "emulator-faults", Usage: "with --emulator: injected `FAULTS`, e.g. 429=0.05,500=0.02,reset=0.01"},
		&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print only errors"},
		&cli.BoolFlag{Name: "no-progress", Usage: "no progress bars on a terminal (log lines instead)"},
		&cli.DurationFlag{Name: "progress-interval", Value: 30 * time.Second, Usage: "when not on a terminal: log a progress line this often (0: none)"},
		&cli.StringFlag{Name: "price", Usage: "async price per 1,000 tokens by model, for cost estimates: `MODEL=PRICE,...` (defaults: " + job.DefaultPrices().String() + " " + job.DefaultCurrency + ")"},
		&cli.StringFlag{Name: "log-format", Value: "text", Usage: "log format: text or json"},
		&cli.BoolFlag{Name: "verbose", Usage: "log every retry"},
		&cli.StringFlag{Name: "summary-json", Usage: "also write the final summary as JSON to `PATH`"},
	}
}

const credentialsHelp = `CREDENTIALS (first that is set wins):
   1. --sa-key-file / YC_SERVICE_ACCOUNT_KEY_FILE  service account authorized key (IAM tokens refreshed automatically)
   2. YC_API_KEY                                   API key (Authorization: Api-Key)
   3. YC_IAM_TOKEN                                 IAM token, e.g. yc iam create-token (lives at most 12 h; not refreshed;
                                                   sent with x-folder-id: the folder of each request's model)
   4. --metadata, or auto-detected                 the VM's service account through the metadata service
   Secrets are read from the environment or a file only, never from flags, and never written anywhere.`

func (e *env) runCommand() *cli.Command {
	flags := append(append(append(append([]cli.Flag{
		&cli.StringFlag{Name: "checkpoint", Usage: "checkpoint `PATH` (default: <input without extension>.checkpoint.json)"},
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "results `PATH`; .csv writes CSV (default: <input without extension>.results.jsonl)"},
		&cli.BoolFlag{Name: "force", Usage: "start over even if the checkpoint's run is unfinished (its outstanding operations are collected first, then it is archived)"},
		&cli.BoolFlag{Name: "discard-pending", Usage: "when an earlier run at the checkpoint's path is retired: drop its outstanding operations instead of collecting them"},
		&cli.StringFlag{Name: "order", Value: "completion", Usage: "result `ORDER`: completion (as rows resolve) or input (rewritten in input order at the end)"},
		&cli.BoolFlag{Name: "dry-run", Usage: "validate the input, count rows, the rows the cache answers and the duplicates; estimate tokens, cost and time under the quota; send nothing"},
		&cli.BoolFlag{Name: "refresh", Usage: "submit every row even if the cache has its answer, and store the new answers (e.g. to sample again with temperature > 0)"},
		&cli.BoolFlag{Name: "no-dedup", Usage: "submit every row, even one whose request an earlier row of the file sends too"},
		&cli.BoolFlag{Name: "accept-filtered", Usage: "keep answers stopped by the API's content filter as succeeded rows (by default they fail with error kind content-filter; kept by resume)"},
	}, requestFlags()...), append(tuningFlags(), cacheFlags()...)...), authFlags()...), outputFlags()...)
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
		Flags: flags,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef("run: want exactly one INPUT file, got %d arguments", c.NArg())
			}
			input := c.Args().First()
			checkpoint, results := job.DefaultPaths(input)
			if v := c.String("checkpoint"); v != "" {
				checkpoint = v
			}
			if v := c.String("output"); v != "" {
				results = v
			}
			s, err := settingsFrom(c)
			if err != nil {
				return err
			}
			if err := batch.CheckOptions(input, s.Input); err != nil {
				return &UsageError{Msg: err.Error()}
			}
			if c.Bool("dry-run") {
				return e.dryRun(c, input, s)
			}
			return e.execute(c, func(cfg *job.Config) {
				cfg.Input, cfg.Checkpoint, cfg.Output, cfg.Force = input, checkpoint, results, c.Bool("force")
				cfg.DiscardPending = c.Bool("discard-pending")
				cfg.Settings = s
			}, false)
		},
	}
}

func (e *env) resumeCommand() *cli.Command {
	flags := append(append(append([]cli.Flag{
		&cli.BoolFlag{Name: "retry-failed", Usage: "submit again the rows that failed (e.g. after fixing a quota or a permission); the rest is kept"},
	}, append(tuningFlags(), cacheFlags()...)...), authFlags()...), outputFlags()...)
	return &cli.Command{
		Name:      "resume",
		Usage:     "continue an interrupted run from its CHECKPOINT",
		ArgsUsage: "CHECKPOINT",
		Description: "Submits rows never submitted, polls operations still pending and writes results not yet written.\n" +
			"A row whose operation id is in the checkpoint is never submitted again. Request settings come from the\n" +
			"checkpoint; only tuning (concurrency, rates, attempts) and credentials may change.\n" +
			"Examples:\n   batchgpt resume prompts.checkpoint.json\n   batchgpt resume --retry-failed prompts.checkpoint.json\n\n" + credentialsHelp + "\n\n" + exitCodesHelp,
		Flags: flags,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef("resume: want exactly one CHECKPOINT file, got %d arguments", c.NArg())
			}
			return e.execute(c, func(cfg *job.Config) {
				cfg.Checkpoint = c.Args().First()
				cfg.RetryFailed = c.Bool("retry-failed")
			}, true)
		},
	}
}

// settingsFrom reads the request settings of a run from its flags.
func settingsFrom(c *cli.Context) (job.Settings, error) {
	opts := batch.Options{
		Format: c.String("format"), Folder: c.String("folder"), Model: c.String("model"), System: c.String("system"),
		ReasoningMode: c.String("reasoning-mode"),
		PromptColumn:  c.String("prompt-column"), IDColumn: c.String("id-column"), SystemColumn: c.String("system-column"),
		Template: c.String("template"),
	}
	if c.IsSet("temperature") {
		t := c.Float64("temperature")
		if t < 0 || t > 1 {
			return job.Settings{}, usagef("--temperature %v: want a number from 0 to 1", t)
		}
		opts.Temperature = &t
	}
	if c.IsSet("max-tokens") {
		m := c.Int64("max-tokens")
		if m <= 0 {
			return job.Settings{}, usagef("--max-tokens %d: want a positive number", m)
		}
		opts.MaxTokens = &m
	}
	if c.Bool("emulator") && opts.Folder == "" {
		opts.Folder = demoFolder
	}
	s := job.Settings{Input: opts, Endpoint: c.String("endpoint"), OperationsEndpoint: c.String("operations-endpoint"),
		NoDataLogging: c.Bool("no-data-logging"), Emulator: c.Bool("emulator"),
		NoDedup: c.Bool("no-dedup"), NoCache: c.Bool("no-cache"), Refresh: c.Bool("refresh"), AcceptFiltered: c.Bool("accept-filtered")}
	switch c.String("order") {
	case "completion":
	case job.OrderInput:
		s.Order = job.OrderInput
	default:
		return s, usagef("--order %q: want completion or input", c.String("order"))
	}
	if !s.Emulator {
		for name, v := range map[string]string{"--endpoint": s.Endpoint, "--operations-endpoint": s.OperationsEndpoint} {
			if _, err := api.CheckEndpoint(name, v); err != nil {
				return s, &UsageError{Msg: err.Error()}
			}
		}
	}
	return s, nil
}

// execute runs or resumes a job with the tuning, credentials and output flags of c.
func (e *env) execute(c *cli.Context, fill func(*job.Config), resume bool) error {
	prices, err := job.ParsePrices(c.String("price"))
	if err != nil {
		return &UsageError{Msg: "--price: " + err.Error()}
	}
	tolerated, err := parseMaxFailed(c.String("max-failed"))
	if err != nil {
		return err
	}
	prog := e.newProgress(c)
	logger, err := e.logger(c, prog.logOut)
	if err != nil {
		return err
	}
	if c.Int("concurrency") <= 0 || c.Int("max-attempts") <= 0 {
		return usagef("--concurrency and --max-attempts must be positive")
	}
	if c.Duration("progress-interval") < 0 {
		return usagef("--progress-interval must not be negative (0 turns the progress lines off)")
	}
	if c.Float64("submit-rps") < 0 || c.Float64("poll-rps") < 0 || c.Int("submit-per-hour") < 0 {
		return usagef("--submit-rps, --submit-per-hour and --poll-rps must not be negative")
	}
	if !c.Bool("emulator") {
		// A signed JWT crosses to the IAM endpoint: the check of the API endpoints applies.
		if _, err := api.CheckEndpoint("--iam-endpoint", c.String("iam-endpoint")); err != nil {
			return &UsageError{Msg: err.Error()}
		}
	}
	cfg := job.Config{
		Tuning: job.Tuning{
			Concurrency: c.Int("concurrency"), SubmitRPS: c.Float64("submit-rps"), SubmitPerHour: c.Int("submit-per-hour"),
			PollRPS: c.Float64("poll-rps"), MaxAttempts: c.Int("max-attempts"), RequestTimeout: c.Duration("request-timeout"),
		},
		HTTPClient: &http.Client{Transport: api.NewTransport()},
		Logger:     logger,
		Kill:       e.kill,
	}
	fill(&cfg)
	if resume {
		cfg.Settings.NoCache = c.Bool("no-cache")
	}
	ctx := c.Context
	rc, err := e.openCache(c, logger, cfg.Settings.NoCache, false)
	if err != nil {
		return err
	}
	defer rc.close()
	if rc.cache != nil {
		cfg.Cache, cfg.CacheTTL = rc.cache, rc.ttl
	}

	if c.Bool("emulator") {
		srv, key, err := startEmulator(c.String("emulator-latency"), c.String("emulator-faults"))
		if err != nil {
			return err
		}
		defer srv.Close()
		cfg.Settings.Endpoint, cfg.Settings.OperationsEndpoint = srv.URL, srv.URL
		cfg.Credentials = auth.APIKey(key)
		logger.Info("using the built-in emulator", "url", srv.URL)
	} else {
		cfg.Connect = func(ctx context.Context) (api.Credentials, error) {
			src, desc, err := auth.FromConfig(ctx, auth.Config{
				APIKey: os.Getenv("YC_API_KEY"), IAMToken: os.Getenv("YC_IAM_TOKEN"),
				SAKeyFile: c.String("sa-key-file"), IAMEndpoint: c.String("iam-endpoint"),
				MetadataURL: c.String("metadata-url"), UseMetadata: c.Bool("metadata"), AutoMetadata: true,
			}, &http.Client{Transport: api.NewTransport(), Timeout: 30 * time.Second})
			if err != nil {
				if errors.Is(err, auth.ErrNoCredentials) {
					return nil, usagef("%v (or use --emulator to try batchgpt against its built-in emulator)", err)
				}
				return nil, fmt.Errorf("%w: %w", job.ErrAuth, err)
			}
			logger.Info("credentials", "using", desc)
			return src, nil
		}
	}

	j := job.New(cfg)
	prog.start(c, j, logger)
	var sum job.Summary
	if resume {
		sum, err = j.Resume(ctx)
	} else {
		sum, err = j.Run(ctx)
	}
	prog.stop()
	if price, ok := prices.For(j.ModelURI()); ok {
		sum.Currency = job.DefaultCurrency
		sum.EstimatedCost = job.Cost(sum.InputTokens+sum.OutputTokens, price)
		sum.SavedCost = job.Cost(sum.SavedTokens, price)
	}
	if rc.cache != nil {
		sum.Cache = rc.path
	}
	if sum.CacheProblem == "" {
		sum.CacheProblem = rc.problem
	}
	if sum.Rows > 0 && !c.Bool("quiet") {
		e.printSummary(sum)
	}
	if p := c.String("summary-json"); p != "" && sum.Rows > 0 {
		if werr := writeSummaryJSON(p, sum); werr != nil && err == nil {
			err = werr
		}
	}
	if err != nil {
		var ve *batch.ValidationError
		switch {
		case errors.As(err, &ve):
			return err
		case errors.Is(err, store.ErrExists):
			return &UsageError{Msg: err.Error()}
		case sum.Rows > 0 && (errors.Is(err, job.ErrInterrupted) || errors.Is(err, job.ErrAuth) || sum.Pending > 0):
			msg, resumeCmd := auth.Redact(err.Error()), "batchgpt resume "+shellQuote(cfg.Checkpoint)
			e.console.Error(msg+"; every operation id is saved",
				fmt.Sprintf("batchgpt: %s\nbatchgpt: every operation id is saved; to continue run:\n    %s\n", msg, resumeCmd),
				"resume", resumeCmd)
			return errors.Join(err, ErrReported)
		}
		return err
	}
	if sum.Failed > tolerated(sum.Rows) {
		return &FailedRowsError{Failed: sum.Failed, Rows: sum.Rows}
	}
	return nil
}

type emulatorHandle struct {
	URL   string
	Close func() error
}

// startEmulator starts an in-process emulator on a loopback port with a fresh API key.
func startEmulator(latency, faults string) (*emulatorHandle, string, error) {
	lat, err := emulator.ParseLatency(latency)
	if err != nil {
		return nil, "", usagef("--emulator-latency: %v", err)
	}
	var f emulator.Faults
	if faults != "" {
		if f, err = emulator.ParseFaults(faults); err != nil {
			return nil, "", usagef("--emulator-faults: %v", err)
		}
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	key := "AQVNemulator" + hex.EncodeToString(b[:])
	srv := emulator.New(emulator.Config{Latency: lat, Faults: f, APIKeys: []string{key}})
	url, err := srv.Start("127.0.0.1:0")
	if err != nil {
		return nil, "", fmt.Errorf("start emulator: %w", err)
	}
	return &emulatorHandle{URL: url, Close: srv.Close}, key, nil
}

func (e *env) logger(c *cli.Context, out io.Writer) (*slog.Logger, error) {
	level := slog.LevelInfo
	if c.Bool("quiet") {
		level = slog.LevelError
	}
	if c.Bool("verbose") {
		level = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: redactAttr}
	switch c.String("log-format") {
	case "text", "":
		return slog.New(slog.NewTextHandler(out, opts)), nil
	case "json":
		e.console.useJSON(out)
		return slog.New(slog.NewJSONHandler(out, opts)), nil
	}
	return nil, usagef("--log-format %q: want text or json", c.String("log-format"))
}

// redactAttr keeps secrets out of every log line, whatever an error message carried.
func redactAttr(_ []string, a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindString:
		return slog.String(a.Key, auth.Redact(a.Value.String()))
	case slog.KindAny:
		if err, ok := a.Value.Any().(error); ok {
			return slog.String(a.Key, auth.Redact(err.Error()))
		}
	}
	return a
}

func (e *env) printSummary(s job.Summary) {
	if l := e.console.jsonLogger(); l != nil {
		l.Info("summary", "summary", s)
		return
	}
	w := e.stderr
	if s.NothingToDo {
		fmt.Fprintf(w, "nothing to do: the run of this input is complete (rows: %d  succeeded: %d  failed: %d)\nresults: %s\ncheckpoint: %s\n",
			s.Rows, s.Succeeded, s.Failed, s.Results, s.Checkpoint)
		return
	}
	fmt.Fprintf(w, "rows: %d  succeeded: %d  failed: %d  pending: %d\n", s.Rows, s.Succeeded, s.Failed, s.Pending)
	if len(s.FailedByKind) > 0 {
		parts := make([]string, 0, len(s.FailedByKind))
		for k, v := range s.FailedByKind {
			parts = append(parts, k+"="+strconv.Itoa(v))
		}
		fmt.Fprintf(w, "failed by kind: %s\n", strings.Join(parts, " "))
	}
	if s.ContentFiltered > 0 || s.Truncated > 0 {
		fmt.Fprintf(w, "answers: %d stopped by the content filter, %d truncated at max tokens\n", s.ContentFiltered, s.Truncated)
	}
	fmt.Fprintf(w, "answered from cache: %d (no submission", s.CacheHits)
	if s.Currency != "" && s.SavedTokens > 0 {
		fmt.Fprintf(w, "; ≈ %.2f %s not spent", s.SavedCost, s.Currency)
	}
	fmt.Fprintf(w, ")  deduplicated: %d  submitted: %d\n", s.Deduplicated, s.Submissions)
	fmt.Fprintf(w, "this process: %d submissions, %d resubmitted, %d in doubt, %d polls, %d throttled (429)\n",
		s.Submissions, s.Resubmitted, s.InDoubt, s.Polls, s.Throttled)
	fmt.Fprintf(w, "tokens: %d in, %d out", s.InputTokens, s.OutputTokens)
	if s.Currency != "" {
		fmt.Fprintf(w, "  estimated cost: %.2f %s (async prices; see --price)", s.EstimatedCost, s.Currency)
	}
	fmt.Fprintf(w, "  elapsed: %s\n", s.Elapsed.Round(time.Millisecond))
	fmt.Fprintf(w, "results: %s\ncheckpoint: %s\n", s.Results, s.Checkpoint)
	switch {
	case s.CacheProblem != "":
		fmt.Fprintf(w, "cache: not used: %s\n", s.CacheProblem)
	case s.Cache != "":
		fmt.Fprintf(w, "cache: %s\n", s.Cache)
	}
}

func writeSummaryJSON(path string, s job.Summary) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write summary: %w", err)
	}
	return nil
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

// dryRun validates the input and prints what a run would cost and take, without credentials and
// without sending anything.
func (e *env) dryRun(c *cli.Context, input string, s job.Settings) error {
	prices, err := job.ParsePrices(c.String("price"))
	if err != nil {
		return &UsageError{Msg: "--price: " + err.Error()}
	}
	logger := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn, ReplaceAttr: redactAttr}))
	rc, err := e.openCache(c, logger, s.NoCache, true)
	if err != nil {
		return err
	}
	defer rc.close()
	var rcache job.ResultCache
	if rc.cache != nil {
		rcache = rc.cache
	}
	pl, err := job.DryRun(c.Context, input, s, rcache, rc.ttl, 50)
	if err != nil {
		return err
	}
	sum := pl.Input
	w := e.stdout
	fmt.Fprintf(w, "input:            %s (%s, %d bytes)\n", input, sum.Format, sum.Size)
	fmt.Fprintf(w, "rows:             %d, all valid\n", sum.Rows)
	switch {
	case s.NoDedup:
		fmt.Fprintf(w, "duplicates:       not looked for (--no-dedup)\n")
	default:
		fmt.Fprintf(w, "duplicates:       %d rows send the same request as an earlier row (not submitted)\n", pl.Duplicates)
	}
	switch {
	case s.NoCache:
		fmt.Fprintf(w, "cache:            off (--no-cache)\n")
	case s.Refresh:
		fmt.Fprintf(w, "cache:            not read (--refresh)\n")
	case pl.CacheProblem != "" || rc.problem != "":
		fmt.Fprintf(w, "cache:            not used: %s%s\n", rc.problem, pl.CacheProblem)
	default:
		fmt.Fprintf(w, "cache:            %d rows answered by %s (not submitted)\n", pl.CacheHits, rc.path)
	}
	fmt.Fprintf(w, "to submit:        %d rows\n", pl.ToSubmit)
	fmt.Fprintf(w, "input tokens:     ~%d for the rows to submit (estimate: characters / 4; Russian text usually needs more)\n", pl.SubmitTokens)
	uri, _ := batch.ModelURI(s.Input.Folder, s.Input.Model)
	if price, ok := prices.For(uri); ok {
		fmt.Fprintf(w, "input cost:       ~%.2f %s at %g per 1,000 tokens (async); answers are billed too", job.Cost(pl.SubmitTokens, price), job.DefaultCurrency, price)
		if s.Input.MaxTokens != nil {
			fmt.Fprintf(w, ": at most %.2f %s more for %d tokens per answer", job.Cost(int64(pl.ToSubmit)**s.Input.MaxTokens, price), job.DefaultCurrency, *s.Input.MaxTokens)
		}
		fmt.Fprintln(w)
	}
	eta := job.SubmitETA(pl.ToSubmit, 0, c.Float64("submit-rps"), c.Int("submit-per-hour"))
	fmt.Fprintf(w, "submission time:  %s at %g/s and %d/hour, plus the operations' own time (minutes to hours)\n",
		eta.Round(time.Second), c.Float64("submit-rps"), c.Int("submit-per-hour"))
	fmt.Fprintln(w, "nothing was sent (--dry-run)")
	return nil
}

// parseMaxFailed reads --max-failed: a count ("10") or a share of the rows ("0.5%").
func parseMaxFailed(v string) (func(rows int) int, error) {
	v = strings.TrimSpace(v)
	if p, ok := strings.CutSuffix(v, "%"); ok {
		f, err := strconv.ParseFloat(p, 64)
		if err != nil || f < 0 || f > 100 {
			return nil, usagef("--max-failed %q: want a count or a percentage from 0%% to 100%%", v)
		}
		return func(rows int) int { return int(float64(rows) * f / 100) }, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return nil, usagef("--max-failed %q: want a count or a percentage such as 1%%", v)
	}
	return func(int) int { return n }, nil
}
