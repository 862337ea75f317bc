package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
)

// DefaultTokenizeRPS is the tokenizer's default quota per folder: 50 requests a second
// (docs/api.md §5), a quota of its own, apart from submissions and polls.
const DefaultTokenizeRPS = 50

// Token is one token of a TokenizeResponse (yandex.cloud.ai.foundation_models.v1.Token).
type Token struct {
	ID      Int64  `json:"id"` // int64: a string in proto-JSON, a number from some clients
	Text    string `json:"text"`
	Special bool   `json:"special"` // proto-JSON omits false
}

// TokenizeResponse is the tokenizer's answer (docs/api.md §7): the tokens and the model version.
type TokenizeResponse struct {
	Tokens       []Token `json:"tokens"`
	ModelVersion string  `json:"modelVersion"`
}

// Tokenize counts the tokens of text for modelURI: POST /foundationModels/v1/tokenize, free
// (docs/api.md §7), on the completion endpoint's host, under the tokenizer's pacer.
func (c *Client) Tokenize(ctx context.Context, modelURI, text string) (*TokenizeResponse, error) {
	body, err := json.Marshal(struct {
		ModelURI string `json:"modelUri"`
		Text     string `json:"text"`
	}{modelURI, text})
	if err != nil {
		return nil, fmt.Errorf("tokenize: %w", err)
	}
	return c.tokenize(ctx, "tokenize", "/foundationModels/v1/tokenize", body)
}

// TokenizeCompletion counts the input tokens of a completion request body, as completionAsync
// would take it: POST /foundationModels/v1/tokenizeCompletion (docs/api.md §7). Whether its
// count is exactly the usage.inputTextTokens the completion reports is UNCONFIRMED.
func (c *Client) TokenizeCompletion(ctx context.Context, body []byte) (*TokenizeResponse, error) {
	return c.tokenize(ctx, "tokenize completion", "/foundationModels/v1/tokenizeCompletion", body)
}

func (c *Client) tokenize(ctx context.Context, op, path string, body []byte) (*TokenizeResponse, error) {
	var out TokenizeResponse
	folder := c.cfg.Folder
	if folder == "" && c.needsFolder {
		// A person's IAM token names its folder as for a completion; that the tokenizer asks for
		// it too is UNCONFIRMED (docs/api.md §6).
		folder = modelFolder(body)
	}
	err := c.do(ctx, op, c.cfg.TokenizePacer, func() (*http.Request, error) {
		return c.post(c.baseURL+path, body, folder)
	}, &out, nil)
	if err != nil {
		return nil, err
	}
	return &out, nil
}
