package batchjob

import (
	"context"
	"fmt"

	"github.com/batchgpt/batchgpt/batch"
	"github.com/batchgpt/batchgpt/internal/job"
)

// Plan is what a batch run of an input would upload: nothing is sent to make it.
type Plan struct {
	Rows       int   `json:"rows"`
	Cached     int   `json:"cached"`     // rows the result cache answers
	Duplicates int   `json:"duplicates"` // rows that repeat an earlier row's request: answered with it
	Upload     int   `json:"upload_rows"`
	Bytes      int64 `json:"upload_bytes"` // the dataset's size
	// Model is the task's model URI. The price of batch mode is not in docs/api.md: no cost is
	// estimated.
	Model string `json:"model"`
}

// DryRun validates cfg's input as Run would and says what it would upload.
func DryRun(ctx context.Context, cfg Config) (Plan, error) {
	e := New(cfg)
	sum, err := batch.Validate(cfg.Input, cfg.Settings.Input, e.cfg.MaxInputErrors)
	if err != nil {
		return Plan{}, err
	}
	t, err := readTable(cfg.Input, cfg.Settings.Input, e.cacheScope(), sum.Rows, e.cfg.MaxInputErrors)
	if err != nil {
		return Plan{}, err
	}
	p := Plan{Rows: sum.Rows, Model: t.model}
	upload := make([]uint64, (sum.Rows+63)/64)
	var leaders []int32
	for i, l := range t.leader {
		if l == int32(i) {
			leaders = append(leaders, l)
		} else {
			p.Duplicates++
		}
	}
	s := cfg.Settings
	for len(leaders) > 0 {
		part := leaders[:min(lookupBatch, len(leaders))]
		leaders = leaders[len(part):]
		var found []bool
		if cfg.Cache != nil && !s.NoCache && !s.Refresh {
			keys := make([]batch.Key, len(part))
			for i, r := range part {
				keys[i] = t.cacheKey[r]
			}
			hits, err := job.CacheLookup(ctx, cfg.Cache, keys, cfg.CacheTTL, s.AcceptFiltered)
			if err != nil {
				return Plan{}, fmt.Errorf("result cache: %w", err)
			}
			found = make([]bool, len(part))
			for i, h := range hits {
				found[i] = h != nil
			}
		}
		for i, r := range part {
			if found != nil && found[i] {
				p.Cached += 1 + len(t.followers[r])
				p.Duplicates -= len(t.followers[r])
				continue
			}
			upload[r/64] |= 1 << (r % 64)
			p.Upload++
		}
	}
	var n countingWriter
	if err := writeDataset(&n, cfg.Input, cfg.Settings.Input, upload); err != nil {
		return Plan{}, err
	}
	p.Bytes = int64(n)
	return p, nil
}

type countingWriter int64

func (c *countingWriter) Write(p []byte) (int, error) {
	*c += countingWriter(len(p))
	return len(p), nil
}
