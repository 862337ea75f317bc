package emulator

import (
	"encoding/json"
	"sync"
	"time"
)

const (
	opShardCount = 64
	opIDLen      = 20
	opIDPrefix   = "d7q" // as in the ids of recorded runs (docs/api.md §3)
	opIDAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

	opDescription = "Async GPT Completion"
	responseType  = "type.googleapis.com/yandex.cloud.ai.foundation_models.v1.CompletionResponse"
	modelVersion  = "18.01.2024"
)

// Outcomes of an operation, fixed when it is created (or cancelled).
const (
	outcomeOK uint8 = iota
	outcomeInternal
	outcomeUnavailable
	outcomePermanent
	outcomeCancelled
)

// Alternative statuses of a successful operation (docs/api.md §3).
const (
	altFinal uint8 = iota
	altTruncated
	altFiltered
)

var altStatusNames = [...]string{altFinal: StatusFinal, altTruncated: StatusTruncatedFinal, altFiltered: StatusContentFilter}

type opID [opIDLen]byte

func parseOpID(s string) (id opID, ok bool) {
	if len(s) != opIDLen {
		return id, false
	}
	for i := range len(s) {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return id, false
		}
		id[i] = c
	}
	return id, true
}

// operation is kept small because a run may create millions: the answer and
// token counts are stored, never the request.
type operation struct {
	created   int64 // Unix nanoseconds
	doneAt    int64 // completion (or cancellation) time
	folder    *folderState
	answer    string
	inTokens  uint32
	outTokens uint32
	outcome   uint8
	status    uint8 // alternative status of a successful outcome: altFinal, altTruncated, altFiltered
	fresh404  bool  // the next poll answers 404 once
	noDone    bool  // omit "done" while running
	vanished  bool  // purged at once: every lookup answers 404 (the vanish fault)
	finished  bool  // completion observed and counted in Stats
}

// opShard is one lock's worth of operations and submission counts.
type opShard struct {
	mu   sync.Mutex
	ops  map[opID]*operation
	subs map[[16]byte]int32 // submissions per content key
}

func (s *Server) opShard(id opID) *opShard {
	var h uint32 = 2166136261
	for _, c := range id {
		h = (h ^ uint32(c)) * 16777619
	}
	return &s.shards[h%opShardCount]
}

func (s *Server) subShard(key [16]byte) *opShard {
	return &s.shards[key[0]%opShardCount]
}

// opView is a snapshot of an operation taken under its shard lock.
type opView struct {
	id string
	operation
	done bool
}

type opJSON struct {
	ID          string          `json:"id"`
	Description string          `json:"description"`
	CreatedAt   string          `json:"createdAt"`
	CreatedBy   string          `json:"createdBy"`
	ModifiedAt  string          `json:"modifiedAt"`
	Error       *opErrorJSON    `json:"error,omitempty"` // before "done": docs/api.md §3 says it may come first
	Done        *bool           `json:"done,omitempty"`
	Metadata    json.RawMessage `json:"metadata,omitempty"`
	Response    *completionJSON `json:"response,omitempty"`
}

type opErrorJSON struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Details []any  `json:"details"`
}

type completionJSON struct {
	Type         string            `json:"@type"`
	Alternatives []alternativeJSON `json:"alternatives"`
	Usage        usageJSON         `json:"usage"`
	ModelVersion string            `json:"modelVersion"`
}

type alternativeJSON struct {
	Message Message `json:"message"`
	Status  string  `json:"status"`
}

// usageJSON carries int64 counts as strings, as proto-JSON does.
type usageJSON struct {
	InputTextTokens  int64 `json:"inputTextTokens,string"`
	CompletionTokens int64 `json:"completionTokens,string"`
	TotalTokens      int64 `json:"totalTokens,string"`
}

func formatTime(ns int64) string {
	return time.Unix(0, ns).UTC().Format(time.RFC3339Nano)
}

// render returns the Operation JSON of v.
func (v *opView) render() []byte {
	out := opJSON{
		ID:          v.id,
		Description: opDescription,
		CreatedAt:   formatTime(v.created),
		CreatedBy:   v.folder.createdBy,
		ModifiedAt:  formatTime(v.created),
	}
	if !v.done {
		if !v.noDone {
			out.Done = new(false)
		}
		out.Metadata = json.RawMessage("null")
		return emuMarshal(out)
	}
	out.ModifiedAt = formatTime(v.doneAt)
	out.Done = new(true)
	switch v.outcome {
	case outcomeOK:
		out.Response = &completionJSON{
			Type: responseType,
			Alternatives: []alternativeJSON{{
				Message: Message{Role: "assistant", Text: v.answer},
				Status:  altStatusNames[v.status],
			}},
			Usage: usageJSON{
				InputTextTokens:  int64(v.inTokens),
				CompletionTokens: int64(v.outTokens),
				TotalTokens:      int64(v.inTokens) + int64(v.outTokens),
			},
			ModelVersion: modelVersion,
		}
		if v.status == altFiltered {
			// As in the field report (docs/api.md §3): no usage, no model version.
			out.Response.Usage = usageJSON{}
			out.Response.ModelVersion = ""
		}
	case outcomeInternal:
		out.Error = &opErrorJSON{Code: codeInternal, Message: "Internal error (emulated)", Details: []any{}}
	case outcomeUnavailable:
		out.Error = &opErrorJSON{Code: codeUnavailable, Message: "Service is temporarily unavailable (emulated)", Details: []any{}}
	case outcomePermanent:
		out.Error = &opErrorJSON{Code: codeInvalidArgument, Message: "Invalid argument (emulated permanent failure)", Details: []any{}}
	default: // cancelled
		out.Error = &opErrorJSON{Code: codeCancelled, Message: "Operation cancelled", Details: []any{}}
	}
	return emuMarshal(out)
}

func emuMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Only the fixed types above are marshalled; this cannot happen.
		return []byte(`{}`)
	}
	return b
}

// lookupResult tells why observe found nothing.
type lookupResult int

const (
	lookupFound lookupResult = iota
	lookupNotFound
	lookupFresh404
)

// observe snapshots operation id at now, applying retention, the one-time
// fresh 404 and the running → done transition.
func (s *Server) observe(id opID, now int64, cancel bool) (opView, lookupResult) {
	sh := s.opShard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	op := sh.ops[id]
	if op == nil {
		return opView{}, lookupNotFound
	}
	if now-op.created > s.retention || op.vanished {
		delete(sh.ops, id) // expired results are gone for good
		return opView{}, lookupNotFound
	}
	if op.fresh404 && !cancel {
		op.fresh404 = false
		return opView{}, lookupFresh404
	}
	if !op.finished && cancel && now < op.doneAt {
		// Best effort cancel succeeds only while the operation runs (docs/api.md §8).
		op.outcome, op.doneAt = outcomeCancelled, now
		s.st.cancelled.Add(1)
	}
	if !op.finished && now >= op.doneAt {
		op.finished = true
		if op.outcome == outcomeOK {
			s.st.opsDone.Add(1)
		} else {
			s.st.opsFailed.Add(1)
		}
	}
	return opView{id: string(id[:]), operation: *op, done: op.finished}, lookupFound
}
