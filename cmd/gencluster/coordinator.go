package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
	"github.com/gencluster/gencluster/ckptstore"
	"github.com/gencluster/gencluster/coordinator"
	"github.com/gencluster/gencluster/dashboard"
	"github.com/gencluster/gencluster/metrics"
	"github.com/gencluster/gencluster/trust"
)

func (a *app) coordinatorCommand() *cobra.Command {
	var id, listen, advertise, peers, dataDir, join, httpAddr string
	var lease, rejoinWait time.Duration
	var straggler float64
	cmd := &cobra.Command{
		Use:   "coordinator --id ID --listen HOST:PORT --peers id=addr,... --data-dir DIR",
		Short: "Run a coordinator: a member of the raft-replicated control plane",
		Long: `Run one coordinator. --peers lists the whole raft group (this one included)
on its first start; a restart with the same --data-dir reuses the stored group
(--peers may then be omitted, and must agree with it if given). A single peer
is a valid, non-HA cluster. --join ADDR starts a new coordinator with an empty
data dir and asks the group at ADDR to add it.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if id == "" || listen == "" || dataDir == "" {
				return fmt.Errorf("--id, --listen and --data-dir are required")
			}
			if advertise == "" {
				advertise = listen
			}
			ps, err := coordinator.ParsePeers(peers)
			if err != nil {
				return err
			}
			if join != "" && len(ps) > 0 {
				return fmt.Errorf("give --peers (a new group) or --join (an existing one), not both")
			}
			return a.runCoordinator(cmd.Context(), id, listen, advertise, dataDir, join, httpAddr, ps, coordinator.ServiceConfig{Lease: lease, RejoinWait: rejoinWait, StragglerFactor: straggler})
		},
	}
	f := cmd.Flags()
	f.StringVar(&id, "id", "", "this coordinator's raft server id (required)")
	f.StringVar(&listen, "listen", "", "host:port to serve gRPC on (required)")
	f.StringVar(&advertise, "advertise", "", "host:port the others dial (default: --listen)")
	f.StringVar(&peers, "peers", "", "the whole raft group: id=host:port,... (first start)")
	f.StringVar(&dataDir, "data-dir", "", "directory for the raft log, stable store, snapshots and checkpoints (required)")
	f.StringVar(&join, "join", "", "address of a coordinator of an existing group to join")
	f.DurationVar(&lease, "lease", coordinator.DefaultLease, "worker lease: a worker silent this long is removed")
	f.DurationVar(&rejoinWait, "rejoin-wait", coordinator.DefaultRejoinWait,
		"after a leader change (a whole-cluster restart), how long a ring waits for members not heard from before going on without them")
	f.StringVar(&httpAddr, "http", "", "host:port to serve the dashboard at /, /metrics, /livez and /readyz on (none if empty; plain HTTP, read-only)")
	f.Float64Var(&straggler, "straggler-factor", coordinator.DefaultStragglerFactor,
		"flag a ring member whose compute time per step exceeds this many times the median of the other ring members' (status, metrics; not evicted)")
	cmd.AddCommand(a.coordinatorRemoveCommand())
	return cmd
}

func (a *app) coordinatorRemoveCommand() *cobra.Command {
	var addrs, id string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "remove --coordinator ADDR --id ID",
		Short: "Remove a coordinator from the raft group",
		Long: `Remove the coordinator ID from the raft group (through any coordinator).
Restart the remaining ones without --peers, or with the new list.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if id == "" {
				return errors.New("--id is required")
			}
			return a.withCoordinators(cmd.Context(), addrs, timeout, func(ctx context.Context, c *coordinator.Client) error {
				if err := c.RemoveCoordinator(ctx, id); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "removed coordinator %s\n", id)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&addrs, "coordinator", "", "coordinator address(es), comma-separated (required)")
	cmd.Flags().StringVar(&id, "id", "", "raft server id of the coordinator to remove (required)")
	cmd.Flags().DurationVar(&timeout, "timeout", 15*time.Second, "give up when no coordinator answers within this")
	return cmd
}

func (a *app) runCoordinator(ctx context.Context, id, listen, advertise, dataDir, join, httpAddr string, peers []coordinator.Peer, svcCfg coordinator.ServiceConfig) (err error) {
	creds, err := a.credentials(trust.Coordinator)
	if err != nil {
		return err
	}
	tok, err := a.token()
	if err != nil {
		return err
	}
	if tok != nil && creds == nil {
		return errors.New("--token-file on a coordinator needs --tls-dir too: token holders check the coordinator's certificate, and coordinators speak to each other by certificate only")
	}
	var peerDial []grpc.DialOption
	if creds != nil {
		peerDial = []grpc.DialOption{creds.DialOption(trust.Coordinator)}
		svcCfg.DialOptions, svcCfg.ProbeDialOptions = peerDial, []grpc.DialOption{creds.DialOption(trust.Worker)}
		if tok != nil {
			// Workers holding only the token serve a self-signed
			// certificate: the probe checks that they answer, not who.
			svcCfg.ProbeDialOptions = []grpc.DialOption{creds.ProbeDialOption()}
		}
	}
	a.warnPlaintext("coordinator", listen)
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", listen, err)
	}
	guardOpts, guard := trust.GuardedServerOptions(creds, tok, trust.CoordinatorPolicy(), a.log)
	// Streams per connection are bounded: a forwarding coordinator's
	// connection carries many workers' calls, so the bound is generous.
	srv := grpc.NewServer(append([]grpc.ServerOption{grpc.MaxRecvMsgSize(64 << 20), grpc.MaxConcurrentStreams(1024)},
		guardOpts...)...)
	fsm := coordinator.NewFSM(a.log)
	node, err := coordinator.NewNode(ctx, coordinator.NodeConfig{
		ID: id, Addr: advertise, DataDir: dataDir, Peers: peers, Join: join != "", FSM: fsm, Logger: a.log, DialOptions: peerDial,
	}, srv)
	if err != nil {
		lis.Close()
		return err
	}
	store, err := ckptstore.Open(filepath.Join(dataDir, "checkpoints"), a.log)
	if err != nil {
		lis.Close()
		return errors.Join(fmt.Errorf("data dir %s: %w", dataDir, err), node.Close(context.Background()))
	}
	svcCfg.Node, svcCfg.FSM, svcCfg.Logger, svcCfg.Checkpoints = node, fsm, a.log, store
	svcCfg.CheckJoinAddr, svcCfg.RequireWorkerSecret = true, true
	svcCfg.Version = readVersion().label()
	svc := coordinator.NewService(svcCfg)
	pb.RegisterCoordinatorServer(srv, svc)
	// The standard gRPC health service, for Kubernetes' gRPC probes and
	// grpc-health-probe: serving while the process runs (/readyz says more).
	hs := grpchealth.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	reg := newRegistry()
	metrics.NewCoordinator(reg, coordinatorMetrics{node: node, fsm: fsm, svc: svc})
	if guard != nil {
		metrics.NewRefusedCalls(reg, guard.Refused)
	}
	stopHTTP, err := a.serveHealth(ctx, httpAddr, svc.Ready, reg, dashboard.Handler(svc, readVersion().label(), a.log))
	if err != nil {
		lis.Close()
		svc.Close()
		return errors.Join(err, node.Close(context.Background()))
	}
	defer func() { err = errors.Join(err, stopHTTP()) }()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	a.log.Info("coordinator serving", "id", id, "addr", advertise, "data_dir", dataDir)

	if join != "" {
		c, err := coordinator.NewClient([]string{join}, peerDial...)
		if err == nil {
			err = c.AddCoordinator(ctx, id, advertise)
			c.Close()
		}
		if err != nil {
			err = fmt.Errorf("joining the group at %s: %w", join, err)
			svc.Close()
			srv.Stop()
			return errors.Join(err, node.Close(context.Background()))
		}
	}
	select {
	case <-ctx.Done():
	case err = <-served:
	}
	a.log.Info("coordinator stopping", "id", id)
	hs.Shutdown() // probes see NOT_SERVING from here on
	if err == nil {
		// A graceful stop: hand the lead over first, so that the group
		// does not wait an election timeout for a new leader.
		tctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if terr := node.TransferLeadership(tctx); terr != nil {
			a.log.Warn("leadership transfer before stopping", "err", terr)
		}
		cancel()
	}
	svc.Close()
	// Close raft first: that ends the raft streams peers hold open, which
	// a graceful stop would otherwise wait for forever.
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = errors.Join(err, node.Close(cctx))
	stopServer(srv, 5*time.Second)
	return err
}

// stopServer lets in-flight calls finish for up to grace, then cuts the rest.
func stopServer(srv *grpc.Server, grace time.Duration) {
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(grace):
		srv.Stop()
		<-stopped
	}
}
