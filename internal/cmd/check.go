package cmd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/batchgpt/batchgpt/batch"
	"github.com/batchgpt/batchgpt/internal/api"
	"github.com/batchgpt/batchgpt/internal/auth"
	"github.com/batchgpt/batchgpt/internal/job"
	"github.com/batchgpt/batchgpt/internal/retry"
)

// checkOperationID is a well-formed operation id that no operation has: the operations
// endpoint answers 404 for it (docs/api.md §4), which shows that it answers, for free.
const checkOperationID = "d7qbatchgptcheck0000"

// checkTimeout bounds the whole preflight: a nightly job must not hang on it.
const checkTimeout = 2 * time.Minute

func (e *env) checkCommand() *cli.Command {
	return &cli.Command{
		Name:  "check",
		Usage: "verify, without spending anything, that a run would work: credentials, IAM token, folder and model, endpoints",
		Description: "One line per check, in order; a check that fails ends the preflight:\n" +
			"   credentials          which source is used (the first that is set, see below)\n" +
			"   iam token            one is made (service account key, VM metadata); an API key needs none\n" +
			"   model                the folder and model are usable: one call to the API's free tokenizer for that model\n" +
			"   operations endpoint  answers (a made-up operation id, which it reports not found)\n" +
			"Exit code 0 when all pass, 4 when the credentials, the folder or the model are refused (the server's message is\n" +
			"printed), 1 when an endpoint cannot be reached or keeps failing. A nightly job starts with it:\n" +
			"   batchgpt check --folder b1g... --model yandexgpt-lite && batchgpt run prompts.jsonl\n\n" + credentialsHelp,
		Flags: append(append(pickFlags(requestFlags(), "folder", "model", "endpoint", "operations-endpoint"),
			pickFlags(tuningFlags(), "request-timeout")...), authFlags()...),
		Action: func(c *cli.Context) error {
			if c.NArg() != 0 {
				return usagef("check: takes no arguments, got %d", c.NArg())
			}
			uri, err := batch.ModelURI(c.String("folder"), c.String("model"))
			if err != nil {
				return usagef("--model %q: %v (a short name needs --folder or YC_FOLDER_ID)", c.String("model"), err)
			}
			endpoint, ops := c.String("endpoint"), c.String("operations-endpoint")
			for name, v := range map[string]string{"--endpoint": endpoint, "--operations-endpoint": ops} {
				if _, err := api.CheckEndpoint(name, v); err != nil {
					return &UsageError{Msg: err.Error()}
				}
			}
			ac := auth.Config{SAKeyFile: c.String("sa-key-file"), IAMEndpoint: c.String("iam-endpoint"),
				MetadataURL: c.String("metadata-url"), UseMetadata: c.Bool("metadata"), AutoMetadata: true}
			if _, err := api.CheckEndpoint("--iam-endpoint", ac.IAMEndpoint); err != nil {
				return &UsageError{Msg: err.Error()}
			}
			ctx, cancel := context.WithTimeout(c.Context, checkTimeout)
			defer cancel()
			pf := &preflight{e: e, ac: ac, modelURI: uri, endpoint: endpoint, ops: ops, timeout: c.Duration("request-timeout")}
			return pf.run(ctx)
		},
	}
}

// preflight is one `batchgpt check`.
type preflight struct {
	e             *env
	ac            auth.Config
	modelURI      string
	endpoint, ops string
	timeout       time.Duration
}

// line prints one check's outcome.
func (p *preflight) line(name string, err error, detail string) {
	verdict := "ok    "
	if err != nil {
		verdict, detail = "FAILED", auth.Redact(err.Error())
	}
	fmt.Fprintf(p.e.stdout, "%-20s %s %s\n", name, verdict, detail)
}

// fail prints the failed check and the ones it leaves unchecked, and returns the error with its
// exit code: auth (4) when the credentials, folder or model were refused, else a plain error (1).
func (p *preflight) fail(name string, err error, refused bool, skipped ...string) error {
	p.line(name, err, "")
	for _, s := range skipped {
		fmt.Fprintf(p.e.stdout, "%-20s %s\n", s, "skipped")
	}
	if refused {
		return fmt.Errorf("check: %s: %w: %w", name, job.ErrAuth, err)
	}
	return fmt.Errorf("check: %s: %w", name, err)
}

func (p *preflight) run(ctx context.Context) error {
	// 1. Which credentials.
	src, desc, err := findCredentials(ctx, p.ac)
	if err != nil {
		return p.fail("credentials", err, true, "iam token", "model", "operations endpoint")
	}
	p.line("credentials", nil, desc+p.sourceHint())

	// 2. A token can be made (service account key, metadata); the other kinds are sent as they are.
	switch {
	case p.ac.SAKeyFile != "" || strings.HasPrefix(desc, "VM metadata"):
		if _, err := src.Authorization(ctx); err != nil {
			return p.fail("iam token", err, !unreachable(err), "model", "operations endpoint")
		}
		p.line("iam token", nil, "made one")
	case strings.HasPrefix(desc, "API key"):
		p.line("iam token", nil, "not needed: the API key is sent as it is")
	default:
		p.line("iam token", nil, "given (not refreshed; it lives at most 12 hours)")
	}

	client, err := api.New(api.Config{Endpoint: p.endpoint, OperationsEndpoint: p.ops, Credentials: src,
		HTTPClient: &http.Client{Transport: api.NewTransport()}, RequestTimeout: p.timeout,
		Retry:         retry.Policy{Attempts: 3},
		TokenizePacer: api.NewPacer(api.DefaultTokenizeRPS, 0), PollPacer: api.NewPacer(job.DefaultTuning().PollRPS, 0)})
	if err != nil {
		return p.fail("model", err, false, "operations endpoint")
	}

	// 3. The folder and model, by one free tokenizer call; it also shows the endpoint answers.
	res, err := client.Tokenize(ctx, p.modelURI, "batchgpt check")
	if err != nil {
		switch retry.Classify(err) {
		case retry.Auth, retry.Permanent:
			return p.fail("model", err, true, "operations endpoint")
		default:
			return p.fail("model", err, false, "operations endpoint")
		}
	}
	p.line("model", nil, fmt.Sprintf("%s: the tokenizer at %s answered (model version %s)", p.modelURI, p.endpoint, res.ModelVersion))

	// 4. The operations endpoint answers: a made-up id is not found, as it should be.
	_, err = client.Operation(ctx, checkOperationID)
	switch retry.Classify(err) {
	case retry.NotFound:
		p.line("operations endpoint", nil, p.ops+" answered")
	case retry.Auth:
		return p.fail("operations endpoint", err, true)
	case retry.Permanent:
		if err == nil {
			p.line("operations endpoint", nil, p.ops+" answered")
			break
		}
		// It answered, if not with the 404 expected (UNCONFIRMED what the real API says for an
		// id it never issued, docs/api.md §4).
		p.line("operations endpoint", nil, p.ops+" answered: "+auth.Redact(err.Error()))
	default:
		return p.fail("operations endpoint", err, false)
	}
	return nil
}

// sourceHint names where the credentials came from, for the line of the credentials check.
func (p *preflight) sourceHint() string {
	switch {
	case p.ac.SAKeyFile != "":
		return " (--sa-key-file or YC_SERVICE_ACCOUNT_KEY_FILE)"
	case strings.TrimSpace(os.Getenv("YC_API_KEY")) != "":
		return " (YC_API_KEY)"
	case strings.TrimSpace(os.Getenv("YC_IAM_TOKEN")) != "":
		return " (YC_IAM_TOKEN)"
	}
	return ""
}

// unreachable reports whether err is a failure to reach a token endpoint (or its 5xx and 429
// after retries) rather than a refusal.
func unreachable(err error) bool {
	var te *auth.TokenError
	if errors.As(err, &te) {
		return te.Temporary()
	}
	var ue *url.Error
	var ne net.Error
	return errors.As(err, &ue) || errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded)
}
