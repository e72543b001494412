package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rivetmetal/rivet/shared"
)

// printJSON prints v indented. Every list in it prints as [] when empty, never null:
// scripts may iterate any list without a null check.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(withEmptyLists(v))
}

var marshalerType = reflect.TypeFor[json.Marshaler]()

// withEmptyLists returns a copy of v whose nil slices, at any depth reachable without
// maps, are empty. Byte slices (base64 strings, raw JSON) and types that encode themselves
// are left alone. Pointers are shared with v: what they point at is changed in place.
func withEmptyLists(v any) any {
	if v == nil {
		return nil
	}
	rv := reflect.ValueOf(v)
	c := reflect.New(rv.Type()).Elem()
	c.Set(rv)
	fillLists(c)
	return c.Interface()
}

func isList(t reflect.Type) bool {
	return t.Kind() == reflect.Slice && t.Elem().Kind() != reflect.Uint8 &&
		!t.Implements(marshalerType) && !reflect.PointerTo(t).Implements(marshalerType)
}

func fillLists(v reflect.Value) {
	switch {
	case isList(v.Type()) && v.IsNil():
		if v.CanSet() {
			v.Set(reflect.MakeSlice(v.Type(), 0, 0))
		}
	case isList(v.Type()):
		for i := range v.Len() {
			fillLists(v.Index(i))
		}
	case v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface:
		if !v.IsNil() {
			fillLists(v.Elem())
		}
	case v.Kind() == reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fillLists(v.Field(i))
			}
		}
	}
}

// table prints rows aligned in columns.
func table(w io.Writer, header []string, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

func progressText(p *shared.Progress) string {
	if p == nil {
		return ""
	}
	pct := p.Percent()
	if pct < 0 {
		return shared.HumanBytes(p.Done)
	}
	s := fmt.Sprintf("%3.0f%%", pct)
	if p.BytesPerSec > 0 {
		s += " " + shared.HumanRate(p.BytesPerSec)
	}
	return s
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := time.Since(t).Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	default:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
