package throttle

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestWindowLimitsEachKeyAndForgetsOldWindows(t *testing.T) {
	now := time.Unix(1000, 0)
	w := &Window[string]{Max: 3, Period: time.Second, MaxKeys: 2, Now: func() time.Time { return now }}
	for i := range 3 {
		if !w.Allow("a") {
			t.Fatalf("event %d of a refused within the limit", i+1)
		}
	}
	if w.Allow("a") {
		t.Fatal("a's 4th event in one window allowed")
	}
	if !w.Allow("b") {
		t.Fatal("b refused because of a")
	}
	// The table is full (a, b): a third source is let through untracked, not locked out.
	for range 10 {
		if !w.Allow("c") {
			t.Fatal("an untracked key was refused")
		}
	}
	now = now.Add(time.Second)
	if !w.Allow("a") {
		t.Fatal("a still refused in the next window")
	}
	if len(w.counts) != 1 {
		t.Fatalf("the new window tracks %d keys, want 1", len(w.counts))
	}
}

func TestLogWritesEachMessageOncePerPeriodAndCountsTheRest(t *testing.T) {
	var buf bytes.Buffer
	l := &Log{Logger: slog.New(slog.NewTextHandler(&buf, nil)), Period: time.Hour}
	for range 1000 {
		l.Warn("address pool exhausted", "mac", "52:54:00:00:00:01")
	}
	l.Warn("another kind")
	for range 3 {
		l.InfoPer("52:54:00:00:00:07", "boot script")
		l.InfoPer("52:54:00:00:00:08", "boot script")
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines for 1000 records of one kind, one of another and 3 each of two keys, want 4:\n%s", len(lines), buf.String())
	}
	l.last["address pool exhausted"].at = time.Time{} // the period has passed
	buf.Reset()
	l.Warn("address pool exhausted")
	if !strings.Contains(buf.String(), "suppressed=999") {
		t.Fatalf("the next line does not say how many were held back: %s", buf.String())
	}
}

func TestQuoteEscapesAndCuts(t *testing.T) {
	for _, in := range []string{"\xff\x00evil\nlevel=ERROR msg=forged", strings.Repeat("x", 5000)} {
		q := Quote(in)
		if strings.ContainsAny(q, "\n\x00") || !utf8.ValidString(q) || len(q) > 4*maxQuoted+5 {
			t.Errorf("Quote(%.20q) = %s", in, q)
		}
	}
}
