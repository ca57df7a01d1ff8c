package raftlog

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// capture returns a logger writing JSON records to a buffer at or above
// min, and a function that decodes what was written since its last call.
func capture(t *testing.T, min slog.Level) (*slog.Logger, func() []map[string]any) {
	t.Helper()
	var buf bytes.Buffer
	l := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: min}))
	return l, func() []map[string]any {
		t.Helper()
		var out []map[string]any
		for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			if line == "" {
				continue
			}
			var rec map[string]any
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatalf("record %q: %v", line, err)
			}
			out = append(out, rec)
		}
		buf.Reset()
		return out
	}
}

// one returns the only record, failing the test if there is not exactly one.
func one(t *testing.T, recs []map[string]any) map[string]any {
	t.Helper()
	if len(recs) != 1 {
		t.Fatalf("%d records, want 1: %v", len(recs), recs)
	}
	return recs[0]
}

func TestLevels(t *testing.T) {
	l, records := capture(t, slog.LevelDebug-4)
	h := New(l, "raft")
	for _, tc := range []struct {
		log  func(string, ...any)
		want string // slog's name of the level
	}{
		{h.Trace, "DEBUG-4"},
		{h.Debug, "DEBUG"},
		{h.Info, "INFO"},
		{h.Warn, "WARN"},
		{h.Error, "ERROR"},
	} {
		tc.log("hello", "k", 1)
		rec := one(t, records())
		if rec["level"] != tc.want || rec["msg"] != "hello" || rec["k"] != 1.0 || rec["subsystem"] != "raft" {
			t.Errorf("want level %s: %v", tc.want, rec)
		}
	}
	for level, want := range map[hclog.Level]string{
		hclog.Trace: "DEBUG-4", hclog.Debug: "DEBUG", hclog.Info: "INFO", hclog.Warn: "WARN", hclog.Error: "ERROR",
		hclog.NoLevel: "INFO", hclog.DefaultLevel: "INFO",
	} {
		h.Log(level, "via Log")
		if rec := one(t, records()); rec["level"] != want {
			t.Errorf("Log(%v): %v, want level %s", level, rec, want)
		}
	}
	h.Log(hclog.Off, "never")
	if recs := records(); len(recs) != 0 {
		t.Errorf("Log(Off) wrote %v", recs)
	}
}

func TestHandlerLevelDecides(t *testing.T) {
	l, records := capture(t, slog.LevelInfo)
	h := New(l, "raft")
	if h.IsTrace() || h.IsDebug() || !h.IsInfo() || !h.IsWarn() || !h.IsError() {
		t.Errorf("Is* at a handler level of Info: trace %v debug %v info %v warn %v error %v",
			h.IsTrace(), h.IsDebug(), h.IsInfo(), h.IsWarn(), h.IsError())
	}
	h.Debug("dropped")
	h.Info("kept")
	if rec := one(t, records()); rec["msg"] != "kept" {
		t.Errorf("got %v", rec)
	}
	if got := h.GetLevel(); got != hclog.Trace {
		t.Errorf("initial level %v, want Trace (the handler decides)", got)
	}
}

func TestSetLevelShared(t *testing.T) {
	l, records := capture(t, slog.LevelDebug-4)
	h := New(l, "raft")
	child := h.Named("snapshot").With("peer", "c2")
	child.SetLevel(hclog.Warn)
	if h.GetLevel() != hclog.Warn || child.GetLevel() != hclog.Warn {
		t.Errorf("levels %v and %v after SetLevel(Warn) on a derived logger", h.GetLevel(), child.GetLevel())
	}
	h.Info("dropped")
	child.Info("dropped")
	if h.IsInfo() || !h.IsWarn() {
		t.Error("Is* ignore SetLevel")
	}
	h.Warn("kept")
	if rec := one(t, records()); rec["msg"] != "kept" {
		t.Errorf("got %v", rec)
	}
	// Another New is not affected.
	if New(l, "other").GetLevel() != hclog.Trace {
		t.Error("SetLevel leaked into another logger")
	}
}

func TestNamesAndArgs(t *testing.T) {
	l, records := capture(t, slog.LevelDebug-4)
	h := New(l, "raft")
	if h.Name() != "raft" {
		t.Errorf("Name %q", h.Name())
	}
	snap := h.Named("snapshot")
	if snap.Name() != "raft.snapshot" {
		t.Errorf("Named: %q", snap.Name())
	}
	snap.Info("x")
	if rec := one(t, records()); rec["subsystem"] != "raft.snapshot" {
		t.Errorf("Named: %v", rec)
	}

	w := snap.With("peer", "c2", "n", 3)
	if got := w.ImpliedArgs(); len(got) != 4 || got[0] != "peer" || got[1] != "c2" {
		t.Errorf("ImpliedArgs %v", got)
	}
	w2 := w.With("extra", true)
	if len(w.ImpliedArgs()) != 4 || len(w2.ImpliedArgs()) != 6 {
		t.Errorf("With changed its parent: %v, %v", w.ImpliedArgs(), w2.ImpliedArgs())
	}
	w2.Info("y", "k", "v")
	rec := one(t, records())
	if rec["subsystem"] != "raft.snapshot" || rec["peer"] != "c2" || rec["n"] != 3.0 || rec["extra"] != true || rec["k"] != "v" {
		t.Errorf("With: %v", rec)
	}

	// ResetNamed replaces the name and keeps the arguments.
	r := w.ResetNamed("transport")
	r.Info("z")
	rec = one(t, records())
	if r.Name() != "transport" || rec["subsystem"] != "transport" || rec["peer"] != "c2" {
		t.Errorf("ResetNamed: %q %v", r.Name(), rec)
	}

	// No name, no subsystem attribute.
	anon := New(l, "")
	anon.Info("w")
	if rec := one(t, records()); rec["subsystem"] != nil {
		t.Errorf("a nameless logger: %v", rec)
	}
	if got := anon.Named("a").Name(); got != "a" {
		t.Errorf("Named on a nameless logger: %q", got)
	}
}

func TestFormatArgs(t *testing.T) {
	l, records := capture(t, slog.LevelDebug-4)
	h := New(l, "raft").With("addr", hclog.Fmt("%s:%d", "h", 7))
	h.Info("m", "peers", hclog.Fmt("%d of %d", 2, 3), "raw", hclog.Format{1, "x"})
	rec := one(t, records())
	if rec["addr"] != "h:7" || rec["peers"] != "2 of 3" || rec["raw"] != "1x" {
		t.Errorf("formatted args: %v", rec)
	}
}

func TestStandardLogger(t *testing.T) {
	l, records := capture(t, slog.LevelDebug-4)
	h := New(l, "raft")
	h.StandardLogger(nil).Print("plain line")
	if rec := one(t, records()); rec["level"] != "INFO" || rec["msg"] != "plain line" {
		t.Errorf("default level: %v", rec)
	}
	h.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Warn}).Print("forced")
	if rec := one(t, records()); rec["level"] != "WARN" {
		t.Errorf("ForceLevel: %v", rec)
	}
	w := h.StandardWriter(&hclog.StandardLoggerOptions{InferLevels: true})
	if n, err := w.Write([]byte("2026/01/02 [ERR] raft: broken\n[DEBUG] detail [WARN] quoted\nno tag\n")); err != nil || n == 0 {
		t.Fatalf("Write: %d %v", n, err)
	}
	recs := records()
	if len(recs) != 3 {
		t.Fatalf("%d records from 3 lines: %v", len(recs), recs)
	}
	for i, want := range []struct{ level, msg string }{
		{"ERROR", "raft: broken"}, {"DEBUG", "detail [WARN] quoted"}, {"INFO", "no tag"},
	} {
		if recs[i]["level"] != want.level || recs[i]["msg"] != want.msg || recs[i]["subsystem"] != "raft" {
			t.Errorf("line %d: %v, want %s %q", i, recs[i], want.level, want.msg)
		}
	}
}

func TestNilLogger(t *testing.T) {
	h := New(nil, "raft")
	h.Error("into the void")
	if h.IsError() {
		t.Error("a nil slog.Logger writes errors")
	}
}
