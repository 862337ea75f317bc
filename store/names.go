package store

import (
	"fmt"
	"os"
)

// LoadNames reads the checkpoint at path (without locking it) and returns the latest N record of
// every row that has one, resolved or not. Unlike State.Named it holds the whole run, so it is
// for one-off passes over an earlier run, such as putting its answers in the result cache.
func LoadNames(path string) (map[int]Named, error) {
	st, err := Load(path)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load checkpoint: %w", err)
	}
	defer f.Close()
	all := make([]uint64, (st.Header.Rows+63)/64)
	for i := range all {
		all[i] = ^uint64(0)
	}
	names, err := namesOf(f, all)
	if err != nil {
		return nil, fmt.Errorf("load checkpoint %s: %w", path, err)
	}
	return names, nil
}
