package job_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/internal/emulator"
	"github.com/batchgpt/batchgpt/internal/job"
)

// goldenDir is where the checkpoints of testdata/checkpoints were made; their headers name it.
const goldenDir = "/tmp/batchgpt-golden"

// Checkpoints written by earlier versions of batchgpt keep their meaning and resume to the end with
// this one. Their directories are never edited: a new version adds its own.
func TestCheckpointsOfEarlierVersions(t *testing.T) {
	runs, err := filepath.Glob("testdata/checkpoints/*/*/in.checkpoint.json")
	if err != nil || len(runs) == 0 {
		t.Fatalf("no golden checkpoints: %v", err)
	}
	for _, golden := range runs {
		src := filepath.Dir(golden)
		t.Run(strings.TrimPrefix(src, "testdata/checkpoints/"), func(t *testing.T) {
			dir := t.TempDir()
			for _, name := range []string{"in.csv", "in.jsonl", "in.results.csv", "in.results.jsonl", "in.checkpoint.json"} {
				data, err := os.ReadFile(filepath.Join(src, name))
				if os.IsNotExist(err) {
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				if name == "in.checkpoint.json" {
					data = moveHeader(t, data, filepath.Join(goldenDir, filepath.Base(src)), dir)
				}
				if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			ckpt := filepath.Join(dir, "in.checkpoint.json")

			// The settings mean what they meant.
			var h struct {
				Rows     int             `json:"rows"`
				Results  string          `json:"results"`
				Settings json.RawMessage `json:"settings"`
			}
			header, _, _ := bytes.Cut(mustRead(t, ckpt), []byte("\n"))
			if err := json.Unmarshal(headerJSON(t, header), &h); err != nil {
				t.Fatal(err)
			}
			var got, want job.Settings
			if err := json.Unmarshal(h.Settings, &got); err != nil {
				t.Fatalf("settings of an earlier version: %v", err)
			}
			if err := json.Unmarshal(mustRead(t, filepath.Join(src, "want-settings.json")), &want); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				g, _ := json.Marshal(got)
				w, _ := json.Marshal(want)
				t.Errorf("settings read as\n%s\nwant\n%s", g, w)
			}

			// And the run resumes to the end: every row once, succeeded.
			_, url := startEmulator(t, emulator.Config{})
			cfg := job.Config{Checkpoint: ckpt, Settings: job.Settings{Endpoint: url, OperationsEndpoint: url},
				Tuning: config(dir, "", url).Tuning, Credentials: config(dir, "", url).Credentials}
			sum, err := job.New(cfg).Resume(context.Background())
			if err != nil {
				t.Fatalf("resume: %v", err)
			}
			if sum.Succeeded != h.Rows || sum.Failed != 0 || sum.Pending != 0 {
				t.Fatalf("resume: %+v; want %d rows succeeded", sum, h.Rows)
			}
			st, err := job.ReadStatus(ckpt, 0, 0, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if st.Succeeded != h.Rows {
				t.Fatalf("status after the resume: %+v", st)
			}
		})
	}
}

// moveHeader rewrites the paths in a checkpoint's header record from one directory to another,
// with the record's checksum (CRC-32C of the payload, 8 hex digits).
func moveHeader(t *testing.T, data []byte, from, to string) []byte {
	t.Helper()
	header, rest, _ := bytes.Cut(data, []byte("\n"))
	payload := bytes.ReplaceAll(headerJSON(t, header), []byte(from), []byte(to))
	rec := append([]byte("H "), payload...)
	sum := crc32.Checksum(rec, crc32.MakeTable(crc32.Castagnoli))
	return append(fmt.Appendf(rec, " %08x\n", sum), rest...)
}

// headerJSON is the JSON of a header record "H <json> <crc>".
func headerJSON(t *testing.T, rec []byte) []byte {
	t.Helper()
	i := bytes.LastIndexByte(rec, ' ')
	if !bytes.HasPrefix(rec, []byte("H ")) || i < 2 {
		t.Fatalf("not a header record: %.80s", rec)
	}
	return rec[2:i]
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
