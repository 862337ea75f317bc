package batch

import (
	"bufio"
	"bytes"
	"io"
)

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// lineReader splits a stream into lines of any length (bufio.Scanner would
// stop at 64 KiB) and tracks their offsets and numbers.
type lineReader struct {
	br   *bufio.Reader
	off  int64 // offset of the next unread byte
	line int   // number of the last line returned
	long []byte
}

// newLineReader reads r, whose first byte is at offset off and on line
// line+1. A UTF-8 BOM at offset 0 is skipped.
func newLineReader(r io.Reader, off int64, line int) *lineReader {
	lr := &lineReader{br: bufio.NewReaderSize(r, 64<<10), off: off, line: line}
	if off == 0 {
		if b, _ := lr.br.Peek(len(utf8BOM)); bytes.Equal(b, utf8BOM) {
			n, _ := lr.br.Discard(len(utf8BOM))
			lr.off += int64(n)
		}
	}
	return lr
}

// next returns the next line without its "\n" or "\r\n", the offset of its
// first byte and its number. The slice is valid until the next call.
func (lr *lineReader) next() (data []byte, start int64, line int, err error) {
	start = lr.off
	long := false
	for {
		chunk, err := lr.br.ReadSlice('\n')
		lr.off += int64(len(chunk))
		if err == bufio.ErrBufferFull {
			if !long {
				lr.long = lr.long[:0]
				long = true
			}
			lr.long = append(lr.long, chunk...)
			continue
		}
		if long {
			lr.long = append(lr.long, chunk...)
			chunk = lr.long
		}
		if err == io.EOF {
			if len(chunk) == 0 {
				return nil, start, 0, io.EOF
			}
		} else if err != nil {
			return nil, start, 0, err
		}
		lr.line++
		chunk = bytes.TrimSuffix(chunk, []byte("\n"))
		chunk = bytes.TrimSuffix(chunk, []byte("\r"))
		return chunk, start, lr.line, nil
	}
}
