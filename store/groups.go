package store

import (
	"encoding/base64"
)

// The G records keep the run's groups of rows that send the same request (which rows follow which
// leader, and where they are in the input), so that a resume need not read the whole input again
// to find them: its time then follows the rows left, not the rows done. The store keeps them as
// one opaque blob, cut into records; what they hold belongs to the caller (the batch package
// encodes and checks them).

// groupsPerRecord bounds the bytes of blob in one G record, well inside maxRecord once encoded.
const groupsPerRecord = 48 << 10

// Groups makes Create journal blob, the run's groups of duplicate rows, right after the header
// (as part of the checkpoint's atomic creation); State.Groups returns it on every load.
func Groups(blob []byte) Option { return func(h *hooks) { h.groups = blob } }

// Groups returns the blob given to Create with the Groups option (nil if none).
func (s *State) Groups() []byte { return s.groups }

// appendGroups appends the G records of blob.
func appendGroups(dst, blob []byte) []byte {
	for len(blob) > 0 {
		n := min(len(blob), groupsPerRecord)
		start := len(dst)
		dst = append(dst, kindGroups, ' ')
		dst = base64.RawStdEncoding.AppendEncode(dst, blob[:n])
		dst = appendSum(dst, start)
		blob = blob[n:]
	}
	return dst
}

// parseGroups decodes the payload of a G record, appending it to dst.
func parseGroups(p []byte, dst []byte) ([]byte, error) {
	if len(p) < 3 {
		return dst, errSyntax
	}
	out, err := base64.RawStdEncoding.AppendDecode(dst, p[2:])
	if err != nil || len(out) == len(dst) {
		return dst, errSyntax
	}
	return out, nil
}
