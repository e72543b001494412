package coordinator

import (
	"context"
	"io"
	"log"
	"log/slog"

	"github.com/hashicorp/go-hclog"
)

// hclogAdapter lets Raft (which speaks hclog) log through Rivet's slog logger.
type hclogAdapter struct {
	log   *slog.Logger
	name  string
	args  []any
	level hclog.Level
}

func newHCLog(l *slog.Logger, name string, level hclog.Level) hclog.Logger {
	return &hclogAdapter{log: l, name: name, level: level}
}

func (h *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	if level < h.level || level == hclog.Off {
		return
	}
	sl := slog.LevelInfo
	switch {
	case level <= hclog.Debug:
		sl = slog.LevelDebug
	case level == hclog.Warn:
		sl = slog.LevelWarn
	case level >= hclog.Error:
		sl = slog.LevelError
	}
	all := append(append([]any{"component", h.name}, h.args...), args...)
	h.log.Log(context.Background(), sl, msg, all...)
}

func (h *hclogAdapter) Trace(msg string, args ...any) { h.Log(hclog.Trace, msg, args...) }
func (h *hclogAdapter) Debug(msg string, args ...any) { h.Log(hclog.Debug, msg, args...) }
func (h *hclogAdapter) Info(msg string, args ...any)  { h.Log(hclog.Info, msg, args...) }
func (h *hclogAdapter) Warn(msg string, args ...any)  { h.Log(hclog.Warn, msg, args...) }
func (h *hclogAdapter) Error(msg string, args ...any) { h.Log(hclog.Error, msg, args...) }
func (h *hclogAdapter) IsTrace() bool                 { return h.level <= hclog.Trace }
func (h *hclogAdapter) IsDebug() bool                 { return h.level <= hclog.Debug }
func (h *hclogAdapter) IsInfo() bool                  { return h.level <= hclog.Info }
func (h *hclogAdapter) IsWarn() bool                  { return h.level <= hclog.Warn }
func (h *hclogAdapter) IsError() bool                 { return h.level <= hclog.Error }
func (h *hclogAdapter) ImpliedArgs() []any            { return h.args }
func (h *hclogAdapter) Name() string                  { return h.name }
func (h *hclogAdapter) SetLevel(l hclog.Level)        { h.level = l }
func (h *hclogAdapter) GetLevel() hclog.Level         { return h.level }

func (h *hclogAdapter) With(args ...any) hclog.Logger {
	c := *h
	c.args = append(append([]any(nil), h.args...), args...)
	return &c
}

func (h *hclogAdapter) Named(name string) hclog.Logger {
	c := *h
	c.name = h.name + "." + name
	return &c
}

func (h *hclogAdapter) ResetNamed(name string) hclog.Logger {
	c := *h
	c.name = name
	return &c
}

func (h *hclogAdapter) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger {
	return log.New(h.StandardWriter(nil), "", 0)
}

func (h *hclogAdapter) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		h.Info(string(trimNewline(p)))
		return len(p), nil
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func trimNewline(p []byte) []byte {
	for len(p) > 0 && (p[len(p)-1] == '\n' || p[len(p)-1] == '\r') {
		p = p[:len(p)-1]
	}
	return p
}
