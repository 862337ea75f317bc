package emulator_test

import (
	"net/http"
	"testing"

	"github.com/batchgpt/batchgpt/internal/emulator"
)

// TestUserAccountToken: completionAsync refuses a person's IAM token without x-folder-id with the
// API's 401 code 16; with the header, or for a service account's token, it is served; polls need
// no header.
func TestUserAccountToken(t *testing.T) {
	const user, sa = "t1.user-token", "t1.service-account-token"
	s, base := emuStart(t, emulator.Config{UserTokens: []string{user}, IAMTokens: []string{sa}})
	body := requestBody(testModel, userMsg("who am I")...)
	submit := base + "/foundationModels/v1/completionAsync"
	tests := []struct {
		name, token, folder string
		wantStatus          int
	}{
		{"user token without folder", user, "", http.StatusUnauthorized},
		{"user token with folder", user, testFolder, http.StatusOK},
		{"service account token without folder", sa, "", http.StatusOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := mustDo(t, http.MethodPost, submit, body, map[string]string{"Authorization": "Bearer " + tc.token, "x-folder-id": tc.folder})
			if tc.wantStatus == http.StatusUnauthorized {
				checkGenericError(t, r, http.StatusUnauthorized, 16, "You have to specify folder ID for user account")
				return
			}
			if r.status != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", r.status, tc.wantStatus, r.body)
			}
		})
	}
	if st := s.Stats(); st.Unauthorized != 1 || st.Submissions != 2 {
		t.Errorf("unauthorized %d, submissions %d; want 1 and 2 (a refused request is not a submission)", st.Unauthorized, st.Submissions)
	}
	id := submitOK(t, base, userMsg("poll me"))
	r := mustDo(t, http.MethodGet, base+"/operations/"+id, "", map[string]string{"Authorization": "Bearer " + user})
	if r.status != http.StatusOK {
		t.Errorf("poll with a user token and no folder: status %d: %s", r.status, r.body)
	}
}

// TestDeniedModels: a denied model answers 403 code 7 with the gateway body and the model in the
// message, whatever its version spelling; other models of the folder are served; the list can
// change while serving.
func TestDeniedModels(t *testing.T) {
	const rc = "gpt://" + testFolder + "/yandexgpt/rc"
	s, base := emuStart(t, emulator.Config{DeniedModels: []string{rc, "gpt://" + testFolder + "/llama"}})
	submit := base + "/foundationModels/v1/completionAsync"
	tests := []struct {
		model  string
		denied bool
	}{
		{rc, true},
		{"gpt://" + testFolder + "/llama/latest", true}, // the default version of a denied URI
		{"gpt://" + testFolder + "/llama", true},
		{testModel, false},
		{"gpt://" + testFolder + "/yandexgpt-lite", false},
	}
	for _, tc := range tests {
		r := mustDo(t, http.MethodPost, submit, requestBody(tc.model, userMsg("may I")...), nil)
		if tc.denied {
			checkGatewayError(t, r, http.StatusForbidden, 7, "Access to model "+tc.model+" denied")
		} else if r.status != http.StatusOK {
			t.Errorf("%s: status %d: %s", tc.model, r.status, r.body)
		}
	}
	if st := s.Stats(); st.PermissionDenied != 3 || st.OpsCreated != 2 {
		t.Errorf("permission denied %d, operations %d; want 3 and 2", st.PermissionDenied, st.OpsCreated)
	}
	s.SetDeniedModels(nil)
	if r := mustDo(t, http.MethodPost, submit, requestBody(rc, userMsg("may I now")...), nil); r.status != http.StatusOK {
		t.Errorf("after SetDeniedModels(nil): status %d: %s", r.status, r.body)
	}
}
