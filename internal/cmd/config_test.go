package cmd

import (
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/batchgpt/batchgpt/internal/job"
)

// parseArgs parses the flags and arguments of run (or resume) as the command line would.
func parseArgs(t *testing.T, resume bool, args ...string) (*runConfig, error) {
	t.Helper()
	name, flags := "run", runFlags()
	if resume {
		name, flags = "resume", resumeFlags()
	}
	var rc *runConfig
	var perr error
	app := &cli.App{
		Name: "batchgpt", Writer: io.Discard, ErrWriter: io.Discard, ExitErrHandler: func(*cli.Context, error) {},
		Commands: []*cli.Command{{Name: name, Flags: flags, Action: func(c *cli.Context) error {
			rc, perr = parseRunFlags(c, resume)
			return nil
		}}},
	}
	if err := app.Run(append([]string{"batchgpt", name}, args...)); err != nil {
		t.Fatalf("%s %q: %v", name, args, err)
	}
	if rc == nil {
		t.Fatalf("%s %q: parseRunFlags returned no config", name, args)
	}
	return rc, perr
}

// clearFlagEnv unsets the environment variables that flags read, for the test.
func clearFlagEnv(t *testing.T) {
	for _, k := range []string{"YC_FOLDER_ID", "BATCHGPT_ENDPOINT", "BATCHGPT_OPERATIONS_ENDPOINT", "BATCHGPT_CACHE",
		"YC_SERVICE_ACCOUNT_KEY_FILE", "BATCHGPT_IAM_ENDPOINT", "BATCHGPT_METADATA_URL", "BATCHGPT_NOTIFY_URL"} {
		t.Setenv(k, "") // restored after the test
		os.Unsetenv(k)
	}
}

func TestParseRunFlags(t *testing.T) {
	clearFlagEnv(t)
	const folder = "--folder=b1gtestfolder0000000"
	def := job.DefaultTuning()
	tests := []struct {
		name   string
		resume bool
		args   []string
		check  func(t *testing.T, rc *runConfig)
		// usage is a part of the UsageError expected, "" for none; json says whether the
		// console is to report it in JSON.
		usage string
		json  bool
	}{
		{name: "defaults", args: []string{folder, "in.jsonl"}, check: func(t *testing.T, rc *runConfig) {
			if rc.input != "in.jsonl" || rc.checkpoint != "in.checkpoint.json" || rc.output != "in.results.jsonl" {
				t.Errorf("paths %q %q %q", rc.input, rc.checkpoint, rc.output)
			}
			if rc.tuning != def {
				t.Errorf("tuning %+v, want the defaults %+v", rc.tuning, def)
			}
			if rc.tolerated(1000) != 0 || rc.logJSON || rc.quiet || rc.dryRun || rc.emulator || rc.resume {
				t.Errorf("config %+v", rc)
			}
			if rc.progressInterval != 30*time.Second || rc.cache != (cacheConfig{}) {
				t.Errorf("progress interval %v, cache %+v", rc.progressInterval, rc.cache)
			}
			if rc.settings.Input.Model != "yandexgpt-lite" || rc.settings.Endpoint != defaultEndpoint ||
				rc.settings.OperationsEndpoint != defaultOperationsEndpoint || rc.settings.Order != "" {
				t.Errorf("settings %+v", rc.settings)
			}
			if !rc.auth.AutoMetadata || rc.auth.APIKey != "" || rc.auth.IAMToken != "" {
				t.Errorf("auth %+v: secrets are read when the run connects, not from flags", rc.auth)
			}
		}},
		{name: "every kind of flag", args: []string{folder, "--checkpoint", "c.json", "-o", "out.csv", "--force",
			"--discard-pending", "--order", "input", "--temperature", "0.5", "--max-tokens", "200", "--concurrency", "4",
			"--submit-rps", "0", "--submit-per-hour", "100", "--poll-rps", "7", "--max-attempts", "3",
			"--request-timeout", "5s", "--max-failed", "10%", "--cache", "c.db", "--cache-ttl", "2d", "--no-cache",
			"--log-format", "json", "--verbose", "--no-progress", "--progress-interval", "0", "--summary-json", "s.json",
			"--price", "yandexgpt-lite=0.5", "--metadata", "in.jsonl"},
			check: func(t *testing.T, rc *runConfig) {
				if rc.checkpoint != "c.json" || rc.output != "out.csv" || !rc.force || !rc.discardPending {
					t.Errorf("run flags %+v", rc)
				}
				want := def
				want.Concurrency, want.SubmitRPS, want.SubmitPerHour, want.PollRPS = 4, 0, 100, 7
				want.MaxAttempts, want.RequestTimeout = 3, 5*time.Second
				if rc.tuning != want {
					t.Errorf("tuning %+v, want %+v", rc.tuning, want)
				}
				s := rc.settings
				if s.Order != job.OrderInput || *s.Input.Temperature != 0.5 || *s.Input.MaxTokens != 200 || !s.NoCache {
					t.Errorf("settings %+v", s)
				}
				if rc.tolerated(1000) != 100 || !rc.logJSON || !rc.verbose || !rc.noProgress || rc.progressInterval != 0 ||
					rc.summaryJSON != "s.json" || !rc.auth.UseMetadata {
					t.Errorf("config %+v", rc)
				}
				if rc.cache != (cacheConfig{path: "c.db", ttl: 48 * time.Hour}) {
					t.Errorf("cache %+v", rc.cache)
				}
				if p, _ := rc.prices.For("gpt://b1gtestfolder0000000/yandexgpt-lite/latest"); p != 0.5 {
					t.Errorf("price %v", p)
				}
			}},
		{name: "emulator", args: []string{"--emulator", "--emulator-faults", "429=0.5", "in.jsonl"}, check: func(t *testing.T, rc *runConfig) {
			if !rc.emulator || !rc.settings.Emulator || rc.settings.Input.Folder != demoFolder || rc.emulatorFaults.Rate429 != 0.5 ||
				rc.emulatorLatency.Kind == "" {
				t.Errorf("config %+v", rc)
			}
		}},
		// A dry run checks the command line as the run would.
		{name: "dry run checks every flag", args: []string{folder, "--dry-run", "--concurrency", "0", "in.jsonl"},
			usage: "--concurrency and --max-attempts must be positive"},
		{name: "dry run checks the emulator flags", args: []string{folder, "--dry-run", "--emulator", "--emulator-latency", "x", "in.jsonl"},
			usage: "--emulator-latency"},
		{name: "resume", resume: true, args: []string{"--retry-failed", "--no-cache", "--concurrency", "2", "in.checkpoint.json"},
			check: func(t *testing.T, rc *runConfig) {
				if !rc.resume || rc.checkpoint != "in.checkpoint.json" || rc.input != "" || rc.output != "" || !rc.retryFailed ||
					!rc.settings.NoCache || rc.tuning.Concurrency != 2 {
					t.Errorf("config %+v", rc)
				}
			}},

		{name: "metrics and webhook", resume: true, args: []string{"--metrics-file", "m.prom", "--notify", "https://hooks.example.com/x?token=t0k", "c.json"},
			check: func(t *testing.T, rc *runConfig) {
				if rc.metricsFile != "m.prom" || rc.notify == nil || rc.notify.String() != "https://hooks.example.com/…" {
					t.Errorf("config %+v", rc)
				}
			}},
		{name: "webhook over plain http", args: []string{folder, "--notify", "http://hooks.example.com/x", "in.jsonl"},
			usage: "--notify http://hooks.example.com/…: plain http is only allowed on loopback"},

		{name: "no input", args: []string{folder}, usage: "run: want exactly one INPUT file, got 0 arguments"},
		{name: "two inputs", args: []string{folder, "a.jsonl", "b.jsonl"}, usage: "got 2 arguments"},
		{name: "resume without checkpoint", resume: true, usage: "resume: want exactly one CHECKPOINT file, got 0 arguments"},
		{name: "temperature", args: []string{folder, "--temperature", "2", "in.jsonl"}, usage: "--temperature 2: want a number from 0 to 1"},
		{name: "max tokens", args: []string{folder, "--max-tokens", "0", "in.jsonl"}, usage: "--max-tokens 0"},
		{name: "order", args: []string{folder, "--order", "random", "in.jsonl"}, usage: `--order "random"`},
		{name: "plain http endpoint", args: []string{folder, "--endpoint", "http://example.com", "in.jsonl"}, usage: "--endpoint"},
		{name: "no folder", args: []string{"in.jsonl"}, usage: "needs a folder id"},
		{name: "input format", args: []string{folder, "in.txt"}, usage: "in.txt"},
		// With --log-format json every usage mistake is reported in JSON.
		{name: "price", args: []string{folder, "--log-format", "json", "--price", "x", "in.jsonl"}, usage: "--price: ", json: true},
		{name: "max failed", args: []string{folder, "--log-format", "json", "--max-failed", "lots", "in.jsonl"}, usage: `--max-failed "lots"`, json: true},
		{name: "arguments in JSON", args: []string{folder, "--log-format", "json"}, usage: "want exactly one INPUT file", json: true},
		{name: "log format", args: []string{folder, "--log-format", "xml", "in.jsonl"}, usage: `--log-format "xml"`},
		{name: "concurrency", args: []string{folder, "--log-format", "json", "--concurrency", "0", "in.jsonl"},
			usage: "--concurrency and --max-attempts must be positive", json: true},
		{name: "max attempts", resume: true, args: []string{"--max-attempts", "0", "c.json"}, usage: "--concurrency and --max-attempts"},
		{name: "progress interval", args: []string{folder, "--progress-interval", "-1s", "in.jsonl"}, usage: "--progress-interval must not be negative"},
		{name: "negative rate", args: []string{folder, "--poll-rps", "-1", "in.jsonl"}, usage: "must not be negative"},
		{name: "plain http IAM endpoint", args: []string{folder, "--iam-endpoint", "http://example.com", "in.jsonl"}, usage: "--iam-endpoint"},
		{name: "cache ttl", args: []string{folder, "--log-format", "json", "--cache-ttl", "0", "in.jsonl"}, usage: `--cache-ttl "0"`, json: true},
		{name: "cache ttl in a dry run", args: []string{folder, "--dry-run", "--cache-ttl", "x", "in.jsonl"}, usage: `--cache-ttl "x"`},
		{name: "emulator latency", args: []string{"--emulator", "--emulator-latency", "x", "in.jsonl"}, usage: "--emulator-latency"},
		{name: "emulator faults", resume: true, args: []string{"--log-format", "json", "--emulator", "--emulator-faults", "x=1", "c.json"},
			usage: "--emulator-faults", json: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc, err := parseArgs(t, tt.resume, tt.args...)
			if tt.usage == "" {
				if err != nil {
					t.Fatalf("error %v", err)
				}
				tt.check(t, rc)
				return
			}
			var ue *UsageError
			if !errors.As(err, &ue) || !strings.Contains(ue.Msg, tt.usage) {
				t.Fatalf("error %v, want a usage error with %q", err, tt.usage)
			}
			if rc.logJSON != tt.json {
				t.Errorf("logJSON %v, want %v", rc.logJSON, tt.json)
			}
		})
	}
}
