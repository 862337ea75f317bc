package api

import (
	"context"
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
	return c.getOperation(ctx, "cancel operation "+id, url.PathEscape(id)+":cancel")
}
