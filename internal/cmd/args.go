package cmd

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// Intersperse moves a command's positional arguments after its flags, so that
// `batchgpt run in.csv -o out.csv` works as well as `batchgpt run -o out.csv in.csv`
// (urfave/cli v2 stops parsing flags at the first positional argument). Everything after
// a "--" is left alone.
func Intersperse(app *cli.App, args []string) []string {
	if len(args) < 3 {
		return args
	}
	var c *cli.Command
	for _, cand := range app.Commands {
		if cand.HasName(args[1]) {
			c = cand
			break
		}
	}
	if c == nil {
		return args
	}
	takesValue := map[string]bool{}
	for _, f := range c.Flags {
		_, isBool := f.(*cli.BoolFlag)
		for _, n := range f.Names() {
			takesValue[n] = !isBool
		}
	}
	out := append([]string{}, args[:2]...)
	var positional []string
	rest := args[2:]
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
