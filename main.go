// Command batchgpt runs thousands to millions of prompts through the YandexGPT async API
// unattended, with a crash-safe checkpoint. main only builds the signal contexts, runs the
// command tree of internal/cmd and exits with the code cmd.ExitCode maps the error to.
package main

import (
	"context"
	"errors"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"runtime/trace"
	"syscall"
	"time"

	"github.com/batchgpt/batchgpt/internal/cmd"
)

func main() {
	os.Exit(profiled(func() int { return run(os.Args, os.Stdout, os.Stderr) }))
}

// profiled runs f under a CPU profile written to $BATCHGPT_CPUPROFILE when that is set: the
// benchmarks profile the real binary with it. With $BATCHGPT_HEAPPROFILE, a heap profile (the
// objects live at the latest collection) is written there every 10 seconds, each replacing the
// last: what a long run holds while it runs, not only at its end. With $BATCHGPT_TRACE, an
// execution trace of five seconds from ten seconds in (a long run's steady state) is written there:
// where goroutines wait, which a CPU profile does not show. Nothing is profiled otherwise.
func profiled(f func() int) int {
	if path := os.Getenv("BATCHGPT_HEAPPROFILE"); path != "" {
		stop := make(chan struct{})
		defer close(stop)
		go writeHeapProfiles(path, stop)
	}
	if path := os.Getenv("BATCHGPT_TRACE"); path != "" {
		stop, done := make(chan struct{}), make(chan struct{})
		defer func() { close(stop); <-done }() // a trace cut short is still written whole
		go func() { defer close(done); writeTrace(path, 10*time.Second, 5*time.Second, stop) }()
	}
	path := os.Getenv("BATCHGPT_CPUPROFILE")
	if path == "" {
		return f()
	}
	out, err := os.Create(path)
	if err != nil {
		io.WriteString(os.Stderr, "batchgpt: BATCHGPT_CPUPROFILE: "+err.Error()+"\n")
		return f()
	}
	defer out.Close()
	if err := pprof.StartCPUProfile(out); err != nil {
		io.WriteString(os.Stderr, "batchgpt: BATCHGPT_CPUPROFILE: "+err.Error()+"\n")
		return f()
	}
	defer pprof.StopCPUProfile()
	return f()
}

// writeHeapProfiles writes a heap profile to path every 10 seconds until stop is closed.
func writeHeapProfiles(path string, stop <-chan struct{}) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		out, err := os.Create(path + ".tmp")
		if err == nil {
			err = errors.Join(pprof.Lookup("heap").WriteTo(out, 0), out.Close())
		}
		if err == nil {
			err = os.Rename(path+".tmp", path)
		}
		if err != nil {
			io.WriteString(os.Stderr, "batchgpt: BATCHGPT_HEAPPROFILE: "+err.Error()+"\n")
			return
		}
	}
}

// writeTrace writes an execution trace of the span [after, after+span) of the process to path,
// or of what of it passed before stop is closed.
func writeTrace(path string, after, span time.Duration, stop <-chan struct{}) {
	select {
	case <-stop:
		return
	case <-time.After(after):
	}
	out, err := os.Create(path)
	if err == nil {
		err = trace.Start(out)
	}
	if err != nil {
		io.WriteString(os.Stderr, "batchgpt: BATCHGPT_TRACE: "+err.Error()+"\n")
		return
	}
	select {
	case <-stop:
	case <-time.After(span):
	}
	trace.Stop()
	if err := out.Close(); err != nil {
		io.WriteString(os.Stderr, "batchgpt: BATCHGPT_TRACE: "+err.Error()+"\n")
	}
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
	return cmd.ExitCode(err, con)
}
