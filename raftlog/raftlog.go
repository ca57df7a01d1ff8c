// Package raftlog adapts log/slog to the hclog.Logger that hashicorp/raft
// (and its snapshot store) log to.
package raftlog

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

// adapter is an hclog.Logger writing to a slog.Logger.
type adapter struct {
	base  *slog.Logger // without name and implied args
	l     *slog.Logger // base with both
	name  string
	args  []any
	level *atomic.Int32 // hclog.Level, shared by the loggers derived from one another
}

var _ hclog.Logger = (*adapter)(nil)

// New returns the hclog.Logger hashicorp/raft wants, writing to l (nothing
// if l is nil). Levels map one to one: Trace is slog.LevelDebug-4, Debug,
// Info, Warn and Error are slog's, NoLevel is Info. The name becomes the
// "subsystem" attribute (Named("b") on a logger named "a" gives "a.b"),
// and With's arguments become attributes; an hclog.Format among the
// arguments is rendered with fmt. The logger's own level starts at Trace,
// so l's handler decides what is written; SetLevel changes it for every
// logger derived from the same New (by Named, ResetNamed or With).
func New(l *slog.Logger, name string) hclog.Logger {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	lv := new(atomic.Int32)
	lv.Store(int32(hclog.Trace))
	return derive(&adapter{base: l, level: lv}, name, nil)
}

func derive(a *adapter, name string, args []any) *adapter {
	b := &adapter{base: a.base, l: a.base, name: name, args: args, level: a.level}
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

func (a *adapter) enabled(l hclog.Level) bool {
	if l == hclog.Off || l < hclog.Level(a.level.Load()) {
		return false
	}
	return a.l.Enabled(context.Background(), slogLevel(l))
}

func (a *adapter) Log(level hclog.Level, msg string, args ...any) {
	if level == hclog.NoLevel || level == hclog.DefaultLevel {
		level = hclog.Info
	}
	if !a.enabled(level) {
		return
	}
	a.l.Log(context.Background(), slogLevel(level), msg, slogArgs(args)...)
}

func (a *adapter) Trace(msg string, args ...any) { a.Log(hclog.Trace, msg, args...) }
func (a *adapter) Debug(msg string, args ...any) { a.Log(hclog.Debug, msg, args...) }
func (a *adapter) Info(msg string, args ...any)  { a.Log(hclog.Info, msg, args...) }
func (a *adapter) Warn(msg string, args ...any)  { a.Log(hclog.Warn, msg, args...) }
func (a *adapter) Error(msg string, args ...any) { a.Log(hclog.Error, msg, args...) }

func (a *adapter) IsTrace() bool { return a.enabled(hclog.Trace) }
func (a *adapter) IsDebug() bool { return a.enabled(hclog.Debug) }
func (a *adapter) IsInfo() bool  { return a.enabled(hclog.Info) }
func (a *adapter) IsWarn() bool  { return a.enabled(hclog.Warn) }
func (a *adapter) IsError() bool { return a.enabled(hclog.Error) }

func (a *adapter) ImpliedArgs() []any { return a.args }

func (a *adapter) With(args ...any) hclog.Logger {
	return derive(a, a.name, append(append([]any(nil), a.args...), args...))
}

func (a *adapter) Name() string { return a.name }

func (a *adapter) Named(name string) hclog.Logger {
	if a.name != "" {
		name = a.name + "." + name
	}
	return a.ResetNamed(name)
}

func (a *adapter) ResetNamed(name string) hclog.Logger { return derive(a, name, a.args) }

func (a *adapter) SetLevel(level hclog.Level) { a.level.Store(int32(level)) }
func (a *adapter) GetLevel() hclog.Level      { return hclog.Level(a.level.Load()) }

func (a *adapter) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(a.StandardWriter(opts), "", 0)
}

func (a *adapter) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	level := hclog.Info
	if opts != nil && opts.ForceLevel != hclog.NoLevel {
		level = opts.ForceLevel
	}
	return &writer{a: a, level: level, infer: opts != nil && (opts.InferLevels || opts.InferLevelsWithTimestamp)}
}

// writer logs each line written to it.
type writer struct {
	a     *adapter
	level hclog.Level
	infer bool
}

func (w *writer) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
		msg, level := string(line), w.level
		if w.infer {
			// The tag that comes first in the line sets its level (the
			// tags of hclog's own writer).
			tags := [...]struct {
				tag   string
				level hclog.Level
			}{
				{"[TRACE]", hclog.Trace}, {"[DEBUG]", hclog.Debug}, {"[INFO]", hclog.Info},
				{"[WARN]", hclog.Warn}, {"[ERR]", hclog.Error}, {"[ERROR]", hclog.Error},
			}
			first := -1
			for _, t := range tags {
				if i := strings.Index(msg, t.tag); i >= 0 && (first < 0 || i < first) {
					first, level = i, t.level
					msg = strings.TrimSpace(string(line[i+len(t.tag):]))
				}
			}
		}
		w.a.Log(level, msg)
	}
	return len(p), nil
}
