package batch

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"testing"
)

// countingReaderAt counts the reads of a chunker that did not keep its waiting bytes.
type countingReaderAt struct {
	r     *bytes.Reader
	reads int
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	c.reads++
	return c.r.ReadAt(p, off)
}

// Rows of ordinary length never make the chunker read the file again: what it waits with is
// the read-ahead past a chunk's limit, not the whole chunk.
func TestChunkerKeepsOnlyTheReadAhead(t *testing.T) {
	t.Parallel()
	var data bytes.Buffer
	var starts []int64
	for i := 0; data.Len() < 5<<20; i++ {
		starts = append(starts, int64(data.Len()))
		fmt.Fprintf(&data, "{\"prompt\": \"row %d\"}\n", i)
	}
	f := &countingReaderAt{r: bytes.NewReader(data.Bytes())}
	const size = 1 << 20
	c := newChunker(f, size)
	next, maxPend := 0, 0
	for off := 0; off < data.Len(); off += 64 << 10 {
		c.Write(data.Bytes()[off:min(off+64<<10, data.Len())])
		// The scanner reports the rows that the bytes read so far hold, one of them unfinished.
		for ; next < len(starts) && starts[next] < c.n; next++ {
			if err := c.row(rowPos{index: next, line: next + 1, offset: starts[next]}); err != nil {
				t.Fatal(err)
			}
			maxPend = max(maxPend, len(c.pend))
		}
	}
	chunks, err := c.finish()
	if err != nil {
		t.Fatal(err)
	}
	if f.reads != 0 || maxPend > 64<<10 {
		t.Fatalf("%d reads of the file, up to %d bytes waiting: want none, and no more than a read", f.reads, maxPend)
	}
	if len(chunks) != 6 { // the (empty) preamble, four of 1 MiB and the rest
		t.Fatalf("%d chunks, want 6", len(chunks))
	}
	for k, ch := range chunks {
		end := int64(data.Len())
		if k+1 < len(chunks) {
			end = chunks[k+1].Offset
		}
		if sum := sha256.Sum256(data.Bytes()[ch.Offset:end]); hex.EncodeToString(sum[:]) != ch.SHA256 {
			t.Fatalf("chunk %d: wrong hash", k)
		}
	}
}
