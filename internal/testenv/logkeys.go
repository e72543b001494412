package testenv

import (
	"encoding/json"
	"fmt"
	"strings"
)

// RepeatedKeys returns the lines of JSON log output (slog's JSON handler) in which a key
// appears twice in the same object, as `component=netboot component=netboot` would in
// text: a logger wrapped twice with the same attribute. Each entry is "key: line".
func RepeatedKeys(logs string) []string {
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		if line == "" {
			continue
		}
		dec := json.NewDecoder(strings.NewReader(line))
		if key, err := repeatedKey(dec); err != nil || key != "" {
			out = append(out, fmt.Sprintf("%s%v: %s", key, errText(err), line))
		}
	}
	return out
}

// repeatedKey reads one JSON value and returns the first key repeated within an object.
func repeatedKey(dec *json.Decoder) (string, error) {
	tok, err := dec.Token()
	if err != nil {
		return "", err
	}
	switch tok {
	case json.Delim('{'):
		seen := map[string]bool{}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return "", err
			}
			key, _ := k.(string)
			if seen[key] {
				return key, nil
			}
			seen[key] = true
			if rep, err := repeatedKey(dec); err != nil || rep != "" {
				return key + "." + rep, err
			}
		}
		_, err = dec.Token() // '}'
		return "", err
	case json.Delim('['):
		for dec.More() {
			if rep, err := repeatedKey(dec); err != nil || rep != "" {
				return rep, err
			}
		}
		_, err = dec.Token() // ']'
		return "", err
	}
	return "", nil
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return " (not JSON: " + err.Error() + ")"
}
