package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/gencluster/gencluster/trust"
)

// probeCommand asks a running process whether it is ready or alive: the
// health check of images that hold nothing but this binary (no curl).
func (a *app) probeCommand() *cobra.Command {
	var httpAddr, grpcAddr string
	var live bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "probe --http HOST:PORT [--live] | --grpc HOST:PORT",
		Short: "Ask a coordinator or worker whether it is ready (exit 0) or not (exit 1)",
		Long: `Ask a running coordinator or worker whether it is ready: --http asks its
/readyz (or /livez with --live) on the --http address it serves; --grpc asks
the standard gRPC health service on its gRPC port. Exits 0 and prints "ok"
when it is, 1 and why not otherwise. For health checks in containers built
FROM scratch, e.g. compose: test: [CMD, gencluster, probe, --http, 127.0.0.1:8080].`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (httpAddr == "") == (grpcAddr == "") {
				return errors.New("give one of --http HOST:PORT or --grpc HOST:PORT")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			var err error
			if httpAddr != "" {
				path := "/readyz"
				if live {
					path = "/livez"
				}
				err = probeHTTP(ctx, "http://"+httpAddr+path)
			} else {
				var c *trust.Credentials
				if c, err = a.credentials(""); err != nil {
					return err
				}
				var t *trust.Token
				if t, err = a.token(); err != nil {
					return err
				}
				dial := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
				switch {
				case c != nil:
					dial = []grpc.DialOption{c.DialOption(trust.Coordinator, trust.Worker)}
				case t != nil:
					dial = t.DialOption(trust.Coordinator)
				}
				err = probeGRPC(ctx, grpcAddr, dial...)
			}
			if err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, "ok")
			return nil
		},
	}
	cmd.Flags().StringVar(&httpAddr, "http", "", "the process's --http address: ask /readyz")
	cmd.Flags().StringVar(&grpcAddr, "grpc", "", "the process's gRPC address: ask grpc.health.v1")
	cmd.Flags().BoolVar(&live, "live", false, "with --http: ask /livez (alive) instead of /readyz (ready)")
	cmd.Flags().DurationVar(&timeout, "timeout", 3*time.Second, "give up after this")
	return cmd
}

// probeHTTP GETs url: nil on 200, else the status and the body's reason.
func probeHTTP(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("probe %s: %w", url, err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("probe %s: %w", url, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 4096))
	if err != nil {
		return fmt.Errorf("probe %s: reading the answer: %w", url, err)
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("probe %s: %s: %s", url, res.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// probeGRPC asks the gRPC health service at addr for the server's status.
func probeGRPC(ctx context.Context, addr string, dial ...grpc.DialOption) error {
	conn, err := grpc.NewClient(addr, dial...)
	if err != nil {
		return fmt.Errorf("probe %s: %w", addr, err)
	}
	defer conn.Close()
	r, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return fmt.Errorf("probe %s: %w", addr, err)
	}
	if s := r.GetStatus(); s != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("probe %s: %v", addr, s)
	}
	return nil
}
