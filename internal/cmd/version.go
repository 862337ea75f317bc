package cmd

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/batchgpt/batchgpt/internal/version"
)

// versionFlag is the app's --version.
var versionFlag = &cli.BoolFlag{Name: "version", Usage: "print the version, the commit and the Go version of this build"}

func (e *env) versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version, the commit and the Go version of this build",
		Description: "The same build information starts every run's log, and is in the summary JSON (\"build\") and the\n" +
			"metrics file (batchgpt_build_info), so a results file can be traced to the build that wrote it.",
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usagef("version: takes no arguments, got %q", c.Args().First())
			}
			e.printVersion()
			return nil
		},
	}
}

func (e *env) printVersion() { fmt.Fprint(e.stdout, version.Get().String()) }
