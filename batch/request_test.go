package batch_test

import (
	"testing"

	"github.com/batchgpt/batchgpt/batch"
)

func TestModelURI(t *testing.T) {
	t.Parallel()
	tests := []struct {
		folder, model string
		want          string // "" = error
		wantErr       string
	}{
		{"b1gfolder", "yandexgpt-lite", "gpt://b1gfolder/yandexgpt-lite/latest", ""},
		{"b1gfolder", "yandexgpt", "gpt://b1gfolder/yandexgpt/latest", ""},
		{"b1gfolder", "yandexgpt/rc", "gpt://b1gfolder/yandexgpt/rc", ""},
		{"b1gfolder", "llama-lite", "gpt://b1gfolder/llama-lite/latest", ""},
		{"b1gfolder", "yandexgpt-32k/deprecated", "gpt://b1gfolder/yandexgpt-32k/deprecated", ""},
		{"", "gpt://b1gother/yandexgpt/latest", "gpt://b1gother/yandexgpt/latest", ""},
		{"b1gfolder", "gpt://b1gother/yandexgpt", "gpt://b1gother/yandexgpt", ""},
		{"", "gpt://b1gother/yandexgpt-lite/latest@tamr1234", "gpt://b1gother/yandexgpt-lite/latest@tamr1234", ""},
		{"", "ds://b1gother/bt1abc", "ds://b1gother/bt1abc", ""},
		{"", "", "", "empty model name"},
		{"", "yandexgpt-lite", "", `model "yandexgpt-lite" needs a folder id to build its URI: set --folder or YC_FOLDER_ID`},
		{"b1g/x", "yandexgpt", "", `invalid folder id "b1g/x"`},
		{"b1gfolder", "a/b/c", "", `model "a/b/c": want <name> or <name>/<version>, or a full gpt:// URI`},
		{"b1gfolder", "yandex gpt", "", `model "yandex gpt": invalid name "yandex gpt"`},
		{"b1gfolder", "yandexgpt/", "", `model "yandexgpt/": invalid name ""`},
		{"", "https://example.com/x", "", `model URI "https://example.com/x": unsupported scheme "https" (want gpt:// or ds://)`},
		{"", "gpt://b1gother", "", `model URI "gpt://b1gother": want gpt://<folder>/<model>[/<version>] or ds://<folder>/<id>`},
		{"", "gpt://b1gother/yandexgpt/latest/x", "", `model URI "gpt://b1gother/yandexgpt/latest/x": want gpt://<folder>/<model>[/<version>] or ds://<folder>/<id>`},
		{"", "gpt:///yandexgpt", "", `model URI "gpt:///yandexgpt": invalid part ""`},
		{"", "gpt://b1g@x/yandexgpt", "", `model URI "gpt://b1g@x/yandexgpt": invalid part "b1g@x"`},
	}
	for _, tt := range tests {
		got, err := batch.ModelURI(tt.folder, tt.model)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("ModelURI(%q, %q) = %q, %v; want error %q", tt.folder, tt.model, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ModelURI(%q, %q) = %q, %v; want %q", tt.folder, tt.model, got, err, tt.want)
		}
	}
}

func TestInputErrorFormat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  batch.InputError
		want string
	}{
		{batch.InputError{File: "inputs.jsonl", Line: 12, Field: "messages[1].role", Msg: `invalid role "bot" (want system, user or assistant)`},
			`inputs.jsonl:12: field "messages[1].role": invalid role "bot" (want system, user or assistant)`},
		{batch.InputError{File: "in.csv", Line: 3, Msg: "wrong number of fields: 3 (the header has 2)"},
			`in.csv:3: wrong number of fields: 3 (the header has 2)`},
		{batch.InputError{File: "in.csv", Msg: "no data rows"}, `in.csv: no data rows`},
		{batch.InputError{File: "in.jsonl", Line: 1, Field: "a\xffb", Msg: "invalid UTF-8"}, `in.jsonl:1: field "a\xffb": invalid UTF-8`},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %s\nwant      %s", got, tt.want)
		}
	}
	v := &batch.ValidationError{File: "in.csv", Errors: []*batch.InputError{&tests[1].err, &tests[2].err}, More: 1}
	if got, want := v.Error(), tests[1].want+"\n"+tests[2].want+"\n... and 1 more problem"; got != want {
		t.Errorf("ValidationError = %q, want %q", got, want)
	}
}
