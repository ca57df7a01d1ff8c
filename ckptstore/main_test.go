package ckptstore

import (
	"flag"
	"os"
	"testing"
)

// TestMain keeps fuzzing practical. This package's fuzz inputs are whole
// checkpoint files or transfers (tens of KiB), and go test minimizes each
// input that finds new coverage for up to -fuzzminimizetime (60s by
// default) at a cost quadratic in its size: a -fuzztime 30s run would
// spend all of it minimizing the first such input. So unless the flag is
// given, fuzzing here minimizes with at most 500 runs of the target.
func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.fuzz"); f != nil && f.Value.String() != "" {
		given := false
		flag.Visit(func(f *flag.Flag) { given = given || f.Name == "test.fuzzminimizetime" })
		if !given {
			_ = flag.Set("test.fuzzminimizetime", "500x")
		}
	}
	os.Exit(m.Run())
}
