package emulator

import (
	"encoding/json"
	"net/http"
)

// gRPC codes (google.rpc.Code) used by the emulator.
const (
	codeCancelled       = 1
	codeInvalidArgument = 3
	codeNotFound        = 5
	codeResourceExhaust = 8
	codeInternal        = 13
	codeUnavailable     = 14
	codeUnauthenticated = 16
)

// gatewayErrorBody is the llm.api gateway error (docs/api.md §4).
type gatewayErrorBody struct {
	Error gatewayError `json:"error"`
}

type gatewayError struct {
	GRPCCode   int    `json:"grpcCode"`
	HTTPCode   int    `json:"httpCode"`
	Message    string `json:"message"`
	HTTPStatus string `json:"httpStatus"`
	Details    []any  `json:"details"`
}

// genericErrorBody is the generic Yandex Cloud REST error (docs/api.md §4).
type genericErrorBody struct {
	Code    int              `json:"code"`
	Message string           `json:"message"`
	Details []requestInfoDet `json:"details"`
}

type requestInfoDet struct {
	Type      string `json:"@type"`
	RequestID string `json:"requestId"`
}

// unmarshalErrorBody is the grpc-gateway body for a body that does not
// decode: {"error":"invalid character..","code":3,"message":"..","details":[]}.
type unmarshalErrorBody struct {
	Error   string `json:"error"`
	Code    int    `json:"code"`
	Message string `json:"message"`
	Details []any  `json:"details"`
}

func emuWriteJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own fixed types are marshalled; this cannot happen.
		status, b = http.StatusInternalServerError, []byte(`{"code":13,"message":"internal error","details":[]}`)
	}
	emuWriteRaw(w, status, b)
}

func emuWriteRaw(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func writeGatewayErr(w http.ResponseWriter, status, code int, msg string) {
	emuWriteJSON(w, status, gatewayErrorBody{Error: gatewayError{
		GRPCCode: code, HTTPCode: status, Message: msg, HTTPStatus: http.StatusText(status), Details: []any{},
	}})
}

func writeGenericErr(w http.ResponseWriter, status, code int, msg, requestID string) {
	emuWriteJSON(w, status, genericErrorBody{Code: code, Message: msg, Details: []requestInfoDet{{
		Type: "type.googleapis.com/google.rpc.RequestInfo", RequestID: requestID,
	}}})
}

func writeUnmarshalErr(w http.ResponseWriter, msg string) {
	emuWriteJSON(w, http.StatusBadRequest, unmarshalErrorBody{Error: msg, Code: codeInvalidArgument, Message: msg, Details: []any{}})
}
