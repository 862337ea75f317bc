package cmd

import (
	"slices"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/batchgpt/batchgpt/internal/auth"
	"github.com/batchgpt/batchgpt/internal/job"
)

const (
	defaultEndpoint           = "https://llm.api.cloud.yandex.net"
	defaultOperationsEndpoint = "https://operation.api.cloud.yandex.net"
	demoFolder                = "b1gemulatorfolder000"
)

// runFlags are the flags of run, in the order --help lists them.
func runFlags() []cli.Flag {
	return slices.Concat([]cli.Flag{
		&cli.StringFlag{Name: "checkpoint", Usage: "checkpoint `PATH` (default: <input without extension>.checkpoint.json)"},
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "results `PATH`; .csv writes CSV (default: <input without extension>.results.jsonl)"},
		&cli.BoolFlag{Name: "force", Usage: "start over even if the checkpoint's run is unfinished (its outstanding operations are collected first, then it is archived)"},
		&cli.BoolFlag{Name: "discard-pending", Usage: "when an earlier run at the checkpoint's path is retired: drop its outstanding operations instead of collecting them"},
		&cli.StringFlag{Name: "order", Value: "completion", Usage: "result `ORDER`: completion (as rows resolve) or input (rewritten in input order at the end)"},
		&cli.BoolFlag{Name: "dry-run", Usage: "validate the input, count rows, the rows the cache answers and the duplicates; estimate tokens, cost and time under the quota; send nothing"},
		&cli.BoolFlag{Name: "exact-tokens", Usage: "with --dry-run: count the input tokens with the API's free tokenizer (needs credentials; submits nothing) instead of estimating them"},
		&cli.BoolFlag{Name: "refresh", Usage: "submit every row even if the cache has its answer, and store the new answers (e.g. to sample again with temperature > 0)"},
		&cli.BoolFlag{Name: "no-dedup", Usage: "submit every row, even one whose request an earlier row of the file sends too"},
		&cli.BoolFlag{Name: "accept-filtered", Usage: "keep answers stopped by the API's content filter as succeeded rows (by default they fail with error kind content-filter; kept by resume)"},
	}, requestFlags(), batchFlags(true), tuningFlags(), limitFlags(), cacheFlags(), authFlags(), outputFlags())
}

// resumeFlags are the flags of resume, in the order --help lists them.
func resumeFlags() []cli.Flag {
	return slices.Concat([]cli.Flag{
		&cli.BoolFlag{Name: "retry-failed", Usage: "submit again the rows that failed (e.g. after fixing a quota or a permission); the rest is kept"},
	}, batchFlags(false), tuningFlags(), limitFlags(), cacheFlags(), authFlags(), outputFlags())
}

// requestFlags say what each request asks for (run only: resume takes them from the checkpoint).
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

// tuningFlags may change between run and resume; their defaults are job.DefaultTuning.
func tuningFlags() []cli.Flag {
	d := job.DefaultTuning()
	return []cli.Flag{
		&cli.IntFlag{Name: "concurrency", Value: d.Concurrency, Usage: "submissions in flight at once"},
		&cli.Float64Flag{Name: "submit-rps", Value: d.SubmitRPS, Usage: "submissions per second for the whole process (the folder quota; 0 = unlimited)"},
		&cli.IntFlag{Name: "submit-per-hour", Value: d.SubmitPerHour, Usage: "submissions in any sliding hour (the folder quota; 0 = unlimited)"},
		&cli.Float64Flag{Name: "poll-rps", Value: d.PollRPS, Usage: "operation polls per second (the folder quota; 0 = unlimited)"},
		&cli.IntFlag{Name: "max-attempts", Value: d.MaxAttempts, Usage: "tries of a call on transient errors, and submissions of a row whose operation failed transiently"},
		&cli.DurationFlag{Name: "request-timeout", Value: d.RequestTimeout, Usage: "deadline of every HTTP request"},
		&cli.StringFlag{Name: "max-failed", Value: "0", Usage: "failed rows tolerated before the exit code says so (exit 3): a count `N` or a percentage such as 0.5%"},
	}
}

// authFlags choose the credentials (see credentialsHelp).
func authFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "sa-key-file", EnvVars: []string{"YC_SERVICE_ACCOUNT_KEY_FILE"}, Usage: "service account authorized-key JSON `FILE` (IAM tokens are made and refreshed from it)"},
		&cli.StringFlag{Name: "iam-endpoint", EnvVars: []string{"BATCHGPT_IAM_ENDPOINT"}, Value: auth.DefaultIAMEndpoint, Usage: "IAM token exchange `URL`"},
		&cli.BoolFlag{Name: "metadata", Usage: "take IAM tokens from the VM metadata service (auto-detected when nothing else is set)"},
		&cli.StringFlag{Name: "metadata-url", EnvVars: []string{"BATCHGPT_METADATA_URL"}, Value: auth.DefaultMetadataURL, Usage: "VM metadata service `URL`"},
	}
}

// outputFlags say what a run prints and where, and whether it runs against the built-in emulator.
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
		&cli.StringFlag{Name: "metrics-file", Usage: "write Prometheus metrics to `PATH` (e.g. for node_exporter's textfile collector: a .prom file in its directory) at every --progress-interval and at exit"},
		&cli.StringFlag{Name: "notify", EnvVars: []string{"BATCHGPT_NOTIFY_URL"}, Usage: "at the end, POST the summary JSON to this webhook `URL` (https, or http to loopback); a failure is logged and changes nothing else"},
	}
}

const credentialsHelp = `CREDENTIALS (first that is set wins):
   1. --sa-key-file / YC_SERVICE_ACCOUNT_KEY_FILE  service account authorized key (IAM tokens refreshed automatically)
   2. YC_API_KEY                                   API key (Authorization: Api-Key)
   3. YC_IAM_TOKEN                                 IAM token, e.g. yc iam create-token (lives at most 12 h; not refreshed;
                                                   sent with x-folder-id: the folder of each request's model)
   4. --metadata, or auto-detected                 the VM's service account through the metadata service
   Secrets are read from the environment or a file only, never from flags, and never written anywhere.`
