// Package cmd builds batchgpt's command tree: the flags of run, resume, status and emulator, and
// how each command turns them into a job, a status report or an emulator.
//
// run and resume first read every flag into one runConfig, then run from that value alone:
//
//	flags.go    the flag tables; tuning defaults come from job.DefaultTuning
//	config.go   flags → runConfig, where every usage mistake is found
//	run.go      the commands, and the wiring that builds the job and runs it
//	dryrun.go   run --dry-run
//	summary.go  the final summary, printed
//	report.go   the summary JSON, --metrics-file and --notify
//	logging.go  the run's logger, which keeps secrets out of log lines
//	exit.go     the error a command ended with → the exit code, the one map main and the
//	            metrics file use
//	version.go  --version and the version command
package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"
)

// Exit codes, documented in the README and in --help.
const (
	ExitOK          = 0
	ExitError       = 1   // anything else: I/O, configuration, an unreachable API
	ExitUsage       = 2   // bad usage or bad input: nothing was sent
	ExitRowsFailed  = 3   // the run finished but more rows failed than tolerated
	ExitAuth        = 4   // authentication failed; resumable once credentials are fixed
	ExitLocked      = 5   // another batchgpt process holds the checkpoint
	ExitSpendLimit  = 6   // stopped at the spend limit (--max-cost, --max-total-tokens); resumable
	ExitInterrupted = 130 // stopped by a signal; resumable
)

const exitCodesHelp = `EXIT CODES:
   0    every row succeeded (or the failures were within --max-failed)
   1    an error: I/O, configuration, the API unreachable
   2    bad usage or bad input: nothing was sent
   3    the run finished but rows failed beyond --max-failed
   4    authentication failed (resumable once credentials are fixed)
   5    another batchgpt process holds the checkpoint
   6    stopped at the spend limit (--max-cost, --max-total-tokens): what was submitted is written,
        the rest was not sent (resumable with a higher limit: the command is printed)
   130  interrupted by a signal (resumable: the command to resume is printed)`

// UsageError is a mistake in the command line: exit code 2. It prints as one line that names the
// problem and the help to read.
type UsageError struct {
	Msg  string
	Help string // e.g. "batchgpt run --help"; filled in by the command that returned the error
}

func (e *UsageError) Error() string {
	if e.Help == "" {
		return e.Msg
	}
	return e.Msg + " (see " + e.Help + ")"
}

func usagef(format string, args ...any) error { return &UsageError{Msg: fmt.Sprintf(format, args...)} }

// FailedRowsError says the run finished with more failed rows than tolerated: exit code 3.
type FailedRowsError struct{ Failed, Rows int }

func (e *FailedRowsError) Error() string {
	return fmt.Sprintf("%d of %d rows failed (see the results file; `batchgpt resume --retry-failed` submits them again)", e.Failed, e.Rows)
}

// ErrReported marks an error whose message was already printed.
var ErrReported = errors.New("reported")

// App returns the command tree. kill is cancelled on the second signal: it aborts requests in
// flight, while the context given to RunContext only stops new work.
func App(stdout io.Writer, con *Console, kill context.Context) *cli.App {
	stderr := con.stderr
	e := &env{stdout: stdout, stderr: stderr, console: con, kill: kill}
	app := &cli.App{
		Name:  "batchgpt",
		Usage: "run thousands to millions of prompts through the YandexGPT async API, unattended and crash-safe",
		Description: "batchgpt reads a JSONL or CSV file of prompts, submits each row to completionAsync (half the price of\n" +
			"sync), keeps every operation id in a checkpoint journal the moment it is returned, polls the operations\n" +
			"and writes one result per row. Killed at any moment, `batchgpt resume` carries on without paying twice.\n\n" +
			"Try it with no credentials against the built-in emulator:\n" +
			"   batchgpt run --emulator samples/prompts.jsonl\n\n" + exitCodesHelp,
		Writer:               stdout,
		ErrWriter:            stderr,
		EnableBashCompletion: true,
		// Errors are mapped to exit codes by main, after deferred flushes ran.
		ExitErrHandler: func(*cli.Context, error) {},
		Commands: []*cli.Command{
			e.runCommand(),
			e.resumeCommand(),
			e.statusCommand(),
			e.cancelCommand(),
			e.checkCommand(),
			e.cacheCommand(),
			e.emulatorCommand(),
			e.completionCommand(),
			e.versionCommand(),
		},
		Flags: []cli.Flag{versionFlag},
		// A word that is no command is bad usage (exit 2), not urfave/cli's "No help topic" (exit 3,
		// which our exit codes reserve for failed rows).
		Action: func(c *cli.Context) error {
			if c.Bool(versionFlag.Name) {
				e.printVersion()
				return nil
			}
			if c.Args().Present() {
				return &UsageError{Msg: fmt.Sprintf("unknown command %q", c.Args().First()), Help: "batchgpt --help"}
			}
			return cli.ShowAppHelp(c)
		},
		OnUsageError: onUsageError,
	}
	for _, c := range app.Commands {
		reportUsage(c)
	}
	return app
}

// reportUsage makes every usage mistake of c and its subcommands a one-line UsageError that names
// the command's help, instead of urfave/cli's full help text and exit code 1.
func reportUsage(c *cli.Command) {
	c.OnUsageError = onUsageError
	if c.Action == nil && len(c.Subcommands) > 0 {
		c.Action = func(ctx *cli.Context) error {
			if ctx.Args().Present() {
				return usagef("%s: unknown command %q", strings.TrimPrefix(ctx.Command.HelpName, "batchgpt "), ctx.Args().First())
			}
			return cli.ShowSubcommandHelp(ctx)
		}
	}
	if act := c.Action; act != nil {
		c.Action = func(ctx *cli.Context) error {
			err := act(ctx)
			var ue *UsageError
			if errors.As(err, &ue) && ue.Help == "" {
				ue.Help = ctx.Command.HelpName + " --help"
			}
			return err
		}
	}
	for _, sub := range c.Subcommands {
		reportUsage(sub)
	}
}

// onUsageError turns a flag parsing error into a UsageError.
func onUsageError(ctx *cli.Context, err error, _ bool) error {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		msg = "unknown flag --" + strings.TrimLeft(name, "-")
	} else if before, after, ok := strings.Cut(msg, " for flag -"); ok {
		// `invalid value "x" for flag -concurrency: parse error`
		name, _, _ := strings.Cut(after, ":")
		msg = before + " for --" + name
	}
	help := "batchgpt --help"
	if ctx.Command != nil && ctx.Command.HelpName != "" {
		help = ctx.Command.HelpName + " --help"
	}
	if prefix := strings.TrimPrefix(strings.TrimSuffix(help, " --help"), "batchgpt"); prefix != "" {
		msg = strings.TrimSpace(prefix) + ": " + msg
	}
	return &UsageError{Msg: msg, Help: help}
}

// env is what every command writes to.
type env struct {
	stdout, stderr io.Writer
	console        *Console
	kill           context.Context
}
