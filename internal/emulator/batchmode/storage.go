package batchmode

import (
	"bytes"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/batchgpt/batchgpt/internal/emulator"
)

// sigParam carries a presigned URL's "signature": the URLs need no Authorization header, as
// Object Storage's presigned URLs do not (the SDK sends none).
const sigParam = "X-Emulator-Signature"

// storageLink returns a presigned URL: /upload/<dataset>[/<part>] or /download/<dataset>/<key>;
// the caller holds s.mu.
func (s *Server) storageLink(kind string, ds *dataset, sub string) string {
	p := "/" + kind + "/" + ds.info.DatasetId
	if sub != "" {
		p += "/" + url.PathEscape(sub)
	}
	return s.storageURL + p + "?" + sigParam + "=" + ds.sig
}

// maxUpload bounds one PUT body held in memory.
const maxUpload = 1 << 30

// serveStorage answers the presigned URLs with S3's statuses: 200 and an ETag for a PUT, 403
// for a bad signature or a body of another size than declared (the real URLs sign the
// content-length), 404 for an unknown dataset or key.
func (s *Server) serveStorage(w http.ResponseWriter, r *http.Request) {
	kind, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	id, sub, _ := strings.Cut(rest, "/")
	switch {
	case kind == "upload" && r.Method == http.MethodPut:
		body, err := io.ReadAll(io.LimitReader(r.Body, maxUpload+1))
		if err != nil {
			http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		ds := s.datasets[id]
		if ds == nil || r.URL.Query().Get(sigParam) != ds.sig {
			http.Error(w, "SignatureDoesNotMatch", http.StatusForbidden)
			return
		}
		if sub == "" {
			if ds.draftSize == 0 || ds.parts != nil || int64(len(body)) != ds.draftSize {
				http.Error(w, "SignatureDoesNotMatch: content-length differs from the declared size", http.StatusForbidden)
				return
			}
			ds.draft, ds.uploaded = body, true
			ds.uploads++
		} else {
			n, err := strconv.Atoi(sub)
			if err != nil || n < 1 || n > len(ds.parts) {
				http.Error(w, "NoSuchUpload", http.StatusNotFound)
				return
			}
			ds.parts[n-1], ds.partTags[n-1] = body, etag(body)
		}
		w.Header().Set("ETag", etag(body))
		w.WriteHeader(http.StatusOK)
	case kind == "download" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		key, err := url.PathUnescape(sub)
		if err != nil {
			http.Error(w, "NoSuchKey", http.StatusNotFound)
			return
		}
		s.mu.Lock()
		ds := s.datasets[id]
		var data []byte
		found := false
		if ds != nil && r.URL.Query().Get(sigParam) == ds.sig {
			for _, f := range ds.files {
				if f.key == key {
					data, found = f.data, true
				}
			}
		}
		s.mu.Unlock()
		if !found {
			http.Error(w, "NoSuchKey", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("ETag", etag(data))
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
	default:
		http.Error(w, "MethodNotAllowed", http.StatusMethodNotAllowed)
	}
}

// ResultRow is one row of a result file: the request as uploaded and the answer's text, the
// schema of a dataset file downloaded from the real service (docs/api.md, "Batch mode (AI
// Studio)"). Tests and clients read files with it.
type ResultRow struct {
	Request  []ResultMessage `parquet:"request,optional,list"`
	Response *string         `parquet:"response,optional"`
}

// ResultMessage is one message of ResultRow.Request.
type ResultMessage struct {
	Role *string `parquet:"role,optional"`
	Text *string `parquet:"text,optional"`
}

// writeParquet writes rows as one Parquet file: the requests, and the answers when answers is
// not nil (a source dataset's file has no response column).
func writeParquet(rows [][]emulator.Message, answers []string) ([]byte, error) {
	var buf bytes.Buffer
	msgNode := parquet.Optional(parquet.Group{"role": parquet.Optional(parquet.String()), "text": parquet.Optional(parquet.String())})
	group := parquet.Group{"request": parquet.Optional(parquet.List(msgNode))}
	if answers != nil {
		group["response"] = parquet.Optional(parquet.String())
	}
	w := parquet.NewGenericWriter[ResultRow](&buf, parquet.NewSchema("schema", group))
	out := make([]ResultRow, len(rows))
	for i, msgs := range rows {
		for _, m := range msgs {
			out[i].Request = append(out[i].Request, ResultMessage{Role: &m.Role, Text: &m.Text})
		}
		if answers != nil {
			out[i].Response = &answers[i]
		}
	}
	if _, err := w.Write(out); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
