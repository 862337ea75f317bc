package job

import (
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/batchgpt/batchgpt/batch"
)

func TestEstimate(t *testing.T) {
	t.Parallel()
	// The reader sets MaxTokens from the request (TestRowMaxTokens in batch).
	row := func(maxTokens int64, chars int) batch.Row { return batch.Row{MaxTokens: maxTokens, PromptChars: chars} }
	for _, tc := range []struct {
		name  string
		row   batch.Row
		guess int64
		want  int64
	}{
		{"maxTokens, whatever the mean output", row(50, 15), 7, 4 + 50},
		{"maxTokens, no answer yet", row(20, 16), 0, 4 + 20},
		{"no maxTokens: the mean output so far", row(0, 17), 7, 5 + 7},
		{"no maxTokens, no answer yet: as much again as the input", row(0, 40), 0, 10 + 10},
	} {
		if got := estimate(tc.row, tc.guess); got != tc.want {
			t.Errorf("%s: estimate %d, want %d", tc.name, got, tc.want)
		}
	}
}

// A row is admitted while the spend, the rows in flight and the row fit; the first that does not
// stops every later admission; a row written settles at its usage.
func TestBudgetAdmit(t *testing.T) {
	t.Parallel()
	b := newBudget(Limits{MaxTotalTokens: 30}, nil, slog.New(slog.DiscardHandler))
	r := func(i int) batch.Row {
		return batch.Row{Index: i, MaxTokens: 6, PromptChars: 16} // 4 + 6
	}
	if !b.admit(r(0), "gpt://f/yandexgpt-lite") || !b.admit(r(1), "gpt://f/yandexgpt-lite") {
		t.Fatal("rows within the limit refused")
	}
	b.settle(0, &Usage{InputTokens: 3, CompletionTokens: 2}) // 5 spent, 10 in flight
	if !b.admit(r(2), "gpt://f/yandexgpt-lite") {            // 25
		t.Fatal("third row refused at 25 of 30")
	}
	if b.admit(r(3), "gpt://f/yandexgpt-lite") { // 35 > 30
		t.Fatal("row over the limit admitted")
	}
	b.settle(1, nil)
	b.settle(2, nil) // room again, but the stop holds
	if b.admit(r(4), "gpt://f/yandexgpt-lite") {
		t.Fatal("admitted after the limit stopped the submissions")
	}
	if sp := b.spend(1); sp.Tokens != 5 || sp.NotSubmitted != 1 || sp.MaxTotalTokens != 30 {
		t.Errorf("spend %+v", sp)
	}
}

// The limits change in the settings JSON and nothing else does, not even a field this batchgpt
// does not know.
func TestWithLimits(t *testing.T) {
	t.Parallel()
	raw := json.RawMessage(`{"input":{"model":"yandexgpt"},"endpoint":"https://x","from_the_future":[1,2]}`)
	got, err := withLimits(raw, &Limits{MaxCost: 2.5})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(got, &m); err != nil {
		t.Fatal(err)
	}
	if m["endpoint"] != "https://x" || m["from_the_future"] == nil || m["limits"].(map[string]any)["max_cost"] != 2.5 {
		t.Errorf("settings %s", got)
	}
	var s Settings
	if err := json.Unmarshal(got, &s); err != nil || s.Limits == nil || s.Limits.MaxCost != 2.5 || s.Input.Model != "yandexgpt" {
		t.Errorf("settings %+v (%v)", s, err)
	}
	m = nil
	if got, err = withLimits(got, nil); err != nil || json.Unmarshal(got, &m) != nil || m["limits"] != nil || m["from_the_future"] == nil {
		t.Errorf("limits not removed: %s (%v)", got, err)
	}
}

func TestLimitChange(t *testing.T) {
	t.Parallel()
	cost, zero, toks := 3.0, 0.0, int64(100)
	old := &Limits{MaxCost: 1, MaxTotalTokens: 50}
	if l := (LimitChange{}).Apply(old); *l != *old {
		t.Errorf("no flag: %+v, want the checkpoint's %+v", l, old)
	}
	if l := (LimitChange{MaxCost: &cost}).Apply(old); *l != (Limits{MaxCost: 3, MaxTotalTokens: 50}) {
		t.Errorf("--max-cost 3: %+v", l)
	}
	if l := (LimitChange{MaxCost: &zero}).Apply(old); *l != (Limits{MaxTotalTokens: 50}) {
		t.Errorf("--max-cost 0: %+v", l)
	}
	if l := (LimitChange{MaxCost: &zero}).Apply(&Limits{MaxCost: 1}); l != nil {
		t.Errorf("--max-cost 0 on the only limit: %+v, want none", l)
	}
	if l := (LimitChange{MaxTotalTokens: &toks}).Apply(nil); *l != (Limits{MaxTotalTokens: 100}) {
		t.Errorf("new run: %+v", l)
	}
}
