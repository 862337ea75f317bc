package batch_test

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/batchgpt/batchgpt/batch"
)

// Options keep their meaning on disk: written in snake_case, read in snake_case and in the Go
// field names of checkpoints written before the json tags.
func TestOptionsJSON(t *testing.T) {
	t.Parallel()
	temp, maxTok := 0.3, int64(50)
	full := batch.Options{Format: "csv", Folder: "b1g", Model: "yandexgpt", System: "Be brief.", Temperature: &temp,
		MaxTokens: &maxTok, ReasoningMode: "DISABLED", JSONSchema: json.RawMessage(`{"type":"object"}`), JSONObject: false,
		PromptColumn: "q", IDColumn: "key", SystemColumn: "sys", Template: "{{.q}}"}
	b, err := json.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"format":"csv","folder":"b1g","model":"yandexgpt","system":"Be brief.","temperature":0.3,"max_tokens":50,` +
		`"reasoning_mode":"DISABLED","json_schema":{"type":"object"},"prompt_column":"q","id_column":"key","system_column":"sys","template":"{{.q}}"}`
	if string(b) != want {
		t.Errorf("written as\n%s\nwant\n%s", b, want)
	}
	for name, in := range map[string]string{
		"snake_case": want,
		"Go field names": `{"Format":"csv","Folder":"b1g","Model":"yandexgpt","System":"Be brief.","Temperature":0.3,"MaxTokens":50,` +
			`"ReasoningMode":"DISABLED","JSONSchema":{"type":"object"},"PromptColumn":"q","IDColumn":"key","SystemColumn":"sys","Template":"{{.q}}"}`,
	} {
		var got batch.Options
		if err := json.Unmarshal([]byte(in), &got); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(got, full) {
			t.Errorf("%s: read as %+v", name, got)
		}
	}
	var o batch.Options
	if err := json.Unmarshal([]byte(`{"JSONObject":true}`), &o); err != nil || !o.JSONObject {
		t.Errorf("JSONObject: %v %+v", err, o)
	}
}
