package shared

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	jsonv2 "github.com/go-json-experiment/json"
	"sigs.k8s.io/yaml"
)

// Body size limits. Inventories of big machines (hundreds of PCI devices and disks) stay
// well under MaxBody; everything else is tiny.
const (
	MaxBody      = 1 << 20 // 1 MiB: registration with inventory, role files
	MaxSmallBody = 64 << 10
)

// Validator is a decoded value that can check itself.
type Validator interface {
	Validate() error
}

// Decode reads at most limit bytes of JSON from r into v, rejecting unknown fields,
// trailing data and bodies over the limit, and then runs v.Validate. The error is an
// *APIError (400 or 413) ready to send back.
func Decode(r io.Reader, limit int64, v Validator) error {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		limit = min(limit, tooLarge.Limit)
	case err != nil:
		return Errorf(http.StatusBadRequest, CodeBadRequest, "", "reading body: %v", err)
	}
	if tooLarge != nil || int64(len(data)) > limit {
		return Errorf(http.StatusRequestEntityTooLarge, CodeTooLarge,
			"send a smaller body", "body is larger than the limit of %d bytes", limit)
	}
	return DecodeBytes(data, v)
}

// DecodeBytes is Decode for a body already in memory.
func DecodeBytes(data []byte, v Validator) error {
	if err := strictUnmarshal(data, v); err != nil {
		return Errorf(http.StatusBadRequest, CodeBadRequest, "check the JSON against the API reference",
			"malformed JSON: %v", err)
	}
	if err := v.Validate(); err != nil {
		return Errorf(http.StatusBadRequest, CodeBadRequest, "", "invalid: %v", err)
	}
	return nil
}

// RoleList is one or more roles, as a role file holds them.
type RoleList struct {
	Roles []Role `json:"roles"`
}

// Validate checks every role and that names are unique.
func (l *RoleList) Validate() error {
	if len(l.Roles) == 0 {
		return fmt.Errorf("no roles given")
	}
	if len(l.Roles) > 1000 {
		return fmt.Errorf("more than 1000 roles")
	}
	seen := map[string]bool{}
	for i := range l.Roles {
		if err := l.Roles[i].Validate(); err != nil {
			return err
		}
		if seen[l.Roles[i].Name] {
			return fmt.Errorf("role %s is given twice", l.Roles[i].Name)
		}
		seen[l.Roles[i].Name] = true
	}
	return nil
}

// ParseRoles reads a role file: YAML or JSON, either one role or {"roles": [...]}, or
// several YAML documents. Unknown fields are errors, as everywhere.
func ParseRoles(data []byte) (*RoleList, error) {
	if len(data) > MaxBody {
		return nil, fmt.Errorf("role file is larger than %d bytes", MaxBody)
	}
	var list RoleList
	if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && trimmed[0] == '{' {
		// JSON goes straight to the strict decoder: the YAML parser would rewrite some
		// characters (e.g. U+0085) that JSON carries fine.
		if err := parseRoleJSON(trimmed, &list); err != nil {
			return nil, err
		}
		if err := list.Validate(); err != nil {
			return nil, err
		}
		return &list, nil
	}
	for _, doc := range splitYAMLDocuments(data) {
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("malformed YAML: %w", err)
		}
		if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
			continue
		}
		if err := parseRoleJSON(js, &list); err != nil {
			return nil, err
		}
	}
	if err := list.Validate(); err != nil {
		return nil, err
	}
	return &list, nil
}

// parseRoleJSON appends one JSON document, a role or {"roles": [...]}, to list.
func parseRoleJSON(js []byte, list *RoleList) error {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(js, &probe); err != nil {
		return fmt.Errorf("a role file holds objects: %w", err)
	}
	if _, many := probe["roles"]; many {
		var part RoleList
		if err := strictUnmarshal(js, &part); err != nil {
			return fmt.Errorf("role file: %w", err)
		}
		list.Roles = append(list.Roles, part.Roles...)
		return nil
	}
	var r Role
	if err := strictUnmarshal(js, &r); err != nil {
		return fmt.Errorf("role file: %w", err)
	}
	list.Roles = append(list.Roles, r)
	return nil
}

// strictUnmarshal decodes exactly one JSON value into v, with the JSON v2 decoder
// (go-json-experiment, what became encoding/json/v2): names must match a field exactly,
// and unknown or duplicate names, invalid UTF-8 and trailing data are errors. It is also
// over twice as fast as encoding/json, which matters on the registration path.
func strictUnmarshal(data []byte, v any) error {
	err := jsonv2.Unmarshal(data, v, jsonv2.RejectUnknownMembers(true))
	var se *jsonv2.SemanticError
	if errors.As(err, &se) && errors.Is(se.Err, jsonv2.ErrUnknownName) {
		return fmt.Errorf("unknown field %q (at %s)", se.JSONPointer.LastToken(), se.JSONPointer)
	}
	return err
}

func splitYAMLDocuments(data []byte) [][]byte {
	var docs [][]byte
	var cur []byte
	for _, line := range bytes.SplitAfter(data, []byte("\n")) {
		if bytes.Equal(bytes.TrimRight(line, "\r\n \t"), []byte("---")) {
			docs = append(docs, cur)
			cur = nil
			continue
		}
		cur = append(cur, line...)
	}
	return append(docs, cur)
}
