// Command batchgpt runs thousands to millions of prompts through the YandexGPT async API
// unattended, with a crash-safe checkpoint. main only wires flags to packages and maps errors
// to exit codes in one place.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/batchgpt/batchgpt/batch"
	"github.com/batchgpt/batchgpt/internal/cmd"
	"github.com/batchgpt/batchgpt/internal/job"
	"github.com/batchgpt/batchgpt/store"
)

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

// run builds the signal contexts, runs the app and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	// First signal: stop starting work, let requests on the wire finish. Second: abort those too.
	soft, stopSoft := context.WithCancel(context.Background())
	kill, stopKill := context.WithCancel(context.Background())
	defer stopSoft()
	defer stopKill()
	con := cmd.NewConsole(stderr)
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		n := 0
		for range sigs {
			n++
			if n == 1 {
				con.Notice("stopping: nothing new is started, requests in flight finish (signal again to abort them)")
				stopSoft()
				continue
			}
			con.Notice("aborting requests in flight; saving the checkpoint")
			stopKill()
		}
	}()
	app := cmd.App(stdout, con, kill)
	err := app.RunContext(soft, cmd.Intersperse(app, args))
	return exitCode(err, con)
}

// exitCode maps an error to the documented exit codes and prints it.
func exitCode(err error, con *cmd.Console) int {
	if err == nil {
		return cmd.ExitOK
	}
	var code int
	var ve *batch.ValidationError
	var ue *cmd.UsageError
	var fe *cmd.FailedRowsError
	switch {
	case errors.As(err, &fe):
		code = cmd.ExitRowsFailed
	case errors.As(err, &ve), errors.As(err, &ue):
		code = cmd.ExitUsage
	case errors.Is(err, job.ErrInterrupted):
		code = cmd.ExitInterrupted
	case errors.Is(err, job.ErrAuth):
		code = cmd.ExitAuth
	case errors.Is(err, store.ErrLocked):
		code = cmd.ExitLocked
	default:
		code = cmd.ExitError
		var ce cli.ExitCoder
		if errors.As(err, &ce) && ce.ExitCode() != 0 {
			code = ce.ExitCode()
		}
	}
	switch {
	case errors.Is(err, cmd.ErrReported):
	case ve != nil:
		n := len(ve.Errors) + ve.More
		var text strings.Builder
		fmt.Fprintf(&text, "batchgpt: %s: %d input problem(s); nothing was sent:\n", ve.File, n)
		problems := strings.Split(ve.Error(), "\n")
		for _, line := range problems {
			fmt.Fprintf(&text, "  %s\n", line)
		}
		con.Error(fmt.Sprintf("%s: %d input problem(s); nothing was sent", ve.File, n), text.String(),
			"file", ve.File, "problems", problems, "exit_code", code)
	default:
		con.Error(err.Error(), "", "exit_code", code)
	}
	return code
}
