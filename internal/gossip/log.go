package gossip

import (
	"bytes"
	"context"
	"log"
	"log/slog"
	"strings"
)

// Logger adapts Serf and memberlist, which log "[LEVEL] subsystem: message" lines
// to a *log.Logger, onto slog, keeping their levels: memberlist is chatty at DEBUG and
// an operator wants its WARN and ERR lines among Rivet's own.
func Logger(l *slog.Logger) *log.Logger {
	return log.New(&levelWriter{log: l}, "", 0)
}

type levelWriter struct{ log *slog.Logger }

func (w *levelWriter) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
		level, msg := splitLevel(string(line))
		w.log.Log(context.Background(), level, msg) // no caller context reaches a *log.Logger
	}
	return len(p), nil
}

// splitLevel reads the "[LEVEL] " prefix; lines without one are informational.
func splitLevel(line string) (slog.Level, string) {
	rest, ok := strings.CutPrefix(line, "[")
	if !ok {
		return slog.LevelInfo, line
	}
	tag, msg, ok := strings.Cut(rest, "] ")
	if !ok {
		return slog.LevelInfo, line
	}
	switch tag {
	case "DEBUG", "TRACE":
		return slog.LevelDebug, msg
	case "WARN":
		return slog.LevelWarn, msg
	case "ERR", "ERROR":
		return slog.LevelError, msg
	}
	return slog.LevelInfo, msg
}
