package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// floorRun is the least any client must do per row with the asynchronous API: one submission and
// one poll (the emulator with no latency answers the first poll done), over kept-alive
// connections, with each answer written to a file, synced once at the end. No journal, no cache, no
// pacing, no retries. Its rows a second on this machine, against the same emulator, bounds what
// batchgpt can reach here: the emulator shares the machine's CPU with the client.
func floorRun(url, results string, rows, parallel int) error {
	out, err := os.Create(results)
	if err != nil {
		return err
	}
	defer out.Close()
	w := bufio.NewWriterSize(out, 1<<20)
	var mu sync.Mutex
	cl := &goClient{c: &http.Client{Timeout: time.Minute, Transport: &http.Transport{
		MaxIdleConns: parallel, MaxIdleConnsPerHost: parallel,
	}}}
	err = forEach(rows, parallel, func(i int) error {
		body := fmt.Sprintf(`{"modelUri":"gpt://%s/yandexgpt-lite","completionOptions":{"stream":false},"messages":[{"role":"user","text":%q}]}`,
			benchFolder, prompt(i))
		code, resp, err := cl.submit(url, []byte(body))
		if err != nil || code != 200 {
			return fmt.Errorf("row %d: submit: code %d, %v: %s", i, code, err, resp)
		}
		var op struct {
			ID   string `json:"id"`
			Done bool   `json:"done"`
		}
		if err := json.Unmarshal(resp, &op); err != nil || op.ID == "" {
			return fmt.Errorf("row %d: bad operation %q", i, resp)
		}
		for !op.Done {
			code, resp, err = cl.get(url, op.ID)
			if err != nil || code != 200 {
				return fmt.Errorf("row %d: poll: code %d, %v: %s", i, code, err, resp)
			}
			if err := json.Unmarshal(resp, &op); err != nil {
				return fmt.Errorf("row %d: bad operation %q", i, resp)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		_, err = w.Write(append(resp, '\n'))
		return err
	})
	if err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return out.Sync()
}

// procCPU is the user and system CPU that process pid has used so far, from /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, field 2, may hold spaces and parentheses: count fields after the last
	// closing parenthesis.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	rest := string(b[i+1:])
	f := strings.Fields(rest) // f[0] is field 3 (state); utime and stime are fields 14 and 15
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// selfCPU is the user and system CPU this test process has used so far.
func selfCPU(b *testing.B) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on every Linux architecture Go
// supports.
const clockTicks = 100

// emulatorCPU is the emulator's CPU so far; the benchmark fails where it cannot be read.
func (e *emulator) cpu(b *testing.B) time.Duration {
	b.Helper()
	d, err := procCPU(e.cmd.Process.Pid)
	if err != nil {
		b.Fatalf("emulator CPU: %v", err)
	}
	return d
}

// benchFloor runs floorRun on rows and reports its rows a second and the CPU of both sides.
func benchFloor(b *testing.B) {
	b.StopTimer()
	rows := envInt(b, "BATCHGPT_BENCH_ROWS", 1_000_000)
	concurrency := envInt(b, "BATCHGPT_BENCH_CONCURRENCY", 64)
	emu := startEmulator(b, "--latency", "0")
	var wall, emuCPU, clientCPU time.Duration
	for range b.N {
		results := filepath.Join(b.TempDir(), "results.jsonl")
		before, cpu0, self0 := emu.mustStats(b), emu.cpu(b), selfCPU(b)
		b.StartTimer()
		start := time.Now()
		if err := floorRun(emu.URL, results, rows, concurrency); err != nil {
			b.Fatal(err)
		}
		wall = time.Since(start)
		b.StopTimer()
		clientCPU = selfCPU(b) - self0
		after := emu.mustStats(b)
		emuCPU = emu.cpu(b) - cpu0
		if got := after.Submissions - before.Submissions; got != int64(rows) {
			b.Fatalf("emulator saw %d submissions, want %d", got, rows)
		}
		if n := countLines(b, results); n != rows {
			b.Fatalf("results: %d lines, want %d", n, rows)
		}
		b.Logf("rows %d, %d at a time: wall %v, client CPU %v (%.1f µs/row), emulator CPU %v (%.1f µs/row), %d polls",
			rows, concurrency, wall.Round(time.Millisecond), clientCPU.Round(10*time.Millisecond),
			float64(clientCPU)/float64(time.Microsecond)/float64(rows), emuCPU.Round(10*time.Millisecond),
			float64(emuCPU)/float64(time.Microsecond)/float64(rows), after.Polls-before.Polls)
	}
	b.ReportMetric(float64(rows)/wall.Seconds(), "rows/s")
	b.ReportMetric(float64(clientCPU)/float64(time.Microsecond)/float64(rows), "cpu-µs/row")
	b.ReportMetric(float64(emuCPU)/float64(time.Microsecond)/float64(rows), "emulator-cpu-µs/row")
}

// countLines is the number of lines in the file at path, read a buffer at a time (a million
// answers are half a gigabyte).
func countLines(b *testing.B, path string) int {
	b.Helper()
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	n, buf := 0, make([]byte, 1<<20)
	for {
		k, err := f.Read(buf)
		n += bytes.Count(buf[:k], []byte{'\n'})
		if errors.Is(err, io.EOF) {
			return n
		}
		if err != nil {
			b.Fatal(err)
		}
	}
}
