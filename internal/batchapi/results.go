package batchapi

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/parquet-go/parquet-go"
	fomods "github.com/yandex-cloud/go-genproto/yandex/cloud/ai/dataset/v1"
)

// ResultRow is one row of a result dataset: the request as uploaded and the answer's text.
type ResultRow struct {
	Request  []Message
	Response string
	// NoResponse is set when the row's response is null. What a failed line looks like in a
	// result is not in the sources (docs/api.md §9, "Not settled by the sources").
	NoResponse bool
}

// parquetRow is the schema of a result file: request list<struct<role, text>> and response,
// all optional, as a recorded download had it (docs/api.md §9, "Result file").
type parquetRow struct {
	Request  []parquetMessage `parquet:"request,optional,list"`
	Response *string          `parquet:"response,optional"`
}

type parquetMessage struct {
	Role *string `parquet:"role,optional"`
	Text *string `parquet:"text,optional"`
}

// readBatch is how many rows are decoded at a time: a file is streamed, never held whole.
const readBatch = 256

// Results reads a result dataset and calls fn with each row, file after file in the SDK's order
// (sortFiles). Each file is downloaded to a temporary file, read, and removed. An error of fn
// stops the reading and is returned as is.
func (c *Client) Results(ctx context.Context, resultDatasetID string, fn func(ResultRow) error) error {
	op := "read results of dataset " + resultDatasetID
	resp, err := rpc(ctx, c.read, op+": get download URLs", c.ds.GetDownloadUrls, &fomods.GetDownloadUrlsRequest{DatasetId: resultDatasetID})
	if err != nil {
		return err
	}
	files := resp.GetDownloadUrls()
	keys := make([]string, len(files))
	urls := make(map[string]string, len(files))
	for i, f := range files {
		keys[i], urls[f.GetKey()] = f.GetKey(), f.GetUrl()
	}
	if len(urls) != len(keys) {
		return fmt.Errorf("%s: the download URLs repeat a key", op)
	}
	sortFiles(keys)
	for _, k := range keys {
		if err := c.readFile(ctx, fmt.Sprintf("%s: file %q", op, k), urls[k], fn); err != nil {
			return err
		}
	}
	return nil
}

// errStop marks an error of the caller's fn, returned unwrapped.
type errStop struct{ err error }

func (e *errStop) Error() string { return e.err.Error() }

func (c *Client) readFile(ctx context.Context, op, rawURL string, fn func(ResultRow) error) (err error) {
	f, err := os.CreateTemp(c.cfg.TempDir, "batchgpt-result-*.parquet")
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer func() {
		cerr := f.Close()
		rerr := os.Remove(f.Name())
		if err == nil {
			err = errors.Join(cerr, rerr)
		}
	}()
	var size int64
	err = c.presigned(ctx, op, rawURL, func(ctx context.Context) (*http.Request, error) {
		// A retry starts the file over.
		if err := f.Truncate(0); err != nil {
			return nil, err
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
		return http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	}, func(resp *http.Response) (err error) {
		size, err = io.Copy(f, resp.Body)
		return err
	})
	if err != nil {
		return err
	}
	if err := readParquet(ctx, f, size, fn); err != nil {
		var stop *errStop
		if errors.As(err, &stop) {
			return stop.err
		}
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// readParquet decodes a result file readBatch rows at a time.
func readParquet(ctx context.Context, r io.ReaderAt, size int64, fn func(ResultRow) error) error {
	pf, err := parquet.OpenFile(r, size)
	if err != nil {
		return fmt.Errorf("open parquet: %w", err)
	}
	// A file of another shape would otherwise read as rows of nulls.
	var cols []string
	for _, f := range pf.Schema().Fields() {
		cols = append(cols, f.Name())
	}
	for _, want := range []string{"request", "response"} {
		if !slices.Contains(cols, want) {
			return fmt.Errorf("parquet schema has no %q column (columns %q)", want, cols)
		}
	}
	pr := parquet.NewGenericReader[parquetRow](pf)
	defer pr.Close()
	buf := make([]parquetRow, readBatch)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		clear(buf) // the reader appends into the rows' slices
		n, rerr := pr.Read(buf)
		for _, row := range buf[:n] {
			if err := fn(resultOf(row)); err != nil {
				return &errStop{err}
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return fmt.Errorf("read parquet: %w", rerr)
		}
	}
}

func resultOf(row parquetRow) ResultRow {
	out := ResultRow{Request: make([]Message, len(row.Request)), NoResponse: row.Response == nil}
	for i, m := range row.Request {
		if m.Role != nil {
			out.Request[i].Role = *m.Role
		}
		if m.Text != nil {
			out.Request[i].Text = *m.Text
		}
	}
	if row.Response != nil {
		out.Response = *row.Response
	}
	return out
}

// sortFiles orders the keys of a dataset's files as the SDK reads them (docs/api.md §9, step 6):
// by their stems (the last path element without its extension), numeric stems first by number,
// then the others by name; equal stems by the whole key, so that the order is total.
func sortFiles(keys []string) {
	slices.SortFunc(keys, func(a, b string) int {
		sa, sb := stem(a), stem(b)
		na, aNum := numeric(sa)
		nb, bNum := numeric(sb)
		switch {
		case aNum && bNum:
			if c := na.cmp(nb); c != 0 {
				return c
			}
		case aNum:
			return -1
		case bNum:
			return 1
		default:
			if c := strings.Compare(sa, sb); c != 0 {
				return c
			}
		}
		return strings.Compare(a, b)
	})
}

func stem(key string) string {
	base := path.Base(key)
	if i := strings.LastIndexByte(base, '.'); i > 0 {
		return base[:i]
	}
	return base
}

// number is a stem of decimal digits, compared by value without a size limit.
type number string

func numeric(s string) (number, bool) {
	if s == "" {
		return "", false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return "", false
		}
	}
	return number(strings.TrimLeft(s, "0")), true
}

func (n number) cmp(m number) int {
	return cmp.Or(cmp.Compare(len(n), len(m)), strings.Compare(string(n), string(m)))
}
