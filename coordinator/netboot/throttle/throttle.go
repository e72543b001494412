// Package throttle bounds what hostile traffic on the boot network can cost: per-source
// limits on packets, and log lines that repeat at most once per period per kind. Both
// keep their memory bounded whatever the packets say.
package throttle

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"time"
)

// Window allows at most Max events per key in each Period (a fixed window). It tracks at
// most MaxKeys keys per window; a key beyond that is allowed untracked. Failing open is
// deliberate: a spoofed flood from more sources than MaxKeys would otherwise lock every
// real client out for the rest of the window, while the limit exists to stop one noisy
// source, and each packet costs the services microseconds.
type Window[K comparable] struct {
	Max     int
	Period  time.Duration
	MaxKeys int
	Now     func() time.Time // nil: time.Now

	mu     sync.Mutex
	start  time.Time
	counts map[K]int
}

// Allow reports whether one more event of key fits in the current window, and counts it.
func (w *Window[K]) Allow(key K) bool {
	now := time.Now
	if w.Now != nil {
		now = w.Now
	}
	t := now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.counts == nil || t.Sub(w.start) >= w.Period || t.Before(w.start) {
		if w.counts == nil || len(w.counts) > 0 {
			w.counts = make(map[K]int) // a fresh map: clear() would keep a flood's peak size
		}
		w.start = t
	}
	n, tracked := w.counts[key]
	if !tracked && len(w.counts) >= w.MaxKeys {
		return true
	}
	if n >= w.Max {
		return false
	}
	w.counts[key] = n + 1
	return true
}

// Log writes a record of each message at most once per Period, and counts the ones it
// held back: the next record of that message carries "suppressed", n. Messages must be
// constants in the code (they are the keys), never text a client chose; InfoPer keys
// a message by something more (a MAC), and then at most maxLogKeys keys are remembered.
type Log struct {
	Logger *slog.Logger
	Period time.Duration

	mu   sync.Mutex
	last map[string]*logState
}

type logState struct {
	at         time.Time
	suppressed int
}

// Warn logs msg at warning level, throttled.
func (l *Log) Warn(msg string, args ...any) { l.log(slog.LevelWarn, msg, msg, args) }

// Info logs msg at info level, throttled.
func (l *Log) Info(msg string, args ...any) { l.log(slog.LevelInfo, msg, msg, args) }

// InfoPer logs msg at info level at most once per Period for each key.
func (l *Log) InfoPer(key, msg string, args ...any) { l.log(slog.LevelInfo, msg+"\x00"+key, msg, args) }

// maxLogKeys bounds the throttle's memory; past it, every key starts over.
const maxLogKeys = 4096

func (l *Log) log(level slog.Level, key, msg string, args []any) {
	if !l.Logger.Enabled(context.Background(), level) {
		return
	}
	now := time.Now()
	l.mu.Lock()
	if l.last == nil || len(l.last) >= maxLogKeys {
		l.last = map[string]*logState{}
	}
	st := l.last[key]
	if st == nil {
		st = &logState{}
		l.last[key] = st
	} else if now.Sub(st.at) < l.Period {
		st.suppressed++
		l.mu.Unlock()
		return
	}
	suppressed := st.suppressed
	st.at, st.suppressed = now, 0
	l.mu.Unlock()
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	l.Logger.Log(context.Background(), level, msg, args...)
}

// maxQuoted is how much of a client's string a log line carries.
const maxQuoted = 64

// Quote makes a string a client chose safe for a log line of any format: Go-quoted
// (control characters and invalid UTF-8 escaped) and cut to 64 bytes.
func Quote(s string) string {
	if len(s) > maxQuoted {
		return strconv.Quote(s[:maxQuoted]) + "..."
	}
	return strconv.Quote(s)
}
