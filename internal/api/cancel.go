package api

import (
	"context"
	"errors"
	"net/http"
	"net/url"
)

// Cancel asks the API to cancel operation id: GET {operations endpoint}/operations/{id}:cancel,
// the HTTP rule of OperationService.Cancel (docs/api.md §1, §8). It is an operation call, paced by
// the poll pacer and retried like a read. The answer is the operation: done with error code 1
// (CANCELLED) when the cancel stopped it, or as it finished when it was done already. Cancel is
// best effort: an operation still running in the answer may yet finish (docs/api.md §8). What
// the real API answers for an operation that finished before the cancel (the operation, or an
// error such as FAILED_PRECONDITION) is UNCONFIRMED: callers read the operation when the cancel
// is refused.
func (c *Client) Cancel(ctx context.Context, id string) (*Operation, error) {
	var op Operation
	err := c.do(ctx, "cancel operation "+id, c.cfg.PollPacer, func() (*http.Request, error) {
		return http.NewRequest(http.MethodGet, c.opsURL+url.PathEscape(id)+":cancel", nil)
	}, &op, nil)
	if err != nil {
		return nil, err
	}
	if op.ID == "" {
		return nil, &BodyError{Op: "cancel operation " + id, Err: errors.New("operation without id")}
	}
	return &op, nil
}
