package job

import (
	"strings"

	"github.com/batchgpt/batchgpt/batch"
	"github.com/batchgpt/batchgpt/internal/api"
)

// KindPermissionDenied is the error kind of a row whose own model the API refused (403); it sits
// beside the other kinds of result.go.
const KindPermissionDenied = "permission-denied"

// deniedOwnModel reports whether err is the API refusing a model that this row asks for on its
// own (403, docs/api.md §4): a model that needs access on request, or a folder the credentials
// cannot use. That fails the row; a 403 for the run's own model concerns every row and stops the
// run, resumable, like any other auth failure.
func (r *runner) deniedOwnModel(row batch.Row, err error) bool {
	if !api.PermissionDenied(err) {
		return false
	}
	m := r.model(row)
	return m != "" && normalModel(m) != normalModel(r.j.ModelURI())
}

// normalModel spells out the default version of a gpt:// URI: gpt://f/m is gpt://f/m/latest
// (docs/api.md §2).
func normalModel(uri string) string {
	if rest, ok := strings.CutPrefix(uri, "gpt://"); ok && strings.Count(rest, "/") == 1 {
		return uri + "/latest"
	}
	return uri
}
