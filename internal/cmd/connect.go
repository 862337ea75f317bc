package cmd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/batchgpt/batchgpt/internal/api"
	"github.com/batchgpt/batchgpt/internal/auth"
	"github.com/batchgpt/batchgpt/internal/job"
)

// findCredentials resolves the credentials of the auth flags ac and the environment (YC_API_KEY,
// YC_IAM_TOKEN), the first that is set winning (credentialsHelp); desc names the source used,
// without secrets.
func findCredentials(ctx context.Context, ac auth.Config) (src auth.Source, desc string, err error) {
	ac.APIKey, ac.IAMToken = os.Getenv("YC_API_KEY"), os.Getenv("YC_IAM_TOKEN")
	return auth.FromConfig(ctx, ac, &http.Client{Transport: api.NewTransport(), Timeout: 30 * time.Second})
}

// connector is how run, resume, cancel and an exact-token dry run find their credentials once they
// need them: none configured is a usage mistake (exit 2), a source that fails an auth error.
func connector(ac auth.Config, logger *slog.Logger) func(context.Context) (api.Credentials, error) {
	return func(ctx context.Context) (api.Credentials, error) {
		src, desc, err := findCredentials(ctx, ac)
		if err != nil {
			if errors.Is(err, auth.ErrNoCredentials) {
				return nil, usagef("%v (or use --emulator to try batchgpt against its built-in emulator)", err)
			}
			return nil, fmt.Errorf("%w: %w", job.ErrAuth, err)
		}
		logger.Info("credentials", "using", desc)
		return src, nil
	}
}
