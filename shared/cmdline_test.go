package shared

import (
	"maps"
	"slices"
	"strings"
	"testing"
)

func TestParseCmdline(t *testing.T) {
	fp := "sha256:" + strings.Repeat("ab", 32)
	tests := []struct {
		name    string
		cmdline string
		want    BootParams
		err     string
	}{
		{name: "everything", cmdline: "console=ttyS0 rivet.url=https://10.0.0.1:7443/,https://10.0.0.2:7443 rivet.ca=" + fp +
			" rivet.token=enrol-abc rivet.labels=rack=r1,row=a rivet.debug quiet\n",
			want: BootParams{URLs: []string{"https://10.0.0.1:7443", "https://10.0.0.2:7443"}, CAFingerprint: fp,
				EnrolToken: "enrol-abc", Labels: map[string]string{"rack": "r1", "row": "a"}, Debug: true}},
		{name: "quoted value with spaces", cmdline: `rivet.labels="note=two words,rack=r2" rivet.token="a b"`,
			want: BootParams{Labels: map[string]string{"note": "two words", "rack": "r2"}, EnrolToken: "a b"}},
		{name: "quoted whole field", cmdline: `"rivet.token=x y" initrd=agent.img`, want: BootParams{EnrolToken: "x y"}},
		{name: "debug off", cmdline: "rivet.debug=0", want: BootParams{}},
		{name: "debug on", cmdline: "rivet.debug=true", want: BootParams{Debug: true}},
		{name: "other keys ignored", cmdline: "root=/dev/vda1 rivet.unknown=1 BOOT_IMAGE=/vmlinuz", want: BootParams{}},
		{name: "empty", cmdline: "", want: BootParams{}},
		{name: "bad URL scheme", cmdline: "rivet.url=ftp://10.0.0.1/", err: "not an http(s) URL"},
		{name: "URL without host", cmdline: "rivet.url=https:///v1", err: "not an http(s) URL"},
		{name: "empty URL in list", cmdline: "rivet.url=https://a:1,", err: "not an http(s) URL"},
		{name: "bad fingerprint", cmdline: "rivet.ca=sha256:ABCD", err: "fingerprint"},
		{name: "fingerprint without prefix", cmdline: "rivet.ca=" + strings.Repeat("ab", 32), err: "fingerprint"},
		{name: "uppercase fingerprint", cmdline: "rivet.ca=sha256:" + strings.Repeat("AB", 32), err: "fingerprint"},
		{name: "empty token", cmdline: "rivet.token=", err: "rivet.token"},
		{name: "bad label key", cmdline: "rivet.labels=Rack=r1", err: "label"},
		{name: "label without value", cmdline: "rivet.labels=rack", err: "key=value"},
		{name: "too long", cmdline: strings.Repeat("x", 4097), err: "4096"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCmdline(tt.cmdline)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want one mentioning %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bootParamsEqual(got, tt.want) {
				t.Errorf("ParseCmdline = %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func bootParamsEqual(a, b BootParams) bool {
	return slices.Equal(a.URLs, b.URLs) && a.CAFingerprint == b.CAFingerprint && a.EnrolToken == b.EnrolToken && a.Ticket == b.Ticket &&
		maps.Equal(a.Labels, b.Labels) && a.Debug == b.Debug
}
