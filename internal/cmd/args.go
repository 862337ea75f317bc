package cmd

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// Intersperse moves a command's positional arguments after its flags, so that
// `batchgpt run in.csv -o out.csv` works as well as `batchgpt run -o out.csv in.csv`
// (urfave/cli v2 stops parsing flags at the first positional argument). A subcommand
// (`batchgpt cache stats --json`) is stepped into: its own flags are the ones that move.
// Everything after a "--" is left alone.
func Intersperse(app *cli.App, args []string) []string {
	// Shell completion asks with a trailing --generate-bash-completion, which urfave/cli only
	// recognises as the last argument: it stays there, whatever moves before it.
	if n := len(args); n > 0 && args[n-1] == completionFlag {
		return append(Intersperse(app, args[:n-1:n-1]), completionFlag)
	}
	if len(args) < 3 {
		return args
	}
	c := findCommand(app.Commands, args[1])
	if c == nil {
		return args
	}
	depth := 2 // args[:depth] is the program and the command path
	for depth < len(args) {
		sub := findCommand(c.Subcommands, args[depth])
		if sub == nil {
			break
		}
		c = sub
		depth++
	}
	takesValue := map[string]bool{}
	for _, f := range c.Flags {
		_, isBool := f.(*cli.BoolFlag)
		for _, n := range f.Names() {
			takesValue[n] = !isBool
		}
	}
	out := append([]string{}, args[:depth]...)
	var positional []string
	rest := args[depth:]
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		if a == "--" {
			positional = append(positional, rest[i:]...)
			break
		}
		if len(a) > 1 && strings.HasPrefix(a, "-") {
			out = append(out, a)
			name := strings.TrimLeft(a, "-")
			if !strings.Contains(name, "=") && takesValue[name] && i+1 < len(rest) {
				out = append(out, rest[i+1])
				i++
			}
			continue
		}
		positional = append(positional, a)
	}
	return append(out, positional...)
}

const completionFlag = "--generate-bash-completion"

// findCommand returns the command of cmds called name, or nil.
func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}
