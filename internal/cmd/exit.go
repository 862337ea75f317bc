package cmd

import (
	"errors"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/batchgpt/batchgpt/batch"
	"github.com/batchgpt/batchgpt/internal/job"
	"github.com/batchgpt/batchgpt/store"
)

// ExitCode reports the error a command ended with on con and returns the process's exit code.
// main calls it with what App's RunContext returned; the code a run writes to its metrics file
// and its summary comes from the same mapping (exitCode), so they cannot differ.
func ExitCode(err error, con *Console) int {
	code := exitCode(err)
	if err == nil {
		return code
	}
	var ve *batch.ValidationError
	switch {
	case errors.Is(err, ErrReported):
	case errors.As(err, &ve):
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

// exitCode maps an error to the documented exit codes.
func exitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var ve *batch.ValidationError
	var ue *UsageError
	var fe *FailedRowsError
	var se *SpendLimitError
	switch {
	case errors.As(err, &fe):
		return ExitRowsFailed
	case errors.As(err, &se):
		return ExitSpendLimit
	case errors.As(err, &ve), errors.As(err, &ue):
		return ExitUsage
	case errors.Is(err, job.ErrInterrupted):
		return ExitInterrupted
	case errors.Is(err, job.ErrAuth):
		return ExitAuth
	case errors.Is(err, store.ErrLocked):
		return ExitLocked
	}
	var ce cli.ExitCoder
	if errors.As(err, &ce) && ce.ExitCode() != 0 {
		return ce.ExitCode()
	}
	return ExitError
}
