package cmd

import (
	"context"
	"errors"
	"io"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/batchgpt/batchgpt/internal/job"
)

func TestIntersperse(t *testing.T) {
	app := App(io.Discard, NewConsole(io.Discard), context.Background())
	tests := []struct{ in, want []string }{
		{[]string{"batchgpt", "run", "in.csv", "-o", "out.csv", "--emulator"}, []string{"batchgpt", "run", "-o", "out.csv", "--emulator", "in.csv"}},
		{[]string{"batchgpt", "run", "--template", "x {{.a}}", "in.csv"}, []string{"batchgpt", "run", "--template", "x {{.a}}", "in.csv"}},
		{[]string{"batchgpt", "run", "in.csv", "--max-failed=5%"}, []string{"batchgpt", "run", "--max-failed=5%", "in.csv"}},
		{[]string{"batchgpt", "resume", "cp.json", "-q"}, []string{"batchgpt", "resume", "-q", "cp.json"}},
		{[]string{"batchgpt", "run", "--", "-odd-name.jsonl"}, []string{"batchgpt", "run", "--", "-odd-name.jsonl"}},
		{[]string{"batchgpt", "status"}, []string{"batchgpt", "status"}},
		{[]string{"batchgpt", "cache", "stats", "--json"}, []string{"batchgpt", "cache", "stats", "--json"}},
		{[]string{"batchgpt", "cache", "export", "extra", "-o", "f.jsonl"}, []string{"batchgpt", "cache", "export", "-o", "f.jsonl", "extra"}},
		{[]string{"batchgpt", "unknown", "a", "-b"}, []string{"batchgpt", "unknown", "a", "-b"}},
		// Completion after a positional argument: the completion flag stays last.
		{[]string{"batchgpt", "run", "in.csv", "--con", "--generate-bash-completion"}, []string{"batchgpt", "run", "--con", "in.csv", "--generate-bash-completion"}},
		{[]string{"batchgpt", "run", "in.csv", "--generate-bash-completion"}, []string{"batchgpt", "run", "in.csv", "--generate-bash-completion"}},
	}
	for _, tt := range tests {
		if got := Intersperse(app, tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("Intersperse(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseMaxFailed(t *testing.T) {
	tests := []struct {
		in        string
		rows, max int
		bad       bool
	}{
		{"0", 100, 0, false},
		{"7", 100, 7, false},
		{"10%", 250, 25, false},
		{"0.5%", 1000, 5, false},
		{"100%", 3, 3, false},
		{"-1", 0, 0, true},
		{"101%", 0, 0, true},
		{"lots", 0, 0, true},
	}
	for _, tt := range tests {
		f, err := parseMaxFailed(tt.in)
		if (err != nil) != tt.bad {
			t.Errorf("parseMaxFailed(%q): err %v", tt.in, err)
			continue
		}
		if err == nil && f(tt.rows) != tt.max {
			t.Errorf("parseMaxFailed(%q)(%d) = %d, want %d", tt.in, tt.rows, f(tt.rows), tt.max)
		}
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"in.checkpoint.json":     "in.checkpoint.json",
		"/data/x-1/in.ckpt":      "/data/x-1/in.ckpt",
		"my run.checkpoint.json": "'my run.checkpoint.json'",
		"it's.json":              `'it'\''s.json'`,
		"":                       "''",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestCompletionScript(t *testing.T) {
	for _, shell := range []string{"bash", "zsh"} {
		var out strings.Builder
		app := App(&out, NewConsole(io.Discard), context.Background())
		if err := app.Run([]string{"batchgpt", "completion", shell}); err != nil {
			t.Fatalf("%s: %v", shell, err)
		}
		if !strings.Contains(out.String(), "complete -o bashdefault -o default -F _batchgpt_complete batchgpt") ||
			!strings.Contains(out.String(), "--generate-bash-completion") {
			t.Fatalf("%s completion script:\n%s", shell, out.String())
		}
		if shell == "zsh" && !strings.HasPrefix(out.String(), "autoload -U +X bashcompinit") {
			t.Fatalf("zsh script lacks bashcompinit:\n%s", out.String())
		}
	}
	app := App(io.Discard, NewConsole(io.Discard), context.Background())
	var ue *UsageError
	if err := app.Run([]string{"batchgpt", "completion", "fish"}); !errors.As(err, &ue) {
		t.Fatalf("completion fish: %v, want a usage error", err)
	}
}

// Every flag's placeholder in --help is a word in capitals (urfave/cli takes the first `quoted`
// word of the usage text as the placeholder: a quoted example there makes nonsense help).
func TestFlagPlaceholders(t *testing.T) {
	app := App(io.Discard, NewConsole(io.Discard), context.Background())
	var walk func(path string, cmds []*cli.Command)
	walk = func(path string, cmds []*cli.Command) {
		for _, c := range cmds {
			for _, f := range c.Flags {
				df, ok := f.(cli.DocGenerationFlag)
				if !ok {
					continue
				}
				// What urfave/cli's unquoteUsage does: the text between the first two backquotes.
				_, rest, ok := strings.Cut(df.GetUsage(), "`")
				placeholder, _, closed := strings.Cut(rest, "`")
				if ok && closed && !placeholderRE.MatchString(placeholder) {
					t.Errorf("%s %s --%s: placeholder %q", path, c.Name, f.Names()[0], placeholder)
				}
			}
			walk(path+" "+c.Name, c.Subcommands)
		}
	}
	walk("batchgpt", app.Commands)
}

var placeholderRE = regexp.MustCompile(`^[A-Z][A-Z_]*(=[A-Z_]+)?(,\.\.\.)?$`)

func TestSubmitRate(t *testing.T) {
	for _, tc := range []struct {
		limit float64
		want  string
	}{{0, "unlimited"}, {10, "10.0/s"}, {8.5, "8.5/s"}} {
		if got := submitRate(tc.limit); got != tc.want {
			t.Errorf("submitRate(%v) = %q, want %q", tc.limit, got, tc.want)
		}
	}
}

func TestETAText(t *testing.T) {
	for _, tc := range []struct {
		p    job.Progress
		want string
	}{
		{job.Progress{Rows: 10, Resolved: 3, ETA: 90 * time.Second}, "1m30s"},
		{job.Progress{Rows: 10, Resolved: 3}, "unknown"},
		{job.Progress{Rows: 10, Resolved: 10}, "0s"},
	} {
		if got := etaText(tc.p); got != tc.want {
			t.Errorf("etaText(%+v) = %q, want %q", tc.p, got, tc.want)
		}
	}
}
