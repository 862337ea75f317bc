package batch_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/batchgpt/batchgpt/batch"
)

// chunkInput is an input the chunk tests read, with the options it validates with.
type chunkInput struct {
	name, content string
	opt           batch.Options
}

func chunkInputs() []chunkInput {
	withSystem := defaults
	withSystem.SystemColumn = "system"
	var jsonl, crlf, csvMulti, csvBlank strings.Builder
	jsonl.WriteString("\n  \n")
	csvMulti.WriteString("\xef\xbb\xbfid,prompt,system\r\n\r\n")
	csvBlank.WriteString("id,prompt\n")
	for i := range 40 {
		fmt.Fprintf(&jsonl, "{\"id\": \"j%d\", \"prompt\": \"question %d%s\"}\n", i, i, strings.Repeat("?", i%7))
		if i%5 == 0 {
			jsonl.WriteString("\n \t\n")
		}
		fmt.Fprintf(&crlf, "{\"id\": \"c%d\", \"prompt\": \"Вопрос %d\"}\r\n", i, i)
		if i%4 == 1 {
			crlf.WriteString("\r\n")
		}
		fmt.Fprintf(&csvMulti, "m%d,\"line one of %d\r\nline \"\"two\"\"\nline three\",\"sys %d\"\r\n", i, i, i)
		if i%3 == 0 {
			csvMulti.WriteString("\r\n\r\n")
		}
		fmt.Fprintf(&csvBlank, "b%d,prompt %d\n", i, i)
		if i%6 == 2 {
			csvBlank.WriteString("\n")
		}
	}
	crlf.WriteString("{\"id\": \"last\", \"prompt\": \"no line end\"}")
	csvBlank.WriteString("\n\n")
	long := "{\"id\": \"short1\", \"prompt\": \"a\"}\n" +
		"{\"id\": \"long\", \"prompt\": \"" + strings.Repeat("x", 1500<<10) + "\"}\n" +
		"{\"id\": \"short2\", \"prompt\": \"b\"}\n{\"id\": \"short3\", \"prompt\": \"c\"}\n"
	return []chunkInput{
		{"blank.jsonl", jsonl.String(), defaults},
		{"crlf.jsonl", "\xef\xbb\xbf" + crlf.String(), defaults},
		{"multiline.csv", csvMulti.String(), withSystem},
		{"blank.csv", csvBlank.String(), defaults},
		// A row longer than what the chunker keeps while it waits for the next row.
		{"long.jsonl", long, defaults},
	}
}

var chunkSizes = []int64{1, 100, 700, 4096, batch.ChunkSize}

// wantChunks computes the chunk table of data independently: from the rows a full read gives, by
// the rule (a chunk starts at the first row at or past the previous chunk's start plus size).
func wantChunks(data []byte, rows []batch.Row, size int64) []batch.Chunk {
	var chunks []batch.Chunk
	chunks = append(chunks, batch.Chunk{Row: 0, Line: 1, Offset: 0})
	for i, r := range rows {
		if i == 0 || r.Offset >= chunks[len(chunks)-1].Offset+size {
			chunks = append(chunks, batch.Chunk{Row: r.Index, Line: r.Line, Offset: r.Offset})
		}
	}
	for k := range chunks {
		end := int64(len(data))
		if k+1 < len(chunks) {
			end = chunks[k+1].Offset
		}
		sum := sha256.Sum256(data[chunks[k].Offset:end])
		chunks[k].SHA256 = hex.EncodeToString(sum[:])
	}
	return chunks
}

// eachChunking runs check on every chunk input validated with every chunk size, with the rows a
// full read gives.
func eachChunking(t *testing.T, check func(t *testing.T, in chunkInput, path string, rows []batch.Row, size int64, sum batch.Summary)) {
	for _, in := range chunkInputs() {
		path := writeInput(t, in.name, in.content)
		rows := readAll(t, path, in.opt)
		for _, size := range chunkSizes {
			t.Run(fmt.Sprintf("%s/%d", in.name, size), func(t *testing.T) {
				t.Parallel()
				sum, err := batch.Validate(path, in.opt, 0, batch.WithChunkSize(size))
				if err != nil {
					t.Fatal(err)
				}
				check(t, in, path, rows, size, sum)
			})
		}
	}
}

func TestChunkTable(t *testing.T) {
	t.Parallel()
	eachChunking(t, func(t *testing.T, in chunkInput, path string, rows []batch.Row, size int64, sum batch.Summary) {
		want := wantChunks([]byte(in.content), rows, size)
		if !reflect.DeepEqual(sum.Chunks, want) {
			t.Fatalf("chunks\n%+v\nwant\n%+v", sum.Chunks, want)
		}
		if size == 1 && len(want) != len(rows)+1 {
			t.Fatalf("%d chunks of 1 byte for %d rows: the test tests little", len(want), len(rows))
		}
		// The passes of a run and of a resume cut the same table.
		if _, _, err := batch.ValidateDedup(path, in.opt, 0, "s", batch.WithChunkSize(size)); err != nil {
			t.Fatal(err)
		}
		sd, _, err := batch.ScanDedup(path, in.opt, "s", batch.WithChunkSize(size))
		if err != nil || !reflect.DeepEqual(sd.Chunks, want) {
			t.Fatalf("ScanDedup chunks %+v, %v", sd.Chunks, err)
		}
	})
}

// readFrom reads every row of r.
func readFrom(t *testing.T, r *batch.Reader) ([]batch.Row, error) {
	t.Helper()
	defer r.Close()
	var rows []batch.Row
	for {
		row, err := r.Next()
		if err == io.EOF {
			return rows, nil
		}
		if err != nil {
			return rows, err
		}
		rows = append(rows, row)
	}
}

func TestOpenChunksReadsWhatAFullReadDoes(t *testing.T) {
	t.Parallel()
	eachChunking(t, func(t *testing.T, in chunkInput, path string, rows []batch.Row, size int64, sum batch.Summary) {
		for from := 0; from <= len(rows)+1; from++ {
			r, err := batch.OpenChunks(path, in.opt, sum.Size, sum.Chunks, from)
			if err != nil {
				t.Fatal(err)
			}
			got, err := readFrom(t, r)
			if err != nil {
				t.Fatalf("from row %d: %v", from, err)
			}
			want := rows[min(from, len(rows)):]
			if len(got) == 0 && len(want) == 0 {
				continue
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("from row %d: %d rows\n%s\nwant %d\n%s", from, len(got), formatRows(got), len(want), formatRows(want))
			}
		}
	})
}

// changeAt returns content with the byte at off replaced by another of the same class (a digit
// by another digit, a letter by another letter), so that the file stays valid.
func changeAt(t *testing.T, content string, off int64) string {
	t.Helper()
	b := []byte(content)
	switch c := b[off]; {
	case c >= '0' && c <= '8', c >= 'a' && c <= 'y':
		b[off]++
	case c == '9', c == 'z':
		b[off]--
	default:
		t.Fatalf("byte %q at %d: not a digit or a letter", c, off)
	}
	return string(b)
}

// chunked writes in, reads its rows and validates it in chunks of 300 bytes; off is where the
// id of the first row of chunk 3 has its first digit, which the tests that change a chunk change.
func chunked(t *testing.T, in chunkInput) (path string, rows []batch.Row, sum batch.Summary, off int64) {
	t.Helper()
	path = writeInput(t, in.name, in.content)
	rows = readAll(t, path, in.opt)
	sum, err := batch.Validate(path, in.opt, 0, batch.WithChunkSize(300))
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Chunks) < 5 {
		t.Fatalf("%d chunks: the test tests little", len(sum.Chunks))
	}
	return path, rows, sum, sum.Chunks[3].Offset + int64(strings.IndexAny(in.content[sum.Chunks[3].Offset:], "0123456789"))
}

func TestOpenChunksChanged(t *testing.T) {
	t.Parallel()
	for _, in := range chunkInputs()[:3] {
		t.Run(in.name, func(t *testing.T) {
			t.Parallel()
			path, rows, sum, off := chunked(t, in)
			changed := sum.Chunks[3]
			if err := os.WriteFile(path, []byte(changeAt(t, in.content, off)), 0o600); err != nil {
				t.Fatal(err)
			}

			// From a row past the change: the chunk that changed is not read.
			r, err := batch.OpenChunks(path, in.opt, sum.Size, sum.Chunks, sum.Chunks[4].Row)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := readFrom(t, r); err != nil || !reflect.DeepEqual(got, rows[sum.Chunks[4].Row:]) {
				t.Fatalf("reading past the change: %d rows, %v", len(got), err)
			}

			// From a row before it: the rows up to the chunk that changed, then the error.
			from := sum.Chunks[1].Row + 1
			r, err = batch.OpenChunks(path, in.opt, sum.Size, sum.Chunks, from)
			if err != nil {
				t.Fatal(err)
			}
			got, err := readFrom(t, r)
			var ce *batch.ChangedError
			if !errors.As(err, &ce) || ce.Chunk != 3 || ce.FirstLine != changed.Line || ce.LastLine != sum.Chunks[4].Line-1 {
				t.Fatalf("reading across the change: %v (%+v), want chunk 3's lines %d-%d", err, ce, changed.Line, sum.Chunks[4].Line-1)
			}
			if !reflect.DeepEqual(got, rows[from:changed.Row]) {
				t.Fatalf("rows before the change: %d, want %d (rows %d to %d)", len(got), changed.Row-from, from, changed.Row-1)
			}
			if want := fmt.Sprintf("lines %d-%d differ", changed.Line, sum.Chunks[4].Line-1); !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("error %q: want the file and %q", err, want)
			}
		})
	}
}

// TestSkipChunks: a reader told which chunks need nothing returns exactly the rows of the others,
// for every pattern of chunks needed, and never reads a skipped chunk: a change there goes unseen,
// while one in a chunk it reads is reported before any of its rows.
func TestSkipChunks(t *testing.T) {
	t.Parallel()
	eachChunking(t, func(t *testing.T, in chunkInput, path string, rows []batch.Row, size int64, sum batch.Summary) {
		cs := sum.Chunks[1:] // the chunks of rows (chunk 0 is the preamble)
		if len(cs) > 7 {
			cs = cs[:7] // 128 patterns are enough
		}
		for pattern := range 1 << len(cs) {
			// needed(first) reports whether the chunk starting at row first is in the pattern; the
			// chunks past the seventh are always needed.
			needed := func(first int) bool {
				for k, c := range cs {
					if c.Row == first {
						return pattern&(1<<k) != 0
					}
				}
				return true
			}
			var want []batch.Row
			for _, row := range rows {
				k := 0
				for k+1 < len(sum.Chunks) && sum.Chunks[k+1].Row <= row.Index {
					k++
				}
				if k == 1 || needed(sum.Chunks[k].Row) { // from row 0: its chunk is read
					want = append(want, row)
				}
			}
			r, err := batch.OpenChunks(path, in.opt, sum.Size, sum.Chunks, 0)
			if err != nil {
				t.Fatal(err)
			}
			r.SkipChunks(func(from int) int {
				if !slices.ContainsFunc(sum.Chunks[1:], func(c batch.Chunk) bool { return c.Row == from }) {
					t.Fatalf("asked from row %d, which starts no chunk", from)
				}
				for _, row := range want {
					if row.Index >= from {
						return row.Index
					}
				}
				return -1
			})
			got, err := readFrom(t, r)
			if err != nil {
				t.Fatalf("pattern %b: %v", pattern, err)
			}
			if len(got)+len(want) > 0 && !reflect.DeepEqual(got, want) {
				t.Fatalf("pattern %b: %d rows, want %d", pattern, len(got), len(want))
			}
		}
	})
	for _, in := range chunkInputs()[:3] {
		t.Run(in.name+"/changed", func(t *testing.T) {
			t.Parallel()
			path, rows, sum, off := chunked(t, in)
			if err := os.WriteFile(path, []byte(changeAt(t, in.content, off)), 0o600); err != nil {
				t.Fatal(err)
			}
			open := func(skip3 bool) ([]batch.Row, error) {
				r, err := batch.OpenChunks(path, in.opt, sum.Size, sum.Chunks, 0)
				if err != nil {
					t.Fatal(err)
				}
				r.SkipChunks(func(from int) int {
					if skip3 && from >= sum.Chunks[3].Row && from < sum.Chunks[4].Row {
						from = sum.Chunks[4].Row
					}
					if from >= len(rows) {
						return -1
					}
					return from
				})
				return readFrom(t, r)
			}
			// Chunk 3 skipped: every other row, no error.
			got, err := open(true)
			want := append(slices.Clone(rows[:sum.Chunks[3].Row]), rows[sum.Chunks[4].Row:]...)
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("chunk 3 skipped: %d rows, %v; want %d rows", len(got), err, len(want))
			}
			// Chunk 3 needed: the rows before it, then the change.
			got, err = open(false)
			var ce *batch.ChangedError
			if !errors.As(err, &ce) || ce.Chunk != 3 || !reflect.DeepEqual(got, rows[:sum.Chunks[3].Row]) {
				t.Fatalf("chunk 3 read: %d rows, %v; want %d rows and chunk 3 changed", len(got), err, sum.Chunks[3].Row)
			}
		})
	}
}

func TestOpenChunksPreambleAndSize(t *testing.T) {
	t.Parallel()
	withSystem := defaults
	withSystem.SystemColumn = "system"
	content := "id,prompt,system\r\n\r\n1,a,s\r\n2,b,t\r\n"
	path := writeInput(t, "in.csv", content)
	sum, err := batch.Validate(path, withSystem, 0, batch.WithChunkSize(1))
	if err != nil {
		t.Fatal(err)
	}
	if err := batch.CheckPreamble(path, sum.Size, sum.Chunks); err != nil {
		t.Fatalf("CheckPreamble of the same file: %v", err)
	}
	for _, tc := range []struct {
		name, content string
		chunk         int
	}{
		{"header", strings.Replace(content, "system", "systen", 1), 0},
		{"blank line", strings.Replace(content, "\r\n\r\n", "\r\n \n", 1), 0},
		{"longer", content + "3,c,u\r\n", -1},
		{"shorter", strings.TrimSuffix(content, "\r\n"), -1},
		{"last row", strings.Replace(content, "2,b", "2,c", 1), 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := writeInput(t, "in.csv", tc.content)
			var ce *batch.ChangedError
			err := batch.CheckPreamble(p, sum.Size, sum.Chunks)
			if tc.chunk > 0 {
				if err != nil {
					t.Fatalf("CheckPreamble: %v; only a row changed", err)
				}
				r, err := batch.OpenChunks(p, withSystem, sum.Size, sum.Chunks, 0)
				if err != nil {
					t.Fatal(err)
				}
				_, err = readFrom(t, r)
				if !errors.As(err, &ce) || ce.Chunk != tc.chunk || ce.LastLine != 0 {
					t.Fatalf("read: %v, want chunk %d changed", err, tc.chunk)
				}
				return
			}
			if !errors.As(err, &ce) || ce.Chunk != tc.chunk {
				t.Fatalf("CheckPreamble: %v, want chunk %d changed", err, tc.chunk)
			}
			if _, err := batch.OpenChunks(p, withSystem, sum.Size, sum.Chunks, 0); !errors.As(err, &ce) || ce.Chunk != tc.chunk {
				t.Fatalf("OpenChunks: %v, want chunk %d changed", err, tc.chunk)
			}
		})
	}
}

func TestOpenChunksBadTable(t *testing.T) {
	t.Parallel()
	path := writeInput(t, "in.jsonl", "{\"prompt\": \"a\"}\n{\"prompt\": \"b\"}\n")
	sum, err := batch.Validate(path, defaults, 0, batch.WithChunkSize(1))
	if err != nil {
		t.Fatal(err)
	}
	swapped := append([]batch.Chunk(nil), sum.Chunks...)
	swapped[1], swapped[2] = swapped[2], swapped[1]
	noHash := append([]batch.Chunk(nil), sum.Chunks...)
	noHash[2].SHA256 = ""
	for name, chunks := range map[string][]batch.Chunk{"none": nil, "swapped": swapped, "no hash": noHash, "no preamble": sum.Chunks[1:]} {
		if _, err := batch.OpenChunks(path, defaults, sum.Size, chunks, 0); err == nil || !strings.Contains(err.Error(), "chunk table") {
			t.Errorf("%s: %v, want a chunk table error", name, err)
		}
	}
}

// rowOrErr is what one Next gave.
type rowOrErr struct {
	row batch.Row
	err string
}

// readEvery reads r to its end, rows with problems too.
func readEvery(t *testing.T, r *batch.Reader) []rowOrErr {
	t.Helper()
	defer r.Close()
	var out []rowOrErr
	for {
		row, err := r.Next()
		if err == io.EOF {
			return out
		}
		var ie *batch.InputError
		if err != nil && !errors.As(err, &ie) {
			t.Fatalf("Next: %v", err)
		}
		e := ""
		if err != nil {
			e = err.Error()
		}
		out = append(out, rowOrErr{row, e})
	}
}

// fuzzChunks checks that the chunk table of any input is that of its rows, and that reading from
// any of its rows through the table gives what a full read gives from there.
func fuzzChunks(t *testing.T, name string, data []byte, opt batch.Options, size uint8) {
	path := writeInput(t, name, string(data))
	sum, verr := batch.Validate(path, opt, 10, batch.WithChunkSize(int64(size)+1))
	var ve *batch.ValidationError
	if verr != nil && !errors.As(verr, &ve) {
		t.Fatalf("Validate: %v", verr)
	}
	full, err := batch.Open(path, opt)
	if err != nil {
		if want := wantChunks(data, nil, 1); !reflect.DeepEqual(sum.Chunks, want) {
			t.Fatalf("chunks of a file without rows %+v, want %+v", sum.Chunks, want)
		}
		return
	}
	all := readEvery(t, full)
	rows := make([]batch.Row, len(all))
	for i, r := range all {
		rows[i] = r.row
	}
	if want := wantChunks(data, rows, int64(size)+1); !reflect.DeepEqual(sum.Chunks, want) {
		t.Fatalf("chunks %+v, want %+v", sum.Chunks, want)
	}
	if verr != nil {
		return // a resume reads only inputs that validated
	}
	for from := range len(all) + 1 {
		r, err := batch.OpenChunks(path, opt, sum.Size, sum.Chunks, from)
		if err != nil {
			t.Fatalf("OpenChunks: %v", err)
		}
		if got := readEvery(t, r); !reflect.DeepEqual(got, all[from:]) && len(got)+len(all[from:]) > 0 {
			t.Fatalf("from row %d: %+v\nwant %+v", from, got, all[from:])
		}
	}
}

// seedChunks adds each seed input with the smallest chunk size and with size.
func seedChunks(f *testing.F, size uint8, seeds ...string) {
	for _, s := range seeds {
		f.Add([]byte(s), uint8(0))
		f.Add([]byte(s), size)
	}
}

func FuzzChunksJSONL(f *testing.F) {
	seedChunks(f, 20,
		"{\"prompt\": \"hi\"}\n",
		"\n\n{\"id\": 7, \"prompt\": \"a\", \"system\": \"s\"}\r\n\r\n{\"id\": \"7\", \"prompt\": \"b\"}",
		"\xef\xbb\xbf{\"prompt\": \"a\"}\n  \n{\"prompt\": \"b\"}\r\n\t\n{\"prompt\": \"c\"}\n\n",
		"{\"prompt\": \"a\xff\"}\n\n\n{\"promt\": 1}\n[]\nnull\n{")
	f.Fuzz(func(t *testing.T, data []byte, size uint8) {
		fuzzChunks(t, "in.jsonl", data, defaults, size)
	})
}

func FuzzChunksCSV(f *testing.F) {
	seedChunks(f, 9,
		"id,prompt\n1,hello\n2,there\n",
		"\xef\xbb\xbfid,prompt,system\r\n\r\n1,\"a\r\nb\",s\r\n\r\n2,\"say \"\"hi\"\"\",\r\n\r\n",
		"prompt\n\"unterminated\n",
		"id,prompt\n1,a,b\n2\n3,\"x\"y\n,\xff\n4,\"multi\n\nline\"\n")
	f.Fuzz(func(t *testing.T, data []byte, size uint8) {
		opt := defaults
		opt.SystemColumn = ""
		fuzzChunks(t, "in.csv", data, opt, size)
	})
}
