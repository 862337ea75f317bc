package store

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// EachNamed calls fn with every N record of the checkpoint at path (read without locking it), in
// the journal's order: a row named again (reopened, then submitted anew) comes once per record,
// its latest last. Unlike State.Named it covers the resolved rows too, those named since the last
// snapshot (a snapshot keeps the names of open rows only), and it holds none of them: a pass over
// an earlier run, such as putting its answers in the result cache, keeps what it needs of each,
// which at ten million rows is far less than a map of Named. Records that fail their checksum
// are skipped, as a load skips them; an error from fn ends the pass and is returned, wrapped.
func EachNamed(path string, fn func(row int, n Named) error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read names: %w", err)
	}
	defer f.Close()
	if err := eachNamed(f, fn); err != nil {
		return fmt.Errorf("read names of %s: %w", path, err)
	}
	return nil
}

func eachNamed(r io.Reader, fn func(row int, n Named) error) error {
	jr := newJournalReader(r)
	dh, err := readHeader(jr)
	if err != nil {
		return err
	}
	var model string // the last one seen: a run names few models, so each is allocated once
	for {
		_, _, reason, err := jr.next(nil) // checks the record, parses nothing
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if reason != nil || jr.payload[0] != kindNamed {
			continue
		}
		r, perr := parseRecord(jr.payload, dh.Rows)
		if perr != nil {
			continue
		}
		if string(r.model) != model { // no allocation to compare
			model = string(r.model)
		}
		if err := fn(r.row, Named{ID: r.id, Key: r.key, Model: model}); err != nil {
			return err
		}
	}
}
