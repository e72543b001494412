package shared

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// LabelRequest sets and removes operator labels (`rivet machines label`): on the machines
// and expected machines Refs names (machine ids, or the keys of imported rows) and on
// every one whose operator labels include all of Selector. All of them or none, in one
// write; each machine's timeline records the change and who asked.
type LabelRequest struct {
	Refs     []string          `json:"refs,omitempty"`
	Selector map[string]string `json:"selector,omitempty"`
	Set      map[string]string `json:"set,omitempty"`
	Remove   []string          `json:"remove,omitempty"`
}

// MaxLabelRefs bounds the names one label request gives (a selector has no bound).
const MaxLabelRefs = MaxExpectedPerImport

// Validate checks the request.
func (r *LabelRequest) Validate() error {
	if len(r.Refs) == 0 && len(r.Selector) == 0 {
		return fmt.Errorf("name the machines (ids or expected host names) or give a selector")
	}
	if len(r.Refs) > MaxLabelRefs {
		return fmt.Errorf("at most %d machines by name; use a selector", MaxLabelRefs)
	}
	for _, ref := range r.Refs {
		if ref == "" || len(ref) > 160 || strings.ContainsAny(ref, "\x00\n\r\t /") {
			return fmt.Errorf("%q is not a machine id or expected machine name", ref)
		}
	}
	if err := ValidateLabels(r.Selector); err != nil {
		return fmt.Errorf("selector: %w", err)
	}
	return ValidateLabelChange(r.Set, r.Remove)
}

// ValidateLabelChange checks labels to set and keys to remove: at least one, each valid,
// no key both set and removed.
func ValidateLabelChange(set map[string]string, remove []string) error {
	if len(set) == 0 && len(remove) == 0 {
		return fmt.Errorf("no label to set (key=value) or remove (key-)")
	}
	if err := ValidateLabels(set); err != nil {
		return err
	}
	if len(remove) > MaxLabels {
		return fmt.Errorf("at most %d labels to remove", MaxLabels)
	}
	for _, k := range remove {
		if err := ValidateName("label", k); err != nil {
			return err
		}
		if _, both := set[k]; both {
			return fmt.Errorf("label %s is both set and removed", k)
		}
	}
	return nil
}

// ParseLabelArgs reads `key=value` (set) and `key-` (remove) arguments.
func ParseLabelArgs(args []string) (set map[string]string, remove []string, err error) {
	for _, a := range args {
		if k, v, ok := strings.Cut(a, "="); ok {
			if set == nil {
				set = map[string]string{}
			}
			if _, dup := set[k]; dup {
				return nil, nil, fmt.Errorf("label %s is given twice", k)
			}
			set[k] = v
			continue
		}
		k, ok := strings.CutSuffix(a, "-")
		if !ok {
			return nil, nil, fmt.Errorf("%q: want key=value to set a label or key- to remove one", a)
		}
		remove = append(remove, k)
	}
	return set, remove, ValidateLabelChange(set, remove)
}

// ParseSelector reads a selector written k=v[,k=v].
func ParseSelector(s string) (map[string]string, error) {
	sel := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return nil, fmt.Errorf("selector %q: want key=value[,key=value]", s)
		}
		sel[k] = v
	}
	if err := ValidateLabels(sel); err != nil {
		return nil, fmt.Errorf("selector: %w", err)
	}
	return sel, nil
}

// LabelsText writes labels as k=v,k=v sorted by key.
func LabelsText(labels map[string]string) string {
	parts := make([]string, 0, len(labels))
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		parts = append(parts, k+"="+labels[k])
	}
	return strings.Join(parts, ",")
}

// LabelResponse says what a label request did.
type LabelResponse struct {
	Message string `json:"message"`
}

// IsLabelArg reports whether a `rivet machines label` argument is a label change
// (key=value or key-) rather than the name of a machine: machine ids and host names
// never hold '=' and never end in '-'.
func IsLabelArg(a string) bool {
	return strings.Contains(a, "=") || strings.HasSuffix(a, "-")
}
