package cmd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/batchgpt/batchgpt/internal/api"
	"github.com/batchgpt/batchgpt/internal/auth"
	"github.com/batchgpt/batchgpt/internal/job"
)

// tokenCounter returns what counts the input tokens of a row for --dry-run --exact-tokens: the
// API's free tokenizer (tokenizeCompletion, docs/api.md §7) at the run's completion endpoint,
// under a pacer of its own at the tokenizer's quota, with the credentials of a run (the built-in
// emulator's with --emulator). No credentials is a usage mistake. stop ends what it started.
func (e *env) tokenCounter(ctx context.Context, rc *runConfig, logger *slog.Logger) (count job.TokenCounter, stop func(), err error) {
	stop = func() {}
	endpoint := rc.settings.Endpoint
	var creds api.Credentials
	if rc.emulator {
		srv, key, err := startEmulator(rc.emulatorLatency, rc.emulatorFaults)
		if err != nil {
			return nil, stop, err
		}
		stop = func() { srv.Close() }
		endpoint, creds = srv.URL, auth.APIKey(key)
	} else {
		creds, err = connector(rc.auth, logger)(ctx)
		var ue *UsageError
		if errors.As(err, &ue) {
			return nil, stop, usagef("--exact-tokens asks the API's tokenizer, which needs credentials: %v", err)
		}
		if err != nil {
			return nil, stop, err
		}
	}
	client, err := api.New(api.Config{Endpoint: endpoint, OperationsEndpoint: endpoint, Credentials: creds,
		NoDataLogging: rc.settings.NoDataLogging, HTTPClient: &http.Client{Transport: api.NewTransport()},
		TokenizePacer: api.NewPacer(api.DefaultTokenizeRPS, 0), RequestTimeout: rc.tuning.RequestTimeout,
		Logger: logger, InFlight: e.kill})
	if err != nil {
		stop()
		return nil, func() {}, err
	}
	return func(ctx context.Context, body []byte) (int64, error) {
		res, err := client.TokenizeCompletion(ctx, body)
		if err != nil {
			if api.PermissionDenied(err) || isUnauthorized(err) {
				return 0, fmt.Errorf("%w: %w", job.ErrAuth, err)
			}
			return 0, err
		}
		return int64(len(res.Tokens)), nil
	}, stop, nil
}

// isUnauthorized reports whether err is the API refusing the credentials (401).
func isUnauthorized(err error) bool {
	var ae *api.Error
	return errors.As(err, &ae) && ae.HTTPStatus == http.StatusUnauthorized
}
