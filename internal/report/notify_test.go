package report

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const secret = "s3cr3t-token-0123456789"

func TestRedact(t *testing.T) {
	for raw, want := range map[string]string{
		"https://hooks.example.com/services/T0/B0/" + secret: "https://hooks.example.com/…",
		"https://hooks.example.com/notify?token=" + secret:   "https://hooks.example.com/…",
		"https://user:" + secret + "@hooks.example.com":      "https://hooks.example.com",
		"https://hooks.example.com/":                         "https://hooks.example.com",
		"http://127.0.0.1:8080/x#" + secret:                  "http://127.0.0.1:8080/…",
		"::not a url " + secret:                              "(a URL that does not parse)",
	} {
		if got := Redact(raw); got != want {
			t.Errorf("Redact(%q) = %q, want %q", raw, got, want)
		}
	}
}

func TestNewWebhook(t *testing.T) {
	for raw, ok := range map[string]bool{
		"https://hooks.example.com/x?token=" + secret: true,
		"http://127.0.0.1:9/hook?token=" + secret:     true,
		"http://localhost:9/hook":                     true,
		"http://hooks.example.com/x?token=" + secret:  false, // the token would cross the network in clear
		"ftp://hooks.example.com/x":                   false,
		"hooks.example.com/x?token=" + secret:         false,
	} {
		w, err := NewWebhook(raw)
		if (err == nil) != ok {
			t.Errorf("NewWebhook(%q): %v", raw, err)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("NewWebhook(%q): the error shows the secret: %v", raw, err)
		}
		if w != nil && strings.Contains(w.String(), secret) {
			t.Errorf("String() shows the secret: %s", w)
		}
	}
}

// hook is a webhook on loopback that answers with the statuses given, then 200s, and keeps
// what it received.
type hook struct {
	*httptest.Server
	requests atomic.Int32
	bodies   chan string
}

func newHook(t *testing.T, statuses ...int) *hook {
	h := &hook{bodies: make(chan string, 16)}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int(h.requests.Add(1))
		b, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || r.URL.Query().Get("token") != secret {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		h.bodies <- string(b)
		if n <= len(statuses) {
			w.WriteHeader(statuses[n-1])
		}
	}))
	t.Cleanup(h.Close)
	return h
}

func webhook(t *testing.T, url string) *Webhook {
	t.Helper()
	w, err := NewWebhook(url + "/hook?token=" + secret)
	if err != nil {
		t.Fatal(err)
	}
	w.Delay = time.Millisecond
	return w
}

func TestWebhookSend(t *testing.T) {
	body := `{"rows":3}` + "\n"
	for _, tc := range []struct {
		name     string
		statuses []int
		requests int32
		ok       bool
	}{
		{"answered", nil, 1, true},
		{"5xx and 429 are tried again", []int{500, 429}, 3, true},
		{"three 5xx are the end", []int{500, 502, 503, 500}, 3, false},
		{"4xx is final", []int{404}, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHook(t, tc.statuses...)
			err := webhook(t, h.URL).Send(context.Background(), []byte(body))
			if (err == nil) != tc.ok {
				t.Fatalf("Send: %v", err)
			}
			if err != nil && strings.Contains(err.Error(), secret) {
				t.Errorf("the error shows the secret: %v", err)
			}
			if n := h.requests.Load(); n != tc.requests {
				t.Errorf("%d requests, want %d", n, tc.requests)
			}
			if got := <-h.bodies; got != body {
				t.Errorf("body %q, want %q", got, body)
			}
		})
	}
}

func TestWebhookRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + l.Addr().String()
	l.Close()
	err = webhook(t, url).Send(context.Background(), []byte("{}"))
	if err == nil {
		t.Fatal("no error from a webhook that refuses connections")
	}
	if strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), "refused") {
		t.Errorf("error %q: want the cause, not the secret", err)
	}
}
