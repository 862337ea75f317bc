package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// Operation is the long-running operation returned by completionAsync and GET /operations/{id}.
// A missing "done" means false (docs/api.md §3: a recorded run omits it while running).
type Operation struct {
	ID       string              `json:"id"`
	Done     bool                `json:"done"`
	Error    *Status             `json:"error,omitempty"`
	Response *CompletionResponse `json:"response,omitempty"`
}

// Finished reports whether the operation is done (the poller's Operation).
func (o *Operation) Finished() bool { return o.Done }

// Failed reports whether a done operation ended with an error (error.code > 0, as the Python SDK judges).
func (o *Operation) Failed() bool { return o.Error != nil && o.Error.Code > 0 }

// Status is a google.rpc.Status.
type Status struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// CompletionResponse is the result of a finished completion.
type CompletionResponse struct {
	Alternatives []Alternative `json:"alternatives"`
	Usage        Usage         `json:"usage"`
	ModelVersion string        `json:"modelVersion"`
}

// Alternative is one generated answer.
type Alternative struct {
	Message struct {
		Role string `json:"role"`
		Text string `json:"text"`
	} `json:"message"`
	Status AlternativeStatus `json:"status"`
}

// AlternativeStatus is the generation status of an alternative (docs/api.md §3), by its proto
// enum name.
type AlternativeStatus string

// The values of yandex.cloud.ai.foundation_models.v1.Alternative.AlternativeStatus, in enum order.
const (
	AltUnspecified    AlternativeStatus = "ALTERNATIVE_STATUS_UNSPECIFIED"
	AltPartial        AlternativeStatus = "ALTERNATIVE_STATUS_PARTIAL"
	AltTruncatedFinal AlternativeStatus = "ALTERNATIVE_STATUS_TRUNCATED_FINAL" // the answer hit maxTokens
	AltFinal          AlternativeStatus = "ALTERNATIVE_STATUS_FINAL"
	AltContentFilter  AlternativeStatus = "ALTERNATIVE_STATUS_CONTENT_FILTER" // stopped for sensitive content
	AltToolCalls      AlternativeStatus = "ALTERNATIVE_STATUS_TOOL_CALLS"
)

var altByNumber = [...]AlternativeStatus{AltUnspecified, AltPartial, AltTruncatedFinal, AltFinal, AltContentFilter, AltToolCalls}

// UnmarshalJSON accepts the enum name, as the API writes it, and its number, which proto-JSON
// parsers accept too; an unknown number is kept as its digits rather than failing the row.
func (s *AlternativeStatus) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var name string
		if err := json.Unmarshal(b, &name); err != nil {
			return err
		}
		*s = AlternativeStatus(name)
		return nil
	}
	if string(b) == "null" {
		*s = ""
		return nil
	}
	n, err := strconv.Atoi(string(b))
	if err != nil {
		return fmt.Errorf("alternative status %s: not an enum name or number", b)
	}
	if n >= 0 && n < len(altByNumber) {
		*s = altByNumber[n]
	} else {
		*s = AlternativeStatus(strconv.Itoa(n))
	}
	return nil
}

// Usage counts tokens; the API sends int64 as strings, some clients numbers: both are accepted.
type Usage struct {
	InputTextTokens  Int64 `json:"inputTextTokens"`
	CompletionTokens Int64 `json:"completionTokens"`
	TotalTokens      Int64 `json:"totalTokens"`
}

// Int64 decodes a proto-JSON int64: a JSON string or a number.
type Int64 int64

// UnmarshalJSON accepts "123", 123 and null.
func (n *Int64) UnmarshalJSON(b []byte) error {
	b = bytes.Trim(b, `"`)
	if len(b) == 0 || string(b) == "null" {
		*n = 0
		return nil
	}
	v, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return err
	}
	*n = Int64(v)
	return nil
}

// MarshalJSON writes a number.
func (n Int64) MarshalJSON() ([]byte, error) { return json.Marshal(int64(n)) }
