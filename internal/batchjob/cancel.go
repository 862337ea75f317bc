package batchjob

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/batchgpt/batchgpt/internal/batchapi"
	"github.com/batchgpt/batchgpt/store"
)

// Status is what a batch run's checkpoint says of it, as `batchgpt status` shows it.
type Status struct {
	Endpoint  string   `json:"endpoint"`
	Datasets  []string `json:"datasets,omitempty"` // every dataset of the run, in order
	Dataset   string   `json:"dataset,omitempty"`  // the current one
	Task      string   `json:"task,omitempty"`
	Status    string   `json:"status,omitempty"` // the task's, as last seen
	Completed int64    `json:"completed_batches"`
	Total     int64    `json:"total_batches"`
	Step      string   `json:"step"` // the last step journaled
	Fetched   bool     `json:"results_fetched"`
	Cancelled bool     `json:"cancelled,omitempty"`
	Cleaned   bool     `json:"cleaned,omitempty"`
}

// StatusOf reads the steps of a batch run's checkpoint.
func StatusOf(st *store.State) (Status, error) {
	var s Settings
	if err := json.Unmarshal(st.Header.Settings, &s); err != nil {
		return Status{}, fmt.Errorf("settings: %w", err)
	}
	j, err := replay(st.Steps, st.Header.Rows)
	if err != nil {
		return Status{}, err
	}
	out := Status{Endpoint: s.Endpoint, Task: j.task, Status: j.status, Completed: j.completed, Total: j.total,
		Fetched: j.fetched, Cancelled: j.cancel, Cleaned: j.cleaned}
	for _, g := range j.gens {
		if g.dataset != "" {
			out.Datasets = append(out.Datasets, g.dataset)
			out.Dataset = g.dataset
		}
	}
	if n := len(st.Steps); n > 0 {
		var last step
		if json.Unmarshal(st.Steps[n-1], &last) == nil {
			out.Step = last.Step
		}
	}
	return out, nil
}

// ErrRunning means a process is running the batch run: it holds the checkpoint.
var ErrRunning = errors.New("a batchgpt process is running this batch run")

// Cancel stops a batch run's task, then journals it: a resume then fails the rows still open as
// cancelled, and never starts a task. Without a task yet, only the journal says so. While a process
// runs the batch run (it holds the checkpoint), only its task is cancelled: that process sees the
// task CANCELED. dial connects to the run's endpoint and folder.
func Cancel(ctx context.Context, checkpoint string, dial func(Settings) (*batchapi.Client, error)) (task string, err error) {
	w, st, err := store.Open(checkpoint)
	if errors.Is(err, store.ErrLocked) {
		// The running process journals what it sees: cancelling its task is enough.
		st, lerr := store.Load(checkpoint)
		if lerr != nil {
			return "", lerr
		}
		return cancelTask(ctx, st, dial, fmt.Errorf("%w: stop it first, or wait until its task has started", ErrRunning))
	}
	if err != nil {
		return "", err
	}
	defer func() {
		if cerr := w.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if !IsBatch(st.Header) {
		return "", fmt.Errorf("checkpoint %s is not a batch run's", checkpoint)
	}
	j, err := replay(st.Steps, st.Header.Rows)
	if err != nil {
		return "", err
	}
	if j.fetched {
		return j.task, fmt.Errorf("checkpoint %s: the run's results are in; nothing to cancel", checkpoint)
	}
	if j.task != "" {
		// The call first: the journal says cancelled only of a task the API agreed to stop (a
		// crash in between leaves a task the resume finds CANCELED anyway).
		if _, err := cancelTask(ctx, st, dial, nil); err != nil {
			return j.task, err
		}
	}
	return j.task, j.record(w, step{Step: stepCancel, Task: j.task}, st.Header.Rows)
}

func cancelTask(ctx context.Context, st *store.State, dial func(Settings) (*batchapi.Client, error), noTask error) (string, error) {
	var s Settings
	if err := json.Unmarshal(st.Header.Settings, &s); err != nil {
		return "", fmt.Errorf("settings: %w", err)
	}
	j, err := replay(st.Steps, st.Header.Rows)
	if err != nil {
		return "", err
	}
	if j.task == "" {
		return "", noTask
	}
	c, err := dial(s)
	if err != nil {
		return j.task, err
	}
	defer c.Close()
	if err := c.CancelTask(ctx, j.task); err != nil {
		return j.task, fmt.Errorf("cancel batch task %s: %w", j.task, err)
	}
	return j.task, nil
}
