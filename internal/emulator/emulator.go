// Package emulator is an in-process HTTP emulator of the YandexGPT async API
// (completionAsync, operations, cancel) and of the IAM token endpoints, used
// by every test and by the demo. It follows docs/api.md; where the
// real API's behaviour is unknown the choice is marked UNCONFIRMED.
//
// Operations complete after a sampled latency measured on an injectable
// clock, answers are deterministic (see Answer and Completion), per-folder quotas answer 429
// like the real gateway, and faults can be injected at configurable rates.
package emulator

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	pathSubmit   = "/foundationModels/v1/completionAsync"
	pathOps      = "/operations/"
	pathIAMToken = "/iam/v1/tokens"
	pathMetadata = "/computeMetadata/v1/instance/service-accounts/default/token"
	pathStats    = "/emulator/stats"

	defaultRetention = 72 * time.Hour // async results are kept 3 days (docs/api.md §5)
	maxBodyBytes     = 8 << 20

	// Fault 429s name the concurrent-sessions quota seen in the field.
	faultQuotaMessage = "ai.textGenerationCompletionSessionsCount.count gauge quota limit exceed: allowed 10 requests"
)

// Config configures a Server. The zero value is a working emulator with
// instant completion, no quotas, no faults and any non-empty API key.
type Config struct {
	Latency Latency

	// Quotas per folder; 0 is unlimited. Exceeding one answers 429 with the
	// gateway body and a quota message (docs/api.md §4). Windows slide.
	SubmitRPS     float64
	SubmitPerHour int
	PollRPS       float64
	TokenizeRPS   float64 // the tokenizer's own quota (docs/api.md §5: 50 a second by default)

	Faults Faults

	APIKeys   []string // accepted "Api-Key <k>" values; empty: any non-empty key is accepted
	IAMTokens []string // static "Bearer <t>" tokens accepted besides those the IAM issues
	NoAuth    bool     // accept requests without Authorization (a present header is still checked)
	Retention time.Duration

	// UserTokens are static "Bearer <t>" tokens of a person's account, as `yc iam create-token`
	// makes them: completionAsync answers 401 code 16 to them without x-folder-id (docs/api.md
	// §6). The real API knows whose token it is; the emulator, which cannot, is told: tokens its
	// IAM issues (JWT exchange, metadata) and IAMTokens are service accounts'.
	UserTokens []string
	// DeniedModels are model URIs that completionAsync refuses with 403 code 7, as the API does
	// for a model that needs access on request or a folder the credentials cannot use
	// (docs/api.md §4); "gpt://f/m" and "gpt://f/m/latest" are the same model. SetDeniedModels
	// changes them while serving.
	DeniedModels []string

	Seed int64
	Now  func() time.Time // nil: time.Now; must be safe for concurrent use
	IAM  *IAM             // nil: NewIAM(time.Hour, Now)
	Logf func(format string, args ...any)
}

// Stats are the emulator's counters.
type Stats struct {
	Submissions          int64            `json:"submissions"`          // authenticated completionAsync requests, whatever their outcome
	DuplicateSubmissions int64            `json:"duplicateSubmissions"` // created operations beyond the first per content
	Polls                int64            `json:"polls"`                // authenticated operation GETs
	NotFound             int64            `json:"notFound"`             // 404s for unknown or expired operations (not fresh404 faults)
	Rejected429          int64            `json:"rejected429"`          // quota rejections (not 429 faults)
	OpsCreated           int64            `json:"opsCreated"`
	OpsDone              int64            `json:"opsDone"`   // observed (by a poll or cancel) finished with a response
	OpsFailed            int64            `json:"opsFailed"` // observed finished with an error, cancellations included
	Faults               map[string]int64 `json:"faults"`    // injected faults by kind (Fault* constants)
	Unauthorized         int64            `json:"unauthorized"`
	PermissionDenied     int64            `json:"permissionDenied"` // 403s for DeniedModels
	// Operations created to succeed with ALTERNATIVE_STATUS_TRUNCATED_FINAL (the answer was longer
	// than maxTokens) or ALTERNATIVE_STATUS_CONTENT_FILTER (the trigger or the content_filter fault).
	Truncated       int64 `json:"truncated"`
	ContentFiltered int64 `json:"contentFiltered"`
	// Cancels are authenticated :cancel requests; Cancelled the operations they stopped while
	// running (a cancel of a finished operation leaves it as it was).
	Cancels   int64 `json:"cancels"`
	Cancelled int64 `json:"cancelled"`
	// Tokenizes are authenticated tokenizer requests (tokenize and tokenizeCompletion), whatever
	// their outcome.
	Tokenizes int64 `json:"tokenizes"`
	// InputTokens and OutputTokens are the usage of the operations created to answer (not to
	// fail), as their answers report it: what the API bills.
	InputTokens  int64 `json:"inputTokens"`
	OutputTokens int64 `json:"outputTokens"`
}

// Server is the emulator. It is an http.Handler and safe for concurrent use.
type Server struct {
	cfg       Config
	now       func() time.Time
	iam       *IAM
	apiKeys   map[string]bool
	iamTokens map[string]bool
	retention int64 // nanoseconds

	userTokens map[string]bool

	faults atomic.Pointer[Faults]
	denied atomic.Pointer[map[string]bool] // normalized model URIs answered 403

	rngMu sync.Mutex
	rng   *rand.Rand // seeded: latencies, faults, operation ids

	shards [opShardCount]opShard

	foldersMu sync.Mutex
	folders   map[string]*folderState

	st struct {
		submissions, duplicates, polls, notFound, rejected429 atomic.Int64
		opsCreated, opsDone, opsFailed, unauthorized          atomic.Int64
		permissionDenied                                      atomic.Int64
		truncated, contentFiltered                            atomic.Int64
		cancels, cancelled, tokenizes                         atomic.Int64
		inputTokens, outputTokens                             atomic.Int64
		faults                                                [numFaults]atomic.Int64
	}

	mu      sync.Mutex
	httpSrv *http.Server
	served  chan struct{}
}

// New returns a Server for cfg.
func New(cfg Config) *Server {
	s := &Server{
		cfg:       cfg,
		now:       cfg.Now,
		iam:       cfg.IAM,
		apiKeys:   make(map[string]bool, len(cfg.APIKeys)),
		iamTokens: make(map[string]bool, len(cfg.IAMTokens)),
		retention: int64(cfg.Retention),
		rng:       rand.New(rand.NewPCG(uint64(cfg.Seed), uint64(cfg.Seed)^0x9e3779b97f4a7c15)),
		folders:   make(map[string]*folderState),
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.iam == nil {
		s.iam = NewIAM(time.Hour, s.now)
	}
	if s.retention <= 0 {
		s.retention = int64(defaultRetention)
	}
	for _, k := range cfg.APIKeys {
		s.apiKeys[k] = true
	}
	for _, t := range cfg.IAMTokens {
		s.iamTokens[t] = true
	}
	s.userTokens = make(map[string]bool, len(cfg.UserTokens))
	for _, t := range cfg.UserTokens {
		s.userTokens[t] = true
	}
	for i := range s.shards {
		s.shards[i].ops = make(map[opID]*operation)
		s.shards[i].subs = make(map[[16]byte]int32)
	}
	s.SetFaults(cfg.Faults)
	s.SetDeniedModels(cfg.DeniedModels)
	return s
}

// codePermissionDenied is google.rpc.Code PERMISSION_DENIED, the code of a denied model's 403.
const codePermissionDenied = 7

// SetDeniedModels replaces the model URIs refused with 403 from now on (see Config.DeniedModels).
func (s *Server) SetDeniedModels(uris []string) {
	m := make(map[string]bool, len(uris))
	for _, u := range uris {
		m[normalModelURI(u)] = true
	}
	s.denied.Store(&m)
}

// normalModelURI spells out the default version of a gpt:// URI: gpt://f/m is gpt://f/m/latest
// (docs/api.md §2).
func normalModelURI(uri string) string {
	if rest, ok := strings.CutPrefix(uri, "gpt://"); ok && strings.Count(rest, "/") == 1 {
		return uri + "/latest"
	}
	return uri
}

// SetFaults replaces the fault rates for requests and operations from now on.
func (s *Server) SetFaults(f Faults) {
	s.faults.Store(&f)
}

// IAM returns the emulated IAM service.
func (s *Server) IAM() *IAM { return s.iam }

// Start listens on addr (such as "127.0.0.1:0") and serves in the background
// until Close. It returns the base URL, for example "http://127.0.0.1:41234".
func (s *Server) Start(addr string) (baseURL string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.httpSrv != nil {
		return "", errors.New("start emulator: already started")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("start emulator: %w", err)
	}
	errLog := log.New(io.Discard, "", 0)
	if s.cfg.Logf != nil {
		errLog = log.New(LogfWriter(s.cfg.Logf), "emulator: ", 0)
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln) // returns http.ErrServerClosed after Close
	}()
	s.httpSrv, s.served = srv, done
	return "http://" + ln.Addr().String(), nil
}

// Close stops a started server, closing its connections, and waits for the
// serving goroutine to exit. It is a no-op if the server is not running.
func (s *Server) Close() error {
	s.mu.Lock()
	srv, done := s.httpSrv, s.served
	s.httpSrv, s.served = nil, nil
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	err := srv.Close()
	<-done
	if err != nil {
		return fmt.Errorf("close emulator: %w", err)
	}
	return nil
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	st := Stats{
		Submissions:          s.st.submissions.Load(),
		DuplicateSubmissions: s.st.duplicates.Load(),
		Polls:                s.st.polls.Load(),
		NotFound:             s.st.notFound.Load(),
		Rejected429:          s.st.rejected429.Load(),
		OpsCreated:           s.st.opsCreated.Load(),
		OpsDone:              s.st.opsDone.Load(),
		OpsFailed:            s.st.opsFailed.Load(),
		Unauthorized:         s.st.unauthorized.Load(),
		PermissionDenied:     s.st.permissionDenied.Load(),
		Truncated:            s.st.truncated.Load(),
		ContentFiltered:      s.st.contentFiltered.Load(),
		Cancels:              s.st.cancels.Load(),
		Cancelled:            s.st.cancelled.Load(),
		Tokenizes:            s.st.tokenizes.Load(),
		InputTokens:          s.st.inputTokens.Load(),
		OutputTokens:         s.st.outputTokens.Load(),
		Faults:               make(map[string]int64, numFaults),
	}
	for i, k := range faultKinds {
		st.Faults[k] = s.st.faults[i].Load()
	}
	return st
}

// SubmissionsFor reports how many operations were created for this content
// (accepted completionAsync requests, lost responses included).
func (s *Server) SubmissionsFor(modelURI string, msgs []Message) int {
	key := subKey(contentKey(modelURI, msgs))
	sh := s.subShard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return int(sh.subs[key])
}

// OperationsFor returns how many operations were created for a request of modelURI with msgs:
// tests use it to check that a request answered before was not submitted again.
func (s *Server) OperationsFor(modelURI string, msgs []Message) int {
	key := subKey(contentKey(modelURI, msgs))
	sh := s.subShard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return int(sh.subs[key])
}

func subKey(k [sha256.Size]byte) (out [16]byte) {
	copy(out[:], k[:])
	return out
}

// ServeHTTP serves every emulated host: llm.api, operation.api, IAM and
// metadata share one path space.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	reqID := newRequestID()
	w.Header().Set("x-request-id", reqID)
	w.Header().Set("x-server-trace-id", newRequestID())
	if s.cfg.Logf != nil {
		lw := &logWriter{ResponseWriter: w}
		start := time.Now()
		defer func() {
			// Never log headers: they carry credentials.
			s.cfg.Logf("emulator: %s %s -> %d in %v (request %s)", r.Method, r.URL.Path, lw.status, time.Since(start), reqID)
		}()
		w = lw
	}
	p := r.URL.Path
	switch {
	case p == pathSubmit:
		if allowMethod(w, r, http.MethodPost, reqID) {
			s.handleSubmit(w, r, reqID)
		}
	case p == pathTokenize, p == pathTokenizeCompletion:
		if allowMethod(w, r, http.MethodPost, reqID) {
			s.handleTokenize(w, r, reqID, p == pathTokenizeCompletion)
		}
	case strings.HasPrefix(p, pathOps):
		if id, ok := strings.CutSuffix(p[len(pathOps):], ":cancel"); ok {
			// Cancel is a GET in the API's HTTP rule (docs/api.md §1). What the real API answers
			// to a POST there is unknown; a 405 is our guess.
			if allowMethod(w, r, http.MethodGet, reqID) {
				s.handleCancel(w, r, reqID, id)
			}
			return
		}
		if allowMethod(w, r, http.MethodGet, reqID) {
			s.handlePoll(w, r, reqID, p[len(pathOps):])
		}
	case p == pathIAMToken:
		s.iam.HandleToken(w, r)
	case p == pathMetadata:
		s.iam.HandleMetadata(w, r)
	case p == pathStats:
		if allowMethod(w, r, http.MethodGet, reqID) {
			emuWriteJSON(w, http.StatusOK, s.Stats())
		}
	default:
		writeGenericErr(w, http.StatusNotFound, codeNotFound, "Not Found", reqID)
	}
}

func allowMethod(w http.ResponseWriter, r *http.Request, method, reqID string) bool {
	if r.Method == method {
		return true
	}
	w.Header().Set("Allow", method)
	writeGenericErr(w, http.StatusMethodNotAllowed, codeInvalidArgument, "Method Not Allowed", reqID)
	return false
}

// authorize checks the Authorization header and answers 401 itself.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, reqID string) bool {
	if err := s.Authorize(r.Header.Get("Authorization")); err != nil {
		writeGenericErr(w, http.StatusUnauthorized, codeUnauthenticated, err.Error(), reqID)
		return false
	}
	return true
}

// Authorize checks the value of an Authorization header (or of gRPC's authorization metadata)
// against the accepted API keys and IAM tokens; its error is the API's 401 message. It is
// exported so that the batch-mode emulator accepts the same credentials.
func (s *Server) Authorize(h string) error {
	if h == "" && s.cfg.NoAuth {
		return nil
	}
	scheme, cred, _ := strings.Cut(h, " ")
	cred = strings.TrimSpace(cred)
	var msg string
	switch {
	case h == "":
		msg = "The request is missing an API key or IAM token." // wording UNCONFIRMED
	case strings.EqualFold(scheme, "Api-Key"):
		if cred != "" && (len(s.apiKeys) == 0 || s.apiKeys[cred]) {
			return nil
		}
		msg = "Unknown api key"
	case strings.EqualFold(scheme, "Bearer"):
		if cred != "" && (s.iamTokens[cred] || s.userTokens[cred] || s.iam.CheckToken(cred) == nil) {
			return nil
		}
		msg = "Token is invalid or has expired."
	default:
		msg = "Unsupported authorization scheme, want Api-Key or Bearer." // wording UNCONFIRMED
	}
	s.st.unauthorized.Add(1)
	return errors.New(msg)
}

// userAccount reports whether the request carries a token of a person's account (UserTokens).
func (s *Server) userAccount(r *http.Request) bool {
	scheme, cred, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	return strings.EqualFold(scheme, "Bearer") && s.userTokens[strings.TrimSpace(cred)]
}

// folder returns the interned state of folder id.
func (s *Server) folder(id string) *folderState {
	s.foldersMu.Lock()
	defer s.foldersMu.Unlock()
	f := s.folders[id]
	if f == nil {
		f = newFolderState(id, &s.cfg)
		s.folders[id] = f
	}
	return f
}

// chance draws true with probability p from the seeded generator; p <= 0
// draws nothing so that sequences stay reproducible when a fault is off.
func (s *Server) chance(p float64) bool {
	if !(p > 0) {
		return false
	}
	s.rngMu.Lock()
	defer s.rngMu.Unlock()
	return s.rng.Float64() < p
}

// preFaults applies the slow and transport faults shared by submit and poll.
// It returns the transport fault still to apply to a successful answer
// (garbage or none) and false if the request was already answered.
func (s *Server) preFaults(w http.ResponseWriter, r *http.Request, reqID string, f *Faults, submit bool) (int, bool) {
	if s.chance(f.RateSlow) {
		s.st.faults[faultSlow].Add(1)
		if f.SlowDelay > 0 {
			t := time.NewTimer(f.SlowDelay)
			defer t.Stop()
			select {
			case <-t.C:
			case <-r.Context().Done():
				return -1, false
			}
		}
	}
	fault := -1
	if f.anyTransport() {
		s.rngMu.Lock()
		fault = f.transportFault(s.rng.Float64())
		s.rngMu.Unlock()
	}
	if fault < 0 {
		return -1, true
	}
	s.st.faults[fault].Add(1)
	switch fault {
	case fault429:
		msg := faultQuotaMessage
		if !submit {
			msg = quotaMessage(quotaPollPerSecond, 50)
		}
		writeGatewayErr(w, http.StatusTooManyRequests, codeResourceExhaust, msg)
	case fault500:
		s.writeServerErr(w, reqID, http.StatusInternalServerError, codeInternal, "Internal error", submit)
	case fault503:
		s.writeServerErr(w, reqID, http.StatusServiceUnavailable, codeUnavailable, "Service is temporarily unavailable", submit)
	case faultReset:
		s.resetConn(w, reqID)
	default: // garbage: applied to the answer
		return fault, true
	}
	return -1, false
}

// writeServerErr answers a 5xx in the body shape of the host: the llm.api
// gateway for submits, the generic body for operations (UNCONFIRMED).
func (s *Server) writeServerErr(w http.ResponseWriter, reqID string, status, code int, msg string, submit bool) {
	if submit {
		writeGatewayErr(w, status, code, msg)
		return
	}
	writeGenericErr(w, status, code, msg, reqID)
}

// resetConn drops the connection without a response, with a TCP RST when
// possible.
func (s *Server) resetConn(w http.ResponseWriter, reqID string) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		// Not hijackable (HTTP/2 or a recorder): the closest visible failure.
		writeGenericErr(w, http.StatusServiceUnavailable, codeUnavailable, "connection reset (emulated)", reqID)
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// garble truncates a JSON body so that it no longer parses.
func garble(b []byte) []byte {
	return b[:len(b)/2]
}

// readFolderRequest authorizes a request that acts in a folder (a completion, a tokenization),
// counts it in counter and reads its body; false means the error answer was written.
func (s *Server) readFolderRequest(w http.ResponseWriter, r *http.Request, reqID string, counter *atomic.Int64) ([]byte, bool) {
	if !s.authorize(w, r, reqID) {
		return nil, false
	}
	if r.Header.Get("x-folder-id") == "" && s.userAccount(r) {
		// A person's token names no folder of its own (docs/api.md §6). Polls and cancels are
		// served without the header, as the documented poll example sends none (UNCONFIRMED);
		// that the tokenizer asks for it too is UNCONFIRMED.
		s.st.unauthorized.Add(1)
		writeGenericErr(w, http.StatusUnauthorized, codeUnauthenticated, "You have to specify folder ID for user account", reqID)
		return nil, false
	}
	counter.Add(1)
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			writeGatewayErr(w, http.StatusRequestEntityTooLarge, codeInvalidArgument, "request body too large")
			return nil, false
		}
		writeUnmarshalErr(w, "cannot read request body: "+err.Error())
		return nil, false
	}
	return body, true
}

func (s *Server) handleSubmit(w http.ResponseWriter, r *http.Request, reqID string) {
	body, ok := s.readFolderRequest(w, r, reqID, &s.st.submissions)
	if !ok {
		return
	}
	req, rerr := parseCompletionRequest(body)
	folderID := r.Header.Get("x-folder-id")
	if folderID == "" {
		folderID = req.folder
	}
	now := s.now()
	// Order as the API: authentication, permission, quota, then the body. That permission comes
	// before the quota is UNCONFIRMED; the message is the one reported for a denied model.
	if req.modelURI != "" && (*s.denied.Load())[normalModelURI(req.modelURI)] {
		s.st.permissionDenied.Add(1)
		writeGatewayErr(w, http.StatusForbidden, codePermissionDenied, "Access to model "+req.modelURI+" denied")
		return
	}
	f := s.folder(folderID)
	if msg := f.allowSubmit(now.UnixNano()); msg != "" {
		s.st.rejected429.Add(1)
		writeGatewayErr(w, http.StatusTooManyRequests, codeResourceExhaust, msg)
		return
	}
	faults := s.faults.Load()
	post, ok := s.preFaults(w, r, reqID, faults, true)
	if !ok {
		return
	}
	if hdr := r.Header.Get("x-folder-id"); rerr == nil && hdr != "" && hdr != req.folder {
		rerr = semanticErr("Specified folder ID does not match with service account")
	}
	if rerr != nil {
		writeRequestErr(w, r, reqID, folderID, rerr)
		return
	}
	view := s.createOp(&req, f, now.UnixNano())
	body = view.render()
	if s.chance(faults.RateSubmitLost) {
		s.st.faults[faultSubmitLost].Add(1)
		if s.chance(0.5) {
			s.resetConn(w, reqID)
		} else {
			writeGatewayErr(w, http.StatusInternalServerError, codeInternal, "Internal error")
		}
		return
	}
	if post == faultGarbage {
		body = garble(body) // the operation exists; only its answer is mangled
	}
	emuWriteRaw(w, http.StatusOK, body)
}

// writeRequestErr answers a rejected body: the grpc-gateway unmarshal body for proto-JSON errors,
// the gateway's 400 with its session prefix otherwise (docs/api.md §4).
func writeRequestErr(w http.ResponseWriter, r *http.Request, reqID, folderID string, rerr *requestError) {
	if rerr.protoJSON {
		writeUnmarshalErr(w, rerr.msg)
		return
	}
	msg := fmt.Sprintf("Error in session internal_id=%s&request_id=%s&client_request_id=%s&folder_id=%s: %s",
		reqID, reqID, r.Header.Get("x-client-request-id"), folderID, rerr.msg)
	writeGatewayErr(w, http.StatusBadRequest, codeInvalidArgument, msg)
}

// createOp stores a new operation for req and returns its first view.
func (s *Server) createOp(req *completionRequest, f *folderState, now int64) opView {
	faults := s.faults.Load()
	answer, status, out := Completion(req.modelURI, req.messages, req.maxTokens)
	var in int64
	for _, m := range req.messages {
		in += CountTokens(m.Text)
	}
	op := &operation{
		created:   now,
		folder:    f,
		answer:    answer,
		inTokens:  uint32(in),
		outTokens: uint32(out),
	}
	switch status {
	case StatusTruncatedFinal:
		op.status = altTruncated
	case StatusContentFilter:
		op.status = altFiltered
	}

	s.rngMu.Lock()
	op.doneAt = now + int64(s.cfg.Latency.sample(s.rng))
	if faults.RateOpError > 0 || faults.RateOpPermError > 0 {
		switch u := s.rng.Float64(); {
		case u < faults.RateOpError:
			op.outcome = outcomeInternal
			if s.rng.IntN(2) == 1 {
				op.outcome = outcomeUnavailable
			}
		case u < faults.RateOpError+faults.RateOpPermError:
			op.outcome = outcomePermanent
		}
	}
	op.fresh404 = faults.RateFresh404 > 0 && s.rng.Float64() < faults.RateFresh404
	op.noDone = faults.RateNoDone > 0 && s.rng.Float64() < faults.RateNoDone
	filterFault := op.outcome == outcomeOK && op.status != altFiltered &&
		faults.RateContentFilter > 0 && s.rng.Float64() < faults.RateContentFilter
	if filterFault {
		op.status, op.answer, op.outTokens = altFiltered, FilteredAnswer, 0
	}
	op.vanished = faults.RateVanish > 0 && s.rng.Float64() < faults.RateVanish
	snapshot := *op // op is shared once inserted
	var id opID
	for {
		copy(id[:], opIDPrefix)
		x, y := s.rng.Uint64(), s.rng.Uint64()
		for i := len(opIDPrefix); i < opIDLen; i++ {
			if i < len(opIDPrefix)+10 {
				id[i], x = opIDAlphabet[x%36], x/36
			} else {
				id[i], y = opIDAlphabet[y%36], y/36
			}
		}
		sh := s.opShard(id)
		sh.mu.Lock()
		_, taken := sh.ops[id]
		if !taken {
			sh.ops[id] = op
		}
		sh.mu.Unlock()
		if !taken {
			break
		}
	}
	s.rngMu.Unlock()

	switch snapshot.outcome {
	case outcomeInternal, outcomeUnavailable:
		s.st.faults[faultOpError].Add(1)
	case outcomePermanent:
		s.st.faults[faultOpPermError].Add(1)
	}
	if snapshot.noDone {
		s.st.faults[faultNoDone].Add(1)
	}
	if filterFault {
		s.st.faults[faultContentFilter].Add(1)
	}
	if snapshot.outcome == outcomeOK {
		s.st.inputTokens.Add(int64(snapshot.inTokens))
		s.st.outputTokens.Add(int64(snapshot.outTokens))
		switch snapshot.status {
		case altTruncated:
			s.st.truncated.Add(1)
		case altFiltered:
			s.st.contentFiltered.Add(1)
		}
	}
	if snapshot.vanished {
		s.st.faults[faultVanish].Add(1)
	}
	s.st.opsCreated.Add(1)
	key := subKey(contentKey(req.modelURI, req.messages))
	sh := s.subShard(key)
	sh.mu.Lock()
	sh.subs[key]++
	dup := sh.subs[key] > 1
	sh.mu.Unlock()
	if dup {
		s.st.duplicates.Add(1)
	}
	// A zero latency finishes the operation at once, but the submit answer
	// is still the running operation, as the real API returns it.
	return opView{id: string(id[:]), operation: snapshot}
}

func (s *Server) handlePoll(w http.ResponseWriter, r *http.Request, reqID, rawID string) {
	if !s.authorize(w, r, reqID) {
		return
	}
	s.st.polls.Add(1)
	now := s.now().UnixNano()
	id, valid := parseOpID(rawID)
	var f *folderState
	if valid {
		sh := s.opShard(id)
		sh.mu.Lock()
		if op := sh.ops[id]; op != nil {
			f = op.folder
		}
		sh.mu.Unlock()
	}
	if f == nil {
		f = s.folder(r.Header.Get("x-folder-id"))
	}
	if msg := f.allowPoll(now); msg != "" {
		s.st.rejected429.Add(1)
		writeGatewayErr(w, http.StatusTooManyRequests, codeResourceExhaust, msg)
		return
	}
	post, ok := s.preFaults(w, r, reqID, s.faults.Load(), false)
	if !ok {
		return
	}
	res := lookupNotFound
	var v opView
	if valid {
		v, res = s.observe(id, now, false)
	}
	if !s.writeLookup(w, reqID, res) {
		return
	}
	body := v.render()
	if post == faultGarbage {
		body = garble(body)
	}
	emuWriteRaw(w, http.StatusOK, body)
}

// writeLookup answers the 404 of a failed lookup; it reports whether the
// operation was found.
func (s *Server) writeLookup(w http.ResponseWriter, reqID string, res lookupResult) bool {
	switch res {
	case lookupFound:
		return true
	case lookupFresh404:
		s.st.faults[faultFresh404].Add(1)
	default:
		s.st.notFound.Add(1)
	}
	writeGenericErr(w, http.StatusNotFound, codeNotFound, "Operation not found", reqID)
	return false
}

// handleCancel cancels a running operation (best effort, docs/api.md §1) and
// answers the operation. Cancels are not subject to quotas or faults.
func (s *Server) handleCancel(w http.ResponseWriter, r *http.Request, reqID, rawID string) {
	if !s.authorize(w, r, reqID) {
		return
	}
	s.st.cancels.Add(1)
	res := lookupNotFound
	var v opView
	if id, ok := parseOpID(rawID); ok {
		v, res = s.observe(id, s.now().UnixNano(), true)
	}
	if !s.writeLookup(w, reqID, res) {
		return
	}
	emuWriteRaw(w, http.StatusOK, v.render())
}

// newRequestID returns a random UUID-shaped id. It does not use the seeded
// generator: request ids need not be reproducible.
func newRequestID() string {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(b[8:], rand.Uint64())
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:], b[10:])
	return string(out[:])
}

// logWriter records the status for the request log; Unwrap keeps Hijack
// reachable through http.ResponseController.
type logWriter struct {
	http.ResponseWriter
	status int
}

func (l *logWriter) WriteHeader(code int) {
	if l.status == 0 {
		l.status = code
	}
	l.ResponseWriter.WriteHeader(code)
}

func (l *logWriter) Write(b []byte) (int, error) {
	if l.status == 0 {
		l.status = http.StatusOK
	}
	return l.ResponseWriter.Write(b)
}

func (l *logWriter) Unwrap() http.ResponseWriter { return l.ResponseWriter }

// LogfWriter adapts a Logf to an io.Writer, for an http.Server's error log.
type LogfWriter func(format string, args ...any)

func (f LogfWriter) Write(p []byte) (int, error) {
	f("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
