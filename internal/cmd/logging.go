package cmd

import (
	"io"
	"log/slog"

	"github.com/batchgpt/batchgpt/internal/auth"
)

// logger returns the logger of a run, writing to out; with --log-format json the console speaks
// JSON to out too.
func (e *env) logger(rc *runConfig, out io.Writer) *slog.Logger {
	level := slog.LevelInfo
	if rc.quiet {
		level = slog.LevelError
	}
	if rc.verbose {
		level = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: redactAttr}
	if rc.logJSON {
		e.console.useJSON(out)
		return slog.New(slog.NewJSONHandler(out, opts))
	}
	return slog.New(slog.NewTextHandler(out, opts))
}

// redactAttr keeps secrets out of every log line, whatever an error message carried.
func redactAttr(_ []string, a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindString:
		return slog.String(a.Key, auth.Redact(a.Value.String()))
	case slog.KindAny:
		if err, ok := a.Value.Any().(error); ok {
			return slog.String(a.Key, auth.Redact(err.Error()))
		}
	}
	return a
}
