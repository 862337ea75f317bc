package job

import (
	"context"
	"fmt"
	"sync/atomic"

	"golang.org/x/sync/errgroup"
)

// TokenCounter counts the input tokens of one completion request body: the API's free tokenizer
// (api.Client.TokenizeCompletion, docs/api.md §7), which the caller paces.
type TokenCounter func(ctx context.Context, body []byte) (int64, error)

// countWorkers bounds the tokenizer requests in flight: the pacer sets the rate, a few requests at
// once keep it there despite each one's round trip.
const countWorkers = 8

// countTokens sums the tokens of bodies; the first failure ends the count.
func countTokens(ctx context.Context, bodies [][]byte, count TokenCounter) (int64, error) {
	var total atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(countWorkers)
	for _, b := range bodies {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			n, err := count(gctx, b)
			if err != nil {
				return fmt.Errorf("count tokens: %w", err)
			}
			total.Add(n)
			return nil
		})
	}
	err := g.Wait()
	if err == nil {
		err = ctx.Err()
	}
	return total.Load(), err
}
