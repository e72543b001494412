package shared

import (
	"errors"
	"net/http"
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	const valid = `{"step":"disk","status":"running","generation":3}`
	tests := []struct {
		name   string
		body   string
		limit  int64
		status int
		want   string // in the error message
	}{
		{"valid", valid, MaxSmallBody, 0, ""},
		{"valid with trailing white space", valid + "\n\t ", MaxSmallBody, 0, ""},
		{"unknown field", `{"step":"disk","status":"running","extra":1}`, MaxSmallBody, http.StatusBadRequest, "unknown field"},
		{"oversized", valid, int64(len(valid) - 1), http.StatusRequestEntityTooLarge, "larger than the limit"},
		{"exactly the limit", valid, int64(len(valid)), 0, ""},
		{"trailing data", valid + `{}`, MaxSmallBody, http.StatusBadRequest, "after top-level value"},
		{"trailing garbage", valid + `x`, MaxSmallBody, http.StatusBadRequest, "malformed JSON"},
		{"malformed", `{"step":`, MaxSmallBody, http.StatusBadRequest, "malformed JSON"},
		{"wrong type", `{"step":7}`, MaxSmallBody, http.StatusBadRequest, "malformed JSON"},
		{"empty", ``, MaxSmallBody, http.StatusBadRequest, "malformed JSON"},
		{"validate fails", `{"step":"disk","status":"failed"}`, MaxSmallBody, http.StatusBadRequest, "a failed step needs an error"},
		{"validate fails on name", `{"step":"Disk!","status":"running"}`, MaxSmallBody, http.StatusBadRequest, "invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r StepReport
			err := Decode(strings.NewReader(tt.body), tt.limit, &r)
			if tt.status == 0 {
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				if r.Step != "disk" || r.Generation != 3 {
					t.Errorf("decoded %+v", r)
				}
				return
			}
			var apiErr *APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("err = %v (%T), want *APIError", err, err)
			}
			if apiErr.Status != tt.status || StatusOf(err) != tt.status {
				t.Errorf("status = %d, want %d", apiErr.Status, tt.status)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
			wantCode := CodeBadRequest
			if tt.status == http.StatusRequestEntityTooLarge {
				wantCode = CodeTooLarge
			}
			if apiErr.Code != wantCode {
				t.Errorf("code = %s, want %s", apiErr.Code, wantCode)
			}
		})
	}
}

func TestDecodeRegisterRequest(t *testing.T) {
	base := `{"inventory":{"system":{},"cpu":{"sockets":1,"cores":2,"threads":4},"memory":{"total_bytes":1},` +
		`"disks":[],"nics":[{"name":"eth0","mac":"52:54:00:00:00:01","link":true}],"pci":[],"load":{"load1":0,"load5":0,"load15":0,"uptime_s":1},` +
		`"collected_at":"2026-01-02T03:04:05Z","took_ms":3},"mode":"ram","version":"dev"%s}`
	for name, tt := range map[string]struct {
		extra string
		ok    bool
	}{
		"valid":       {``, true},
		"labels":      {`,"labels":{"rack":"r1"}`, true},
		"bad label":   {`,"labels":{"Rack":"r1"}`, false},
		"bad addr":    {`,"addr":"10.0.0.300"`, false},
		"good addr":   {`,"addr":"10.0.0.3"`, true},
		"bad mode":    {`,"mode":"disk"`, false}, // a duplicate key: the last one wins, and is invalid
		"unknown key": {`,"token":"x"`, false},
	} {
		var r RegisterRequest
		err := DecodeBytes([]byte(strings.Replace(base, "%s", tt.extra, 1)), &r)
		if (err == nil) != tt.ok {
			t.Errorf("%s: err = %v, want ok=%v", name, err, tt.ok)
		}
	}
	var r RegisterRequest
	bad := strings.Replace(strings.Replace(base, "%s", "", 1), `"52:54:00:00:00:01"`, `"not-a-mac"`, 1)
	if err := DecodeBytes([]byte(bad), &r); err == nil || !strings.Contains(err.Error(), "bad mac") {
		t.Errorf("a bad MAC in the inventory: %v", err)
	}
}

func TestBadRequestKeepsAPIErrors(t *testing.T) {
	tooLarge := Errorf(http.StatusRequestEntityTooLarge, CodeTooLarge, "send less", "too big")
	if got := BadRequest(tooLarge); got != tooLarge {
		t.Errorf("BadRequest replaced an APIError: %+v", got)
	}
	plain := BadRequest(errors.New("nope"))
	if plain.Status != http.StatusBadRequest || plain.Code != CodeBadRequest || plain.Message != "nope" {
		t.Errorf("BadRequest(plain) = %+v", plain)
	}
	if got := tooLarge.Error(); !strings.Contains(got, "413") || !strings.Contains(got, "send less") {
		t.Errorf("APIError text %q lacks the status or the hint", got)
	}
	if StatusOf(errors.New("x")) != 0 {
		t.Error("StatusOf a plain error is not 0")
	}
}
