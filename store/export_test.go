package store

import (
	"encoding/json"
	"io"
	"os"
)

// Hooks for the black-box tests in package store_test.

type File = file

// LoadReader loads a checkpoint from r, as Load does from a file.
func LoadReader(r io.Reader) (*State, error) { return load(r) }

// SetCreateTemp replaces the temp-file seam until restore is called.
func SetCreateTemp(f func(dir, pattern string) (*os.File, error)) (restore func()) {
	old := createTemp
	createTemp = f
	return func() { createTemp = old }
}

// SetWrapFile replaces the writer's file seam until restore is called.
func SetWrapFile(f func(*os.File) File) (restore func()) {
	old := wrapFile
	wrapFile = f
	return func() { wrapFile = old }
}

// Record frames payload as a journal line: payload, checksum, newline.
func Record(payload string) []byte {
	return appendSum([]byte(payload), 0)
}

// HeaderRecord returns the header line Create writes for h and preamble.
func HeaderRecord(h Header, preamble []byte) []byte {
	b, err := json.Marshal(diskHeader{Header: h, ResultsPreamble: preamble})
	if err != nil {
		panic(err)
	}
	return appendHeaderRecord(nil, b)
}

// SetMaxRecord changes the longest journal line accepted until restore is
// called.
func SetMaxRecord(n int) (restore func()) {
	old := maxRecord
	maxRecord = n
	return func() { maxRecord = old }
}
