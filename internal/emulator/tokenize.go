package emulator

import (
	"hash/fnv"
	"net/http"
	"strings"
	"unicode"
)

// The free tokenizer (docs/api.md §7).
const (
	pathTokenize           = "/foundationModels/v1/tokenize"
	pathTokenizeCompletion = "/foundationModels/v1/tokenizeCompletion"
)

// tokenJSON is a yandex.cloud.ai.foundation_models.v1.Token in proto-JSON: the int64 id as a
// string, special omitted when false (whether the real gateway writes false values is
// UNCONFIRMED).
type tokenJSON struct {
	ID      int64  `json:"id,string"`
	Text    string `json:"text"`
	Special bool   `json:"special,omitempty"`
}

type tokenizeJSON struct {
	Tokens       []tokenJSON `json:"tokens"`
	ModelVersion string      `json:"modelVersion"`
}

// tokenize splits texts into the emulator's tokens: one per whitespace-separated word, the count
// CountTokens gives and the usage of a completion reports, so that a dry run's exact count is the
// input tokens a run is billed. The real tokenizer splits words into pieces and may add special
// tokens for the chat format (UNCONFIRMED); ids here are a hash of the word.
func tokenize(texts []string) []tokenJSON {
	out := []tokenJSON{}
	for _, t := range texts {
		words := strings.FieldsFunc(t, unicode.IsSpace)
		if len(words) == 0 && t != "" {
			words = []string{t} // CountTokens counts non-empty text as at least one token
		}
		for _, w := range words {
			h := fnv.New32a()
			h.Write([]byte(w))
			out = append(out, tokenJSON{ID: int64(h.Sum32() % 128000), Text: w})
		}
	}
	return out
}

// handleTokenize serves tokenize ({modelUri, text}) and tokenizeCompletion (a completion request
// body). Both are authenticated like completionAsync and refused for a denied model; they have a
// quota of their own (Config.TokenizeRPS) and, unlike completions, no faults. A completion longer
// than the context is still counted: finding that out is what the tokenizer is for (what the real
// one does then is UNCONFIRMED).
func (s *Server) handleTokenize(w http.ResponseWriter, r *http.Request, reqID string, completion bool) {
	body, ok := s.readFolderRequest(w, r, reqID, &s.st.tokenizes)
	if !ok {
		return
	}
	var modelURI, folder string
	var texts []string
	var rerr *requestError
	if completion {
		var req completionRequest
		req, rerr = parseCompletionRequest(body)
		if rerr != nil && rerr.tooLong {
			rerr = nil
		}
		modelURI, folder = req.modelURI, req.folder
		for _, m := range req.messages {
			texts = append(texts, m.Text)
		}
	} else {
		var text string
		modelURI, text, rerr = parseTokenizeRequest(body)
		folder, _ = parseModelURI(modelURI)
		texts = []string{text}
	}
	if hdr := r.Header.Get("x-folder-id"); hdr != "" {
		folder = hdr
	}
	if modelURI != "" && (*s.denied.Load())[normalModelURI(modelURI)] {
		s.st.permissionDenied.Add(1)
		writeGatewayErr(w, http.StatusForbidden, codePermissionDenied, "Access to model "+modelURI+" denied")
		return
	}
	if msg := s.folder(folder).allowTokenize(s.now().UnixNano()); msg != "" {
		s.st.rejected429.Add(1)
		writeGatewayErr(w, http.StatusTooManyRequests, codeResourceExhaust, msg)
		return
	}
	if rerr != nil {
		writeRequestErr(w, r, reqID, folder, rerr)
		return
	}
	emuWriteJSON(w, http.StatusOK, tokenizeJSON{Tokens: tokenize(texts), ModelVersion: modelVersion})
}

// parseTokenizeRequest decodes a TokenizeRequest {modelUri, text} as proto-JSON does (camelCase or
// snake_case names).
func parseTokenizeRequest(body []byte) (modelURI, text string, rerr *requestError) {
	top, rerr := protoObject(body, "TokenizeRequest")
	if rerr != nil {
		return "", "", rerr
	}
	if raw, ok := top["modelUri"]; ok && !isNull(raw) {
		if modelURI, rerr = protoString(raw, "modelUri"); rerr != nil {
			return "", "", rerr
		}
	}
	if raw, ok := top["text"]; ok && !isNull(raw) {
		if text, rerr = protoString(raw, "text"); rerr != nil {
			return "", "", rerr
		}
	}
	if _, ok := parseModelURI(modelURI); !ok {
		return modelURI, text, semanticErr("Failed to parse model URI")
	}
	return modelURI, text, nil
}
