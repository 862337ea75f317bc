package store

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
)

// SetSettings replaces the settings of the checkpoint's header, after
// everything queued before it is durable. The journal is rewritten through a
// temp file and a rename, as Compact does, but record for record: only the
// header changes, every other record is copied as it is (so the N records of
// resolved rows, which a snapshot drops, stay). It costs a copy of the
// journal, for a change made once per process at most (a resume that changes
// the run's spend limits).
func (w *Writer) SetSettings(settings json.RawMessage) error {
	if !json.Valid(settings) {
		return fmt.Errorf("checkpoint %s: settings are not valid JSON", w.path)
	}
	return w.wait(request{kind: kindSettingsQ, line: append([]byte(nil), settings...)})
}

// setSettings runs in the writer goroutine, alone (see run).
func (w *Writer) setSettings(settings []byte) error {
	if err := w.sticky(); err != nil {
		return err
	}
	in, err := os.Open(w.path)
	if err != nil {
		return fmt.Errorf("rewrite checkpoint header %s: %w", w.path, err)
	}
	defer in.Close()
	br := bufio.NewReaderSize(in, 1<<20)
	first, err := br.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("rewrite checkpoint header %s: read header: %w", w.path, err)
	}
	payload, err := checkRecord(first[:len(first)-1])
	if err != nil || len(payload) < 2 || payload[0] != kindHeader {
		return fmt.Errorf("rewrite checkpoint header %s: %w", w.path, ErrNoHeader)
	}
	var dh diskHeader
	if err := json.Unmarshal(payload[2:], &dh); err != nil {
		return fmt.Errorf("rewrite checkpoint header %s: %w", w.path, err)
	}
	// The version stays: the records after the header are copied, not rewritten.
	dh.Settings = settings
	hdr, err := json.Marshal(dh)
	if err != nil {
		return fmt.Errorf("rewrite checkpoint header %s: %w", w.path, err)
	}
	err = writeFileAtomic(&w.hooks, w.path, func(out io.Writer) error {
		if _, err := out.Write(appendHeaderRecord(nil, hdr)); err != nil {
			return err
		}
		_, err := io.Copy(out, br)
		return err
	})
	if err != nil {
		// The old journal is intact and still open: nothing is lost.
		return fmt.Errorf("rewrite checkpoint header %s: %w", w.path, err)
	}
	w.header.Settings = settings
	return w.reopenJournal()
}
