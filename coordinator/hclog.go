package coordinator

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
)

// hclogAdapter is the hclog.Logger hashicorp/raft wants, writing to slog.
// Levels map one to one (Trace is slog.LevelDebug-4); the hclog name
// becomes the "subsystem" attribute.
type hclogAdapter struct {
	base  *slog.Logger // without name and implied args
	l     *slog.Logger // base with both
	name  string
	args  []any
	level *atomic.Int32 // hclog.Level, shared by the loggers derived from one another
}

var _ hclog.Logger = (*hclogAdapter)(nil)

func newHCLogAdapter(l *slog.Logger, name string) *hclogAdapter {
	lv := new(atomic.Int32)
	lv.Store(int32(hclog.Trace))
	return derive(&hclogAdapter{base: l, level: lv}, name, nil)
}

func derive(a *hclogAdapter, name string, args []any) *hclogAdapter {
	b := &hclogAdapter{base: a.base, l: a.base, name: name, args: args, level: a.level}
	if name != "" {
		b.l = b.l.With("subsystem", name)
	}
	if len(args) > 0 {
		b.l = b.l.With(slogArgs(args)...)
	}
	return b
}

func slogLevel(l hclog.Level) slog.Level {
	switch l {
	case hclog.Trace:
		return slog.LevelDebug - 4
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	}
	return slog.LevelInfo
}

// slogArgs turns hclog's key/value list into slog's: hclog.Format values
// are rendered, anything else passes through.
func slogArgs(args []any) []any {
	out := make([]any, len(args))
	for i, v := range args {
		if f, ok := v.(hclog.Format); ok && len(f) > 0 {
			if format, ok := f[0].(string); ok {
				v = fmt.Sprintf(format, f[1:]...)
			} else {
				v = fmt.Sprint(f...)
			}
		}
		out[i] = v
	}
	return out
}

func (a *hclogAdapter) enabled(l hclog.Level) bool {
	if l == hclog.Off || l < hclog.Level(a.level.Load()) {
		return false
	}
	return a.l.Enabled(context.Background(), slogLevel(l))
}

func (a *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	if level == hclog.NoLevel || level == hclog.DefaultLevel {
		level = hclog.Info
	}
	if !a.enabled(level) {
		return
	}
	a.l.Log(context.Background(), slogLevel(level), msg, slogArgs(args)...)
}

func (a *hclogAdapter) Trace(msg string, args ...any) { a.Log(hclog.Trace, msg, args...) }
func (a *hclogAdapter) Debug(msg string, args ...any) { a.Log(hclog.Debug, msg, args...) }
func (a *hclogAdapter) Info(msg string, args ...any)  { a.Log(hclog.Info, msg, args...) }
func (a *hclogAdapter) Warn(msg string, args ...any)  { a.Log(hclog.Warn, msg, args...) }
func (a *hclogAdapter) Error(msg string, args ...any) { a.Log(hclog.Error, msg, args...) }

func (a *hclogAdapter) IsTrace() bool { return a.enabled(hclog.Trace) }
func (a *hclogAdapter) IsDebug() bool { return a.enabled(hclog.Debug) }
func (a *hclogAdapter) IsInfo() bool  { return a.enabled(hclog.Info) }
func (a *hclogAdapter) IsWarn() bool  { return a.enabled(hclog.Warn) }
func (a *hclogAdapter) IsError() bool { return a.enabled(hclog.Error) }

func (a *hclogAdapter) ImpliedArgs() []any { return a.args }

func (a *hclogAdapter) With(args ...any) hclog.Logger {
	return derive(a, a.name, append(append([]any(nil), a.args...), args...))
}

func (a *hclogAdapter) Name() string { return a.name }

func (a *hclogAdapter) Named(name string) hclog.Logger {
	if a.name != "" {
		name = a.name + "." + name
	}
	return a.ResetNamed(name)
}

func (a *hclogAdapter) ResetNamed(name string) hclog.Logger { return derive(a, name, a.args) }

func (a *hclogAdapter) SetLevel(level hclog.Level) { a.level.Store(int32(level)) }
func (a *hclogAdapter) GetLevel() hclog.Level      { return hclog.Level(a.level.Load()) }

func (a *hclogAdapter) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(a.StandardWriter(opts), "", 0)
}

func (a *hclogAdapter) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	level := hclog.Info
	if opts != nil && opts.ForceLevel != hclog.NoLevel {
		level = opts.ForceLevel
	}
	return &hclogWriter{a: a, level: level, infer: opts != nil && (opts.InferLevels || opts.InferLevelsWithTimestamp)}
}

// hclogWriter logs each line written to it.
type hclogWriter struct {
	a     *hclogAdapter
	level hclog.Level
	infer bool
}

func (w *hclogWriter) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
		msg, level := string(line), w.level
		if w.infer {
			for prefix, l := range map[string]hclog.Level{
				"[TRACE]": hclog.Trace, "[DEBUG]": hclog.Debug, "[INFO]": hclog.Info,
				"[WARN]": hclog.Warn, "[ERR]": hclog.Error, "[ERROR]": hclog.Error,
			} {
				if i := strings.Index(msg, prefix); i >= 0 {
					msg, level = strings.TrimSpace(msg[i+len(prefix):]), l
					break
				}
			}
		}
		w.a.Log(level, msg)
	}
	return len(p), nil
}
