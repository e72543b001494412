package step

import "log/slog"

// LoggerOr is l, or a logger that discards everything when l is nil: executors and the
// runner log through it so that a zero config needs no logger.
func LoggerOr(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
