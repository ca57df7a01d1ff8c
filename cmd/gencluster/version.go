package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// versionJSON is `gencluster version --json`.
type versionJSON struct {
	Version  string `json:"version"`  // the module version ("(devel)" for a build from a checkout)
	Revision string `json:"revision"` // the VCS revision built, if known
	Modified bool   `json:"modified"` // the checkout had uncommitted changes
	Go       string `json:"go"`
	Platform string `json:"platform"`
}

func (a *app) versionCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version [--json]",
		Short: "Print the version, the source revision and the Go toolchain of this binary",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			v := readVersion()
			if asJSON {
				return a.printJSON(v)
			}
			rev := v.Revision
			if rev == "" {
				rev = "unknown revision"
			} else if v.Modified {
				rev += " (modified)"
			}
			fmt.Fprintf(a.stdout, "gencluster %s, %s, %s %s\n", v.Version, rev, v.Go, v.Platform)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON: version, revision, modified, go, platform")
	return cmd
}

// readVersion reads this binary's version from its build information.
func readVersion() versionJSON {
	v := versionJSON{Version: "(unknown)", Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		v.Version = bi.Main.Version
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				v.Revision = s.Value
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	return v
}

// label is the version as one string: the module version, and the
// revision (and "+dirty") where known.
func (v versionJSON) label() string {
	s := v.Version
	if v.Revision != "" {
		s += " " + v.Revision
		if v.Modified {
			s += "+dirty"
		}
	}
	return s
}
