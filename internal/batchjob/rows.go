package batchjob

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/batchgpt/batchgpt/batch"
	"github.com/batchgpt/batchgpt/internal/batchapi"
)

// table is what the engine keeps of the input: each row's id, the row whose request it repeats,
// and each distinct request's keys. A few dozen bytes a row.
type table struct {
	ids []string
	// leader[i] is the first row that sends the same request as row i (i itself for most).
	leader []int32
	// byContent maps a request's content (batchapi.RequestKey) to its leader: how result rows
	// find their input rows (docs/api.md §9).
	byContent map[[32]byte]int32
	// cacheKey is each leader's key in the result cache (batch.RequestKey of the request the
	// asynchronous backend would send), so the two backends share answers; nil without a cache.
	cacheKey  map[int32]batch.Key
	followers map[int32][]int32
	spec      batchapi.TaskSpec
	model     string
}

// body is what the engine reads of a request built by package batch (the completionAsync body).
type body struct {
	ModelURI          string `json:"modelUri"`
	CompletionOptions struct {
		Temperature      *float64        `json:"temperature"`
		MaxTokens        string          `json:"maxTokens"`
		ReasoningOptions json.RawMessage `json:"reasoningOptions"`
	} `json:"completionOptions"`
	Messages   []batchapi.Message `json:"messages"`
	JSONSchema json.RawMessage    `json:"jsonSchema"`
	JSONObject bool               `json:"jsonObject"`
}

func parseBody(b []byte) (*body, error) {
	var out body
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("internal: request body: %w", err)
	}
	return &out, nil
}

// readTable reads the validated input once; scope is that of the cache keys ("": no cache). A batch task has one model and one set of
// completion options for all its rows (docs/api.md §9), so a row that asks for others, or for
// what the batch request cannot carry (structured output, reasoning), is an input error, reported
// like the others before anything is sent.
func readTable(path string, opt batch.Options, scope string, rows, maxErrors int) (*table, error) {
	rd, err := batch.Open(path, opt)
	if err != nil {
		return nil, fmt.Errorf("open input: %w", err)
	}
	defer rd.Close()
	t := &table{ids: make([]string, 0, rows), leader: make([]int32, 0, rows),
		byContent: make(map[[32]byte]int32, rows), followers: map[int32][]int32{}}
	if scope != "" {
		t.cacheKey = make(map[int32]batch.Key, rows)
	}
	ve := &batch.ValidationError{File: path}
	bad := func(line int, field, msg string) {
		if len(ve.Errors) < maxErrors {
			ve.Errors = append(ve.Errors, &batch.InputError{File: path, Line: line, Field: field, Msg: msg})
		} else {
			ve.More++
		}
	}
	var first *body
	for {
		row, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read input: %w", err)
		}
		b, err := parseBody(row.Body)
		if err != nil {
			return nil, err
		}
		switch {
		case len(b.JSONSchema) > 0 || b.JSONObject:
			bad(row.Line, "jsonSchema", "the batch backend sends no structured-output options: use --backend async")
		case len(b.CompletionOptions.ReasoningOptions) > 0:
			bad(row.Line, "reasoningOptions", "the batch backend sends no reasoning options: use --backend async")
		case encodeErr(b.Messages) != nil:
			bad(row.Line, "messages", encodeErr(b.Messages).Error())
		case first == nil:
			first = b
		case b.ModelURI != first.ModelURI:
			bad(row.Line, "modelUri", fmt.Sprintf("model %s differs from the run's %s: a batch task has one model", b.ModelURI, first.ModelURI))
		case !sameTemperature(b.CompletionOptions.Temperature, first.CompletionOptions.Temperature) ||
			b.CompletionOptions.MaxTokens != first.CompletionOptions.MaxTokens:
			bad(row.Line, "completionOptions", "temperature or maxTokens differ from the first row's: a batch task has one set of completion options")
		}
		i := int32(len(t.ids))
		t.ids = append(t.ids, row.ID)
		ck := batchapi.RequestKey(b.Messages)
		if l, ok := t.byContent[ck]; ok {
			t.leader = append(t.leader, l)
			t.followers[l] = append(t.followers[l], i)
			continue
		}
		t.byContent[ck] = i
		t.leader = append(t.leader, i)
		if t.cacheKey != nil {
			t.cacheKey[i] = batch.RequestKey(scope, row.Body)
		}
	}
	if len(ve.Errors) > 0 {
		return nil, ve
	}
	if len(t.ids) != rows {
		return nil, fmt.Errorf("input %s has %d rows, the run %d", path, len(t.ids), rows)
	}
	if first != nil {
		t.spec.ModelURI, t.spec.Temperature, t.model = first.ModelURI, first.CompletionOptions.Temperature, first.ModelURI
		if s := first.CompletionOptions.MaxTokens; s != "" {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("internal: maxTokens %q: %w", s, err)
			}
			t.spec.MaxTokens = n
		}
	}
	return t, nil
}

// encodeErr is why a request cannot be a line of a dataset (see batchapi.EncodeLine).
func encodeErr(msgs []batchapi.Message) error { return batchapi.EncodeLine(io.Discard, msgs) }

func sameTemperature(a, b *float64) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// writeDataset writes the input lines of the rows in set (input order) to w with
// batchapi.EncodeLine, from the same request the asynchronous backend would send.
func writeDataset(w io.Writer, path string, opt batch.Options, set []uint64) error {
	rd, err := batch.Open(path, opt)
	if err != nil {
		return fmt.Errorf("open input: %w", err)
	}
	defer rd.Close()
	for {
		row, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read input: %w", err)
		}
		if row.Index/64 >= len(set) || set[row.Index/64]&(1<<(row.Index%64)) == 0 {
			continue
		}
		b, err := parseBody(row.Body)
		if err != nil {
			return err
		}
		if err := batchapi.EncodeLine(w, b.Messages); err != nil {
			return fmt.Errorf("row %d (line %d): %w", row.Index+1, row.Line, err)
		}
	}
}
