// Command gencluster trains generative image models (PixelCNN, VAE) on one
// machine or a cluster. This file wires the subcommands; the work lives in
// the packages.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/gencluster/gencluster/health"
	"github.com/gencluster/gencluster/metrics"
)

// app carries what every subcommand shares: output streams and the logger.
type app struct {
	stdout, stderr io.Writer
	log            *slog.Logger
	logLevel       string
	tlsDir         string // --tls-dir: one role's folder (gencluster certs init)
	tokenFile      string // --token-file: the join token (gencluster certs init)
	logFormat      string // --log-format: text or json
	// tty: stdout is a terminal (status --watch redraws in place; train,
	// local, sample and eval show a progress bar: progress.go).
	tty bool
	// logs is stderr as the logger writes to it: above a progress bar
	// while one is up (progress.go).
	logs *logSink
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes the command line args and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	a := &app{stdout: stdout, stderr: stderr, tty: isTerminal(stdout), logs: &logSink{w: stderr, terminal: isTerminal(stderr)}}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(stderr, "gencluster: %v\n", a.tlsHint(err))
		return 1
	}
	return 0
}

// setup applies the global flags: the logger. A command with its own
// PersistentPreRunE calls it first (cobra runs only the nearest one).
func (a *app) setup(*cobra.Command) error {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(a.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch a.logFormat {
	case "text":
		a.log = slog.New(slog.NewTextHandler(a.logOut(), opts))
	case "json":
		a.log = slog.New(slog.NewJSONHandler(a.logOut(), opts))
	default:
		return fmt.Errorf("--log-format %q: want text or json", a.logFormat)
	}
	return nil
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "gencluster",
		Short: "Data-parallel training of generative image models (PixelCNN, VAE)",
		Long: `gencluster trains PixelCNN and VAE models on MNIST-like images, in one
process (train), in an embedded cluster (local), or across machines: a
raft-replicated group of coordinators (coordinator) and training workers
(worker) that sum gradients over a ring, recover from failed processes and
resume from checkpoints (submit, status, cancel, checkpoint).`,
		SilenceUsage:      true,
		SilenceErrors:     true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error { return a.setup(cmd) },
	}
	root.PersistentFlags().StringVar(&a.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.PersistentFlags().StringVar(&a.logFormat, "log-format", "text", "log format on stderr: text (key=value) or json (one object a line)")
	root.PersistentFlags().StringVar(&a.tlsDir, "tls-dir", "",
		"a role's credentials folder (ca.crt, tls.crt, tls.key; from gencluster certs init): every gRPC connection is then mutual TLS with roles checked")
	root.PersistentFlags().StringVar(&a.tokenFile, "token-file", "",
		"the join token (DIR/token from gencluster certs init): workers and clients use it instead of a certificate, over TLS; coordinators given it with --tls-dir also admit its holders")
	root.AddCommand(a.trainCommand(), a.evalCommand(), a.sampleCommand(), a.exportCommand(), a.benchCommand(),
		a.coordinatorCommand(), a.submitCommand(), a.statusCommand(), a.cancelCommand(), a.workerCommand(), a.localCommand(),
		a.checkpointCommand(), a.versionCommand(), a.probeCommand(), a.certsCommand())
	return root
}

// printJSON writes v to stdout as indented JSON (the --json outputs).
func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// noArgs rejects positional arguments with a message naming them.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("%s takes no arguments, got %q (flags are --name value)", cmd.CommandPath(), args)
	}
	return nil
}

// serveHealth serves /livez, /readyz (package health), with reg
// /metrics (package metrics) and with dash the dashboard at / (package
// dashboard) on addr until ctx ends or the returned stop is called;
// nothing if addr is empty.
func (a *app) serveHealth(ctx context.Context, addr string, ready health.Ready, reg *prometheus.Registry, dash http.Handler) (stop func() error, err error) {
	if addr == "" {
		return func() error { return nil }, nil
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--http %s: %w", addr, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	mux := health.Handler(ready)
	paths := "/livez /readyz"
	if reg != nil {
		mux.Handle("GET /metrics", metrics.Handler(reg))
		paths += " /metrics"
	}
	if dash != nil {
		mux.Handle("/", dash)
		paths += " / (dashboard)"
	}
	go func() { done <- health.Serve(ctx, lis, mux) }()
	a.log.Info("serving health", "addr", lis.Addr().String(), "paths", paths)
	return func() error { cancel(); return <-done }, nil
}
