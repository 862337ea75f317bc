// Package batchmode emulates the batch mode of Yandex AI Studio, for tests and for
// `batchgpt emulator --grpc-addr`: over plaintext gRPC, DatasetService (Create, GetUploadDraftUrl,
// Start/FinishMultipartUploadDraft, Validate, Describe, List, GetDownloadUrls, Delete),
// TextGenerationBatchService.Completion, BatchInferenceService (Describe, List, Cancel, Delete)
// and OperationService.Get for the operations those return; over HTTP, the presigned Object
// Storage URLs that datasets are uploaded to (PUT) and results downloaded from (GET).
//
// Everything is kept in memory. A task processes its source dataset in batches at a configured
// speed; each batch's answers are those of the async emulator (emulator.Completion), so tests can
// compute every expected row. It follows docs/api.md, "Batch mode (AI Studio)". The sources do
// not settle how result rows map to input lines, the result files' names, the validation errors'
// names and numbering, what a failed or cancelled task leaves in its result dataset, nor what the
// batch operation reads like once the task ends: the emulator's choices are marked UNCONFIRMED
// where they are made.
package batchmode

import (
	"context"
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

	fomobi "github.com/yandex-cloud/go-genproto/yandex/cloud/ai/batch_inference/v1"
	fomods "github.com/yandex-cloud/go-genproto/yandex/cloud/ai/dataset/v1"
	textgen "github.com/yandex-cloud/go-genproto/yandex/cloud/ai/foundation_models/v1/text_generation"
	"github.com/yandex-cloud/go-genproto/yandex/cloud/operation"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/batchgpt/batchgpt/internal/emulator"
)

// Config configures a Server. The zero value processes tasks as fast as it can, in batches of
// DefaultBatchSize rows, with no faults, accepting the credentials of a default async emulator
// (any non-empty API key).
type Config struct {
	// RowsPerSecond is the processing speed of a task; 0 means no waiting.
	RowsPerSecond float64
	// BatchSize is the number of rows in one batch; 0 means DefaultBatchSize.
	BatchSize int
	// StepDelay is how long a task stays CREATED and then PENDING before it runs, and how long a
	// validation runs; 0 moves on at once (the real service takes about a minute for each).
	StepDelay time.Duration

	Faults Faults

	// Authorize checks the authorization metadata of every call, as emulator.Server.Authorize
	// does; nil uses a default async emulator's.
	Authorize func(authorization string) error

	Seed int64
	Logf func(format string, args ...any)
}

// DefaultBatchSize is the batch size when Config.BatchSize is 0. The real service's batch size
// is not documented (UNCONFIRMED).
const DefaultBatchSize = 100

// Server is the batch-mode emulator. It is safe for concurrent use.
type Server struct {
	cfg       Config
	authorize func(string) error
	faults    atomic.Pointer[Faults]

	rngMu sync.Mutex
	rng   *rand.Rand

	mu         sync.Mutex
	datasets   map[string]*dataset
	dsOrder    []string // creation order, deleted ids included (List skips them)
	tasks      map[string]*task
	taskOrder  []string
	ops        map[string]*op
	storageURL string

	ctx    context.Context // cancelled by Close: stops the tasks' goroutines
	stop   context.CancelFunc
	wg     sync.WaitGroup
	grpc   *grpc.Server
	http   *http.Server
	served sync.WaitGroup
}

// New returns a Server for cfg.
func New(cfg Config) *Server {
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	s := &Server{
		cfg:       cfg,
		authorize: cfg.Authorize,
		rng:       rand.New(rand.NewPCG(uint64(cfg.Seed), uint64(cfg.Seed)^0x5851f42d4c957f2d)),
		datasets:  make(map[string]*dataset),
		tasks:     make(map[string]*task),
		ops:       make(map[string]*op),
	}
	if s.authorize == nil {
		s.authorize = emulator.New(emulator.Config{}).Authorize
	}
	s.ctx, s.stop = context.WithCancel(context.Background())
	s.SetFaults(cfg.Faults)
	return s
}

// SetFaults replaces the faults from now on; a task already past a fault's point is not affected.
func (s *Server) SetFaults(f Faults) {
	f.InvalidLines = append([]int64(nil), f.InvalidLines...)
	s.faults.Store(&f)
}

// Register registers the emulated gRPC services on r.
func (s *Server) Register(r grpc.ServiceRegistrar) {
	fomods.RegisterDatasetServiceServer(r, datasetService{s: s})
	textgen.RegisterTextGenerationBatchServiceServer(r, batchService{s: s})
	fomobi.RegisterBatchInferenceServiceServer(r, inferenceService{s: s})
	operation.RegisterOperationServiceServer(r, operationService{s: s})
}

// Start serves gRPC on grpcAddr and the presigned URLs on storageAddr (both such as
// "127.0.0.1:0") until Close. It returns the gRPC target ("127.0.0.1:41234") and the storage
// base URL ("http://127.0.0.1:41235").
func (s *Server) Start(grpcAddr, storageAddr string) (target, storageURL string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.grpc != nil {
		return "", "", errors.New("start batch-mode emulator: already started")
	}
	gl, err := net.Listen("tcp", grpcAddr)
	if err != nil {
		return "", "", fmt.Errorf("start batch-mode emulator: %w", err)
	}
	hl, err := net.Listen("tcp", storageAddr)
	if err != nil {
		_ = gl.Close()
		return "", "", fmt.Errorf("start batch-mode emulator storage: %w", err)
	}
	s.storageURL = "http://" + hl.Addr().String()
	s.grpc = grpc.NewServer(grpc.UnaryInterceptor(s.intercept))
	s.Register(s.grpc)
	errLog := log.New(io.Discard, "", 0)
	if s.cfg.Logf != nil {
		errLog = log.New(emulator.LogfWriter(s.cfg.Logf), "batch-mode emulator: ", 0)
	}
	s.http = &http.Server{Handler: http.HandlerFunc(s.serveStorage), ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog}
	s.served.Add(2)
	go func() {
		defer s.served.Done()
		_ = s.grpc.Serve(gl) // returns nil after Stop
	}()
	go func() {
		defer s.served.Done()
		_ = s.http.Serve(hl) // returns http.ErrServerClosed after Close
	}()
	return gl.Addr().String(), s.storageURL, nil
}

// Close stops the servers and every task's processing, and waits for them.
func (s *Server) Close() error {
	s.stop()
	s.mu.Lock()
	g, h := s.grpc, s.http
	s.mu.Unlock()
	var err error
	if g != nil {
		g.Stop()
		err = h.Close()
		s.served.Wait()
	}
	s.wg.Wait()
	if err != nil {
		return fmt.Errorf("close batch-mode emulator: %w", err)
	}
	return nil
}

// intercept checks the credentials of every call, then draws the UNAVAILABLE fault.
func (s *Server) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	var h string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("authorization"); len(v) > 0 {
			h = v[0]
		}
	}
	if err := s.authorize(h); err != nil {
		s.logf("%s: unauthenticated: %v", info.FullMethod, err)
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	if s.chance(s.faults.Load().UnavailableRate) {
		s.logf("%s: fault unavailable", info.FullMethod)
		return nil, status.Error(codes.Unavailable, "emulated fault: service unavailable")
	}
	resp, err := handler(ctx, req)
	s.logf("%s: %v", info.FullMethod, status.Code(err))
	return resp, err
}

func (s *Server) logf(format string, args ...any) {
	if s.cfg.Logf != nil {
		s.cfg.Logf(format, args...)
	}
}

// chance draws true with probability p; p <= 0 draws nothing, so sequences stay reproducible
// when the fault is off.
func (s *Server) chance(p float64) bool {
	if p <= 0 {
		return false
	}
	s.rngMu.Lock()
	defer s.rngMu.Unlock()
	return s.rng.Float64() < p
}

// idAlphabet is the alphabet of the ids seen in recorded runs ("fds3dei2ej0kmd50ab2e").
const idAlphabet = "0123456789abcdefghijklmnopqrstuv"

// newID returns prefix followed by random characters, 20 in all, as recorded ids are: datasets
// and their validations start "fds", batch tasks and their operations "fbi".
func (s *Server) newID(prefix string) string {
	s.rngMu.Lock()
	defer s.rngMu.Unlock()
	var b strings.Builder
	b.WriteString(prefix)
	for b.Len() < 20 {
		b.WriteByte(idAlphabet[s.rng.IntN(len(idAlphabet))])
	}
	return b.String()
}
