package cmd

import (
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/batchgpt/batchgpt/batch"
	"github.com/batchgpt/batchgpt/internal/api"
	"github.com/batchgpt/batchgpt/internal/auth"
	"github.com/batchgpt/batchgpt/internal/emulator"
	"github.com/batchgpt/batchgpt/internal/job"
	"github.com/batchgpt/batchgpt/internal/report"
)

// runConfig is everything run and resume take from their command line. parseRunFlags reads every
// flag into it and finds every usage mistake; the command then uses only this value.
type runConfig struct {
	resume bool

	input      string // run only
	checkpoint string
	output     string // run only; "" for resume
	force      bool
	// discardPending (run) drops the outstanding operations of an earlier run instead of
	// collecting them; retryFailed (resume) submits the failed rows again.
	discardPending, retryFailed bool
	dryRun                      bool
	exactTokens                 bool // --dry-run --exact-tokens: the tokenizer counts

	// settings are the request settings of a run; resume takes them from the checkpoint, all but
	// NoCache.
	settings  job.Settings
	tuning    job.Tuning
	tolerated func(rows int) int // --max-failed: the failed rows tolerated out of rows
	limits    job.LimitChange    // --max-cost, --max-total-tokens (budget.go)
	prices    job.Prices
	cache     cacheConfig

	batch batchConfig // --backend batch and its flags

	emulator        bool
	emulatorLatency emulator.Latency
	emulatorFaults  emulator.Faults
	// auth has the credential flags; the secrets themselves come from the environment when the
	// run connects.
	auth auth.Config

	quiet, verbose, noProgress bool
	// logJSON is --log-format json. It is set as soon as that flag was read, even when a later
	// flag is a mistake: that mistake is then reported in JSON too.
	logJSON          bool
	progressInterval time.Duration
	summaryJSON      string
	metricsFile      string          // --metrics-file; "" = none
	notify           *report.Webhook // --notify; nil = none
}

// cacheConfig is the result cache the flags name.
type cacheConfig struct {
	path string        // --cache; "" = the default path
	ttl  time.Duration // --cache-ttl; 0 = any age
}

// parseRunFlags reads the command line of run (resume false) or resume into a runConfig. The
// returned config is never nil: on a mistake it holds the flags read before it. A dry run checks
// every flag as the run would.
func parseRunFlags(c *cli.Context, resume bool) (*runConfig, error) {
	rc := &runConfig{resume: resume}
	// The log format first: with --log-format json every later mistake is reported in JSON.
	switch c.String("log-format") {
	case "text", "":
	case "json":
		rc.logJSON = true
	default:
		return rc, usagef("--log-format %q: want text or json", c.String("log-format"))
	}
	if resume {
		if c.NArg() != 1 {
			return rc, usagef("resume: want exactly one CHECKPOINT file, got %d arguments", c.NArg())
		}
		rc.checkpoint = c.Args().First()
		rc.retryFailed = c.Bool("retry-failed")
		rc.settings.NoCache = c.Bool("no-cache")
	} else {
		if c.NArg() != 1 {
			return rc, usagef("run: want exactly one INPUT file, got %d arguments", c.NArg())
		}
		rc.input = c.Args().First()
		rc.checkpoint, rc.output = job.DefaultPaths(rc.input)
		if v := c.String("checkpoint"); v != "" {
			rc.checkpoint = v
		}
		if v := c.String("output"); v != "" {
			rc.output = v
		}
		s, err := settingsFrom(c)
		if err != nil {
			return rc, err
		}
		rc.settings = s
		if err := batch.CheckOptions(rc.input, s.Input); err != nil {
			return rc, &UsageError{Msg: err.Error()}
		}
		rc.force, rc.discardPending, rc.dryRun = c.Bool("force"), c.Bool("discard-pending"), c.Bool("dry-run")
		if rc.exactTokens = c.Bool("exact-tokens"); rc.exactTokens && !rc.dryRun {
			return rc, usagef("--exact-tokens counts tokens for a dry run: use it with --dry-run")
		}
	}

	rc.tuning = job.DefaultTuning()
	rc.tuning.Concurrency, rc.tuning.MaxAttempts = c.Int("concurrency"), c.Int("max-attempts")
	rc.tuning.SubmitRPS, rc.tuning.SubmitPerHour = c.Float64("submit-rps"), c.Int("submit-per-hour")
	rc.tuning.PollRPS, rc.tuning.RequestTimeout = c.Float64("poll-rps"), c.Duration("request-timeout")
	rc.emulator = c.Bool("emulator")
	rc.auth = auth.Config{
		SAKeyFile: c.String("sa-key-file"), IAMEndpoint: c.String("iam-endpoint"),
		MetadataURL: c.String("metadata-url"), UseMetadata: c.Bool("metadata"), AutoMetadata: true,
	}
	rc.quiet, rc.verbose, rc.noProgress = c.Bool("quiet"), c.Bool("verbose"), c.Bool("no-progress")
	rc.progressInterval, rc.summaryJSON = c.Duration("progress-interval"), c.String("summary-json")
	rc.metricsFile = c.String("metrics-file")
	rc.cache.path = c.String("cache")

	prices, err := job.ParsePrices(c.String("price"))
	if err != nil {
		return rc, &UsageError{Msg: "--price: " + err.Error()}
	}
	rc.prices = prices
	if rc.limits, err = parseLimits(c); err != nil {
		return rc, err
	}
	// A dry run checks the whole command line too: the run it stands for must not fail on it.
	{
		if rc.tolerated, err = parseMaxFailed(c.String("max-failed")); err != nil {
			return rc, err
		}
		if rc.tuning.Concurrency <= 0 || rc.tuning.MaxAttempts <= 0 {
			return rc, usagef("--concurrency and --max-attempts must be positive")
		}
		if rc.progressInterval < 0 {
			return rc, usagef("--progress-interval must not be negative (0 turns the progress lines off)")
		}
		if rc.tuning.SubmitRPS < 0 || rc.tuning.PollRPS < 0 || rc.tuning.SubmitPerHour < 0 {
			return rc, usagef("--submit-rps, --submit-per-hour and --poll-rps must not be negative")
		}
		if !rc.emulator {
			// A signed JWT crosses to the IAM endpoint: the check of the API endpoints applies.
			if _, err := api.CheckEndpoint("--iam-endpoint", rc.auth.IAMEndpoint); err != nil {
				return rc, &UsageError{Msg: err.Error()}
			}
		}
	}
	if v := c.String("notify"); v != "" {
		if rc.notify, err = report.NewWebhook(v); err != nil {
			return rc, &UsageError{Msg: err.Error()}
		}
	}
	if v := c.String("cache-ttl"); v != "" {
		ttl, err := ParseAge(v)
		if err != nil {
			return rc, usagef("--cache-ttl %q: %v", v, err)
		}
		rc.cache.ttl = ttl
	}
	if err := parseBatchFlags(c, rc); err != nil {
		return rc, err
	}
	if rc.emulator {
		if rc.emulatorLatency, err = emulator.ParseLatency(c.String("emulator-latency")); err != nil {
			return rc, usagef("--emulator-latency: %v", err)
		}
		if faults := c.String("emulator-faults"); faults != "" && !rc.batch.on {
			if rc.emulatorFaults, err = emulator.ParseFaults(faults); err != nil {
				return rc, usagef("--emulator-faults: %v", err)
			}
		}
	}
	return rc, nil
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
