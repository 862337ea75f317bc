package batchapi

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	fomobi "github.com/yandex-cloud/go-genproto/yandex/cloud/ai/batch_inference/v1"
	fomods "github.com/yandex-cloud/go-genproto/yandex/cloud/ai/dataset/v1"
	textgen "github.com/yandex-cloud/go-genproto/yandex/cloud/ai/foundation_models/v1/text_generation"
	"github.com/yandex-cloud/go-genproto/yandex/cloud/operation"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/batchgpt/batchgpt/internal/auth"
	"github.com/batchgpt/batchgpt/internal/retry"
)

// DefaultEndpoint is where the SDK sends the dataset, batch and operation services (docs/api.md §9).
const DefaultEndpoint = "llm.api.cloud.yandex.net:443"

// Defaults of Config.
const (
	DefaultPartSize    = 100 << 20 // the SDK's chunk size (docs/api.md §9)
	DefaultCallTimeout = time.Minute
	DefaultPollEvery   = 10 * time.Second
)

// ErrOutcomeUnknown wraps the error of a call that creates or changes something (CreateDataset,
// StartTask, Validate, Cancel, Delete, the end of a multipart upload) when the answer does not say
// whether the server acted: the API has no idempotency (docs/api.md §6), so the call is not
// repeated here. Look the object up (FindDatasets by labels, FindTasks by source dataset) before
// repeating it.
var ErrOutcomeUnknown = errors.New("outcome unknown: the call may or may not have taken effect")

// Config configures a Client.
type Config struct {
	// Endpoint is host:port of the gRPC services; empty means DefaultEndpoint.
	Endpoint string
	// Insecure dials plaintext; refused unless Endpoint is a loopback address (the emulator).
	Insecure bool
	// Credentials is asked on every call, so that an IAM token is refreshed over long waits.
	Credentials auth.Source
	// FolderID is the folder datasets are created in and listed from.
	FolderID string
	// HTTPClient carries the uploads and downloads of presigned URLs; nil uses a default one.
	HTTPClient *http.Client
	Logger     *slog.Logger // nil discards

	// PartSize splits an upload larger than it into a multipart upload; 0 means DefaultPartSize.
	// Parts must be at least 5 MB (docs/api.md §9) unless Endpoint is a loopback address.
	PartSize int64
	// TempDir holds downloaded result files while they are read; empty means os.TempDir.
	TempDir string
	// Retry bounds the tries of an idempotent read and of a presigned upload or download;
	// unset fields take the retry package's defaults (retry.Policy.API).
	Retry retry.Policy
	// CallTimeout bounds one gRPC try; 0 means DefaultCallTimeout.
	CallTimeout time.Duration
}

// Client is the client of batch mode. It is safe for concurrent use.
type Client struct {
	cfg  Config
	log  *slog.Logger
	conn *grpc.ClientConn
	ds   fomods.DatasetServiceClient
	bc   textgen.TextGenerationBatchServiceClient
	bi   fomobi.BatchInferenceServiceClient
	ops  operation.OperationServiceClient
	// loopback relaxes the checks that only the emulator can pass (plaintext, small parts).
	loopback bool
}

// minPartSize and maxPartSize bound a part of a multipart upload, the last excepted, and
// maxPartSize a single upload too (docs/api.md §9).
const (
	minPartSize = 5 << 20
	maxPartSize = 5 << 30
)

// maxParts bounds the parts of one multipart upload, as Object Storage does.
const maxParts = 10000

// Dial checks cfg and connects. The connection is lazy: a wrong endpoint shows at the first call.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("batchapi dial: %w", err)
	}
	if cfg.Endpoint == "" {
		cfg.Endpoint = DefaultEndpoint
	}
	host, _, err := net.SplitHostPort(cfg.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("batchapi dial: endpoint %q is not host:port: %w", cfg.Endpoint, err)
	}
	loopback := isLoopback(host)
	if cfg.Insecure && !loopback {
		return nil, fmt.Errorf("batchapi dial: endpoint %q: plaintext is only allowed on a loopback address; use TLS", cfg.Endpoint)
	}
	if cfg.Credentials == nil {
		return nil, errors.New("batchapi dial: no credentials")
	}
	if cfg.FolderID == "" {
		return nil, errors.New("batchapi dial: no folder id")
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = DefaultPartSize
	}
	if cfg.PartSize < 0 || cfg.PartSize < minPartSize && !loopback || cfg.PartSize > maxPartSize {
		return nil, fmt.Errorf("batchapi dial: part size %d bytes: parts must be %d to %d bytes", cfg.PartSize, minPartSize, int64(maxPartSize))
	}
	if cfg.HTTPClient == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		// No overall timeout (a result file may take long), but a server that never answers is
		// given up on and the request tried again.
		t.ResponseHeaderTimeout = 2 * time.Minute
		cfg.HTTPClient = &http.Client{Transport: t}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	cfg.Retry = cfg.Retry.API()
	tc := credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12}) // system roots
	if cfg.Insecure {
		tc = insecure.NewCredentials()
	}
	c := &Client{cfg: cfg, log: cfg.Logger, loopback: loopback}
	conn, err := grpc.NewClient(cfg.Endpoint, grpc.WithTransportCredentials(tc), grpc.WithUnaryInterceptor(c.authorize))
	if err != nil {
		return nil, fmt.Errorf("batchapi dial %s: %w", cfg.Endpoint, err)
	}
	c.conn = conn
	c.ds = fomods.NewDatasetServiceClient(conn)
	c.bc = textgen.NewTextGenerationBatchServiceClient(conn)
	c.bi = fomobi.NewBatchInferenceServiceClient(conn)
	c.ops = operation.NewOperationServiceClient(conn)
	return c, nil
}

// Close closes the connection.
func (c *Client) Close() error {
	if err := c.conn.Close(); err != nil {
		return fmt.Errorf("batchapi close: %w", err)
	}
	return nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// authorize puts the credentials on every call, asked anew each time so that a refreshing source
// renews its IAM token over a multi-day wait. An UNAUTHENTICATED answer invalidates the header
// and the call is sent once more: the server refused it before acting, so this is safe even for
// calls that are not idempotent.
func (c *Client) authorize(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	for try := 0; ; try++ {
		h, err := c.cfg.Credentials.Authorization(ctx)
		if err != nil {
			return &credentialsError{err}
		}
		err = invoker(metadata.AppendToOutgoingContext(ctx, "authorization", h), method, req, reply, cc, opts...)
		if status.Code(err) != codes.Unauthenticated || try > 0 {
			return withoutSecret(err, h)
		}
		c.log.Debug("batchapi: unauthenticated, refreshing credentials", "method", method)
		c.cfg.Credentials.Invalidate(h)
	}
}

// withoutSecret masks the credential of header h wherever the server's message repeats it: a
// refusal may quote what it refused, and errors end up in logs.
func withoutSecret(err error, h string) error {
	_, secret, _ := strings.Cut(h, " ")
	st, ok := status.FromError(err)
	if err == nil || !ok || secret == "" || !strings.Contains(st.Message(), secret) {
		return err
	}
	return status.Error(st.Code(), strings.ReplaceAll(st.Message(), secret, "[REDACTED]"))
}

// credentialsError is a failure of the credentials source: nothing was sent.
type credentialsError struct{ err error }

func (e *credentialsError) Error() string { return "credentials: " + e.err.Error() }
func (e *credentialsError) Unwrap() error { return e.err }

// transient reports whether a read that failed with err is worth another try.
func transient(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.ResourceExhausted, codes.DeadlineExceeded:
		return true
	}
	return false
}

// refused reports whether err says the server did not act on the call: it refused it outright.
// Any other failure (UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, a cancelled context, ...) may
// come after the server acted.
func refused(err error) bool {
	var ce *credentialsError
	if errors.As(err, &ce) {
		return true
	}
	switch status.Code(err) {
	case codes.InvalidArgument, codes.NotFound, codes.AlreadyExists, codes.PermissionDenied,
		codes.FailedPrecondition, codes.OutOfRange, codes.Unimplemented, codes.Unauthenticated,
		codes.ResourceExhausted:
		return true
	}
	return false
}

// read makes an idempotent call, retrying transient failures with back-off. Each try has its own
// deadline.
func (c *Client) read(ctx context.Context, op string, call func(context.Context) error) error {
	var err error
	for attempt := 1; ; attempt++ {
		err = c.once(ctx, call)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || !transient(err) {
			return fmt.Errorf("%s: %w", op, err)
		}
		if attempt >= c.cfg.Retry.Attempts {
			return fmt.Errorf("%s: giving up after %d tries: %w", op, attempt, err)
		}
		d := c.cfg.Retry.Backoff.Delay(attempt)
		c.log.Debug("batchapi: transient error, retrying", "op", op, "try", attempt, "delay", d, "code", status.Code(err).String())
		if serr := retry.Sleep(ctx, d); serr != nil {
			return fmt.Errorf("%s: %w (last error: %w)", op, serr, err)
		}
	}
}

// write makes a call that is not idempotent. A quota refusal (RESOURCE_EXHAUSTED) is taken to
// have done nothing, as a 429 of the async API is (docs/api.md §4; for batch mode UNCONFIRMED),
// and is waited out; any other failure that is not a refusal is ErrOutcomeUnknown.
func (c *Client) write(ctx context.Context, op string, call func(context.Context) error) error {
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%s: %w", op, err) // nothing sent this time
		}
		err := c.once(ctx, call)
		switch {
		case err == nil:
			return nil
		case status.Code(err) == codes.ResourceExhausted && attempt < c.cfg.Retry.Attempts && ctx.Err() == nil:
			if serr := retry.Sleep(ctx, c.cfg.Retry.Backoff.Delay(attempt)); serr != nil {
				return fmt.Errorf("%s: %w (last error: %w)", op, serr, err)
			}
		case refused(err):
			return fmt.Errorf("%s: %w", op, err)
		default:
			return fmt.Errorf("%s: %w: %w", op, ErrOutcomeUnknown, err)
		}
	}
}

// rpc makes one gRPC call the way how says (c.read or c.write) and returns its answer.
func rpc[Req, Resp any](ctx context.Context, how func(context.Context, string, func(context.Context) error) error, op string,
	method func(context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, error) {
	var resp Resp
	err := how(ctx, op, func(ctx context.Context) (err error) {
		resp, err = method(ctx, req)
		return err
	})
	return resp, err
}

func (c *Client) once(ctx context.Context, call func(context.Context) error) error {
	cctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
	defer cancel()
	return call(cctx)
}
