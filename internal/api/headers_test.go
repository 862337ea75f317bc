package api

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"

	"github.com/batchgpt/batchgpt/internal/emulator"
)

// recordingEmulator serves the emulator on loopback and keeps the headers of every request it
// receives, so that tests see what the server sees.
type recordingEmulator struct {
	*emulator.Server
	URL string

	mu      sync.Mutex
	headers []http.Header
}

func startRecordingEmulator(t *testing.T, cfg emulator.Config) *recordingEmulator {
	t.Helper()
	re := &recordingEmulator{Server: emulator.New(cfg)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		re.mu.Lock()
		re.headers = append(re.headers, r.Header.Clone())
		re.mu.Unlock()
		re.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	re.URL = srv.URL
	return re
}

func (re *recordingEmulator) received() []http.Header {
	re.mu.Lock()
	defer re.mu.Unlock()
	return append([]http.Header(nil), re.headers...)
}

// TestClientRequestIDIsUUIDv4 checks the x-client-request-id the emulator receives: a UUID of
// version 4 and variant 10 (RFC 9562), different on every request.
func TestClientRequestIDIsUUIDv4(t *testing.T) {
	emu := startRecordingEmulator(t, emulator.Config{APIKeys: []string{testKey}})
	c := emuClient(t, emu.URL, nil)
	for i := range 16 {
		sub, err := c.Submit(t.Context(), prompt("uuid "+strconv.Itoa(i)), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Operation(t.Context(), sub.OpID); err != nil {
			t.Fatal(err)
		}
	}
	got := emu.received()
	if len(got) != 32 {
		t.Fatalf("the emulator received %d requests, want 32", len(got))
	}
	seen := map[string]bool{}
	for _, h := range got {
		id := h.Get("X-Client-Request-Id")
		if !uuidRE.MatchString(id) {
			t.Fatalf("x-client-request-id %q is not a lowercase UUID", id)
		}
		if id[14] != '4' {
			t.Errorf("x-client-request-id %q: version %c, want 4", id, id[14])
		}
		if v := id[19]; v != '8' && v != '9' && v != 'a' && v != 'b' {
			t.Errorf("x-client-request-id %q: variant nibble %c, want 8, 9, a or b", id, v)
		}
		if seen[id] {
			t.Errorf("x-client-request-id %q sent twice", id)
		}
		seen[id] = true
	}
}
