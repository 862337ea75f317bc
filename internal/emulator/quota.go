package emulator

import (
	"crypto/sha256"
	"fmt"
	"sync"
	"time"
)

// Quota ids in 429 messages. The real ids of the async submit and polling
// quotas are UNCONFIRMED (docs/api.md §4); these follow the documented naming.
const (
	quotaSubmitPerSecond = "ai.textGenerationAsyncCompletionRequestsPerSecond.rate"
	quotaSubmitPerHour   = "ai.textGenerationAsyncCompletionRequestsPerHour.rate"
	quotaPollPerSecond   = "ai.operationGetRequestsPerSecond.rate"
	quotaTokenizePerSec  = "ai.tokenizerRequestsPerSecond.rate"
)

// folderState holds the quotas of one folder; it is shared by the folder's
// operations, so each operation stores only a pointer.
type folderState struct {
	id        string
	createdBy string

	mu         sync.Mutex
	submitSec  slidingWindow
	submitHour slidingWindow
	pollSec    slidingWindow
	tokenize   slidingWindow
}

func newFolderState(id string, cfg *Config) *folderState {
	return &folderState{
		id:         id,
		createdBy:  createdByFor(id),
		submitSec:  rateWindow(cfg.SubmitRPS),
		submitHour: slidingWindow{limit: max(cfg.SubmitPerHour, 0), span: int64(time.Hour)},
		pollSec:    rateWindow(cfg.PollRPS),
		tokenize:   rateWindow(cfg.TokenizeRPS),
	}
}

// allowSubmit records a submit at now, or returns the 429 message of the
// first exhausted quota without recording anything.
func (f *folderState) allowSubmit(now int64) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.submitSec.room(now) {
		return quotaMessage(quotaSubmitPerSecond, f.submitSec.limit)
	}
	if !f.submitHour.room(now) {
		return quotaMessage(quotaSubmitPerHour, f.submitHour.limit)
	}
	f.submitSec.add(now)
	f.submitHour.add(now)
	return ""
}

// allowPoll is allowSubmit for the polling quota.
func (f *folderState) allowPoll(now int64) string {
	return f.allowOne(&f.pollSec, quotaPollPerSecond, now)
}

// allowTokenize is allowSubmit for the tokenizer's quota.
func (f *folderState) allowTokenize(now int64) string {
	return f.allowOne(&f.tokenize, quotaTokenizePerSec, now)
}

// allowOne is allowSubmit for a quota of one window w, named quota in its 429 message.
func (f *folderState) allowOne(w *slidingWindow, quota string, now int64) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !w.room(now) {
		return quotaMessage(quota, w.limit)
	}
	w.add(now)
	return ""
}

func quotaMessage(quota string, limit int) string {
	return fmt.Sprintf("%s rate quota limit exceed: allowed %d requests", quota, limit)
}

// slidingWindow admits at most limit events in any span; limit 0 is
// unlimited. It keeps the times of the last limit admitted events in a ring,
// so the window is exact rather than bucketed.
type slidingWindow struct {
	limit int
	span  int64 // nanoseconds
	ring  []int64
	next  int
}

// rateWindow converts a requests-per-second quota to a window: N per second
// for rps >= 1 (fractions dropped), one per 1/rps seconds below that.
func rateWindow(rps float64) slidingWindow {
	switch {
	case !(rps > 0): // also NaN
		return slidingWindow{}
	case rps >= 1:
		return slidingWindow{limit: int(min(rps, 1e6)), span: int64(time.Second)}
	default:
		return slidingWindow{limit: 1, span: int64(float64(time.Second) / rps)}
	}
}

func (w *slidingWindow) room(now int64) bool {
	if w.limit == 0 || len(w.ring) < w.limit {
		return true
	}
	return now-w.ring[w.next] >= w.span
}

func (w *slidingWindow) add(now int64) {
	if w.limit == 0 {
		return
	}
	if len(w.ring) < w.limit {
		w.ring = append(w.ring, now)
		return
	}
	w.ring[w.next] = now
	w.next = (w.next + 1) % w.limit
}

// createdByFor derives a stable service-account-like id ("aje" and 17
// characters) for a folder.
func createdByFor(folder string) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	sum := sha256.Sum256([]byte("createdBy:" + folder))
	b := []byte("aje")
	for _, c := range sum[:17] {
		b = append(b, alphabet[int(c)%len(alphabet)])
	}
	return string(b)
}
