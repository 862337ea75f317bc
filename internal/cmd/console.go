package cmd

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
)

// Console carries batchgpt's own messages to stderr: errors, input problems, the resume command,
// signal notices and the summary. They are plain lines ("batchgpt: …") until a command chooses
// --log-format json; from then on each is one JSON object on one line, like the log lines, so a
// log shipper never meets a line it cannot parse.
type Console struct {
	mu     sync.Mutex
	stderr io.Writer
	json   *slog.Logger // set in JSON mode
}

// NewConsole returns a console that writes plain text to stderr.
func NewConsole(stderr io.Writer) *Console { return &Console{stderr: stderr} }

// useJSON switches the console to one JSON object per line, written to out (stderr, or the
// progress bars' writer on a terminal).
func (c *Console) useJSON(out io.Writer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.json = slog.New(slog.NewJSONHandler(out, &slog.HandlerOptions{ReplaceAttr: redactAttr}))
}

func (c *Console) jsonLogger() *slog.Logger {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.json
}

// Notice says something the user must see whatever the log level, e.g. that a signal arrived.
func (c *Console) Notice(msg string, attrs ...any) { c.say(slog.LevelInfo, msg, "", attrs) }

// Error reports the error a command ended with; text is the plain-text form when it differs
// from msg (e.g. a list of input problems on lines of their own).
func (c *Console) Error(msg, text string, attrs ...any) { c.say(slog.LevelError, msg, text, attrs) }

func (c *Console) say(level slog.Level, msg, text string, attrs []any) {
	if l := c.jsonLogger(); l != nil {
		l.Log(context.Background(), level, msg, attrs...)
		return
	}
	if text == "" {
		text = "batchgpt: " + msg + "\n"
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprint(c.stderr, text)
}
