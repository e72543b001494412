package cli

import (
	"encoding/json"
	"testing"
)

func TestWithEmptyLists(t *testing.T) {
	type inner struct {
		Names []string `json:"names"`
	}
	type outer struct {
		Items  []inner          `json:"items"`
		Ptr    *inner           `json:"ptr"`
		Value  inner            `json:"value"`
		Raw    json.RawMessage  `json:"raw,omitempty"`
		Bytes  []byte           `json:"bytes"`
		Skip   []string         `json:"skip,omitempty"`
		ByName map[string]inner `json:"by_name"`
	}
	for _, tt := range []struct {
		in   any
		want string
	}{
		{[]inner(nil), `[]`},
		{outer{Items: []inner{{}}, Ptr: &inner{}},
			`{"items":[{"names":[]}],"ptr":{"names":[]},"value":{"names":[]},"bytes":null,"by_name":null}`},
		{&outer{}, `{"items":[],"ptr":null,"value":{"names":[]},"bytes":null,"by_name":null}`},
		{nil, `null`},
	} {
		got, err := json.Marshal(withEmptyLists(tt.in))
		if err != nil || string(got) != tt.want {
			t.Errorf("%#v:\n got %s (%v)\nwant %s", tt.in, got, err, tt.want)
		}
	}
}
