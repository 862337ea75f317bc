package cmd

import (
	"context"
	"io"
	"strings"
	"testing"
)

func TestLoopbackAddr(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8080": true,
		"127.1.2.3:0":    true,
		"localhost:8080": true,
		"[::1]:8080":     true,
		":8080":          false,
		"0.0.0.0:8080":   false,
		"[::]:8080":      false,
		"192.0.2.1:8080": false,
		"example.com:80": false,
		"127.0.0.1":      false, // not host:port: refused by the listener anyway
	} {
		if got := loopbackAddr(addr); got != want {
			t.Errorf("loopbackAddr(%q) = %v, want %v", addr, got, want)
		}
	}
}

// TestEmulatorAddressWarning starts the emulator command on loopback (no warning) and asks it for
// an address of TEST-NET-1 (RFC 5737), which no machine has: it warns, then fails to bind, so
// nothing is ever served off loopback.
func TestEmulatorAddressWarning(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the command stops as soon as it has started
	for _, tc := range []struct {
		addr     string
		warn     bool
		startErr bool
		batch    []string // batch-mode flags
	}{
		{"127.0.0.1:0", false, false, nil},
		{"192.0.2.1:0", true, true, nil},
		{"127.0.0.1:0", false, false, []string{"--grpc-addr", "127.0.0.1:0"}},
		{"127.0.0.1:0", true, true, []string{"--grpc-addr", "192.0.2.1:0"}},
		{"127.0.0.1:0", true, true, []string{"--grpc-addr", "127.0.0.1:0", "--storage-addr", "192.0.2.1:0"}},
	} {
		var stdout, stderr strings.Builder
		app := App(&stdout, NewConsole(&stderr), context.Background())
		err := app.RunContext(ctx, append([]string{"batchgpt", "emulator", "--addr", tc.addr}, tc.batch...))
		if (err != nil) != tc.startErr {
			t.Errorf("--addr %s: err = %v, want an error: %v", tc.addr, err, tc.startErr)
		}
		if got := strings.Contains(stderr.String(), "is not a loopback address"); got != tc.warn {
			t.Errorf("--addr %s: warning printed %v, want %v; stderr:\n%s", tc.addr, got, tc.warn, stderr.String())
		}
		if !tc.startErr && !strings.Contains(stdout.String(), "emulator listening on http://127.0.0.1:") {
			t.Errorf("--addr %s: stdout %q", tc.addr, stdout.String())
		}
		if want := !tc.startErr && tc.batch != nil; strings.Contains(stdout.String(), "batch-mode emulator: gRPC on 127.0.0.1:") != want {
			t.Errorf("%v: stdout %q, want the batch-mode line: %v", tc.batch, stdout.String(), want)
		}
	}
}

func TestEmulatorBatchFaultsChecked(t *testing.T) {
	app := App(io.Discard, NewConsole(io.Discard), context.Background())
	err := app.Run([]string{"batchgpt", "emulator", "--addr", "127.0.0.1:0", "--batch-faults", "crash=1"})
	if ue, ok := err.(*UsageError); !ok || !strings.Contains(ue.Msg, "--batch-faults") {
		t.Fatalf("err = %v, want a usage error about --batch-faults", err)
	}
}

// TestIAMEndpointChecked: a plain-http IAM endpoint off loopback is a usage error before anything
// is read or sent.
func TestIAMEndpointChecked(t *testing.T) {
	app := App(io.Discard, NewConsole(io.Discard), context.Background())
	err := app.Run([]string{"batchgpt", "resume", "--iam-endpoint", "http://iam.example.com", "--no-progress", "no-such.checkpoint.json"})
	ue, ok := err.(*UsageError)
	if !ok || !strings.Contains(ue.Msg, "plain http is only allowed on loopback") {
		t.Fatalf("err = %v, want a usage error refusing plain http", err)
	}
}
