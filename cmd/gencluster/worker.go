package main

import (
	"errors"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/gencluster/gencluster/metrics"
	"github.com/gencluster/gencluster/trust"
	"github.com/gencluster/gencluster/worker"
)

func (a *app) workerCommand() *cobra.Command {
	var join, listen, advertise, dataDir, httpAddr string
	var threads int
	cmd := &cobra.Command{
		Use:   "worker --join ADDR[,ADDR...] --listen HOST:PORT --data-dir DIR [--threads T]",
		Short: "Run a worker: train the cluster's jobs as one member of the ring",
		Long: `Run one worker. It joins through any of the --join coordinators (and learns
the others), receives its place in the ring, and trains the running job: each
step it computes the gradient of its share of the global batch, sums the
gradients over the ring and applies the same Adam step as every other worker.
--data-dir keeps the worker's id (a restarted worker comes back as itself)
and a local copy of the job's newest checkpoints (DIR/checkpoints); the
coordinators hold the job's checkpoints, which rank 0 sends them.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if join == "" || listen == "" || dataDir == "" {
				return errors.New("--join, --listen and --data-dir are required")
			}
			creds, err := a.credentials(trust.Worker)
			if err != nil {
				return err
			}
			tok, err := a.token()
			if err != nil {
				return err
			}
			a.warnPlaintext("worker", listen)
			reserveProcs(threads + 1)
			lowerGCHeadroom()
			reg := newRegistry()
			var w *worker.Worker
			wm := metrics.NewWorker(reg, lateWorker{&w}) // scraped only once w is set
			w, err = worker.New(worker.Config{
				Coordinators: splitAddrs(join), Listen: listen, Advertise: advertise, DataDir: dataDir, Threads: threads, Logger: a.log,
				Credentials: creds, Token: tok,
				OnStep: func(s worker.StepInfo) {
					// One line per applied step at debug level: the fault tests
					// check from it that no step is skipped or applied twice.
					a.log.Debug("step", "job", s.JobID, "step", s.Step, "generation", s.Generation, "rank", s.Rank, "world", s.World, "loss", s.Loss)
					wm.Observe(stepSample(s))
				},
				OnCheckpoint: func(ev worker.CheckpointEvent) { wm.ObserveCheckpoint(checkpointSample(ev)) },
			})
			if err != nil {
				return err
			}
			a.log.Info("worker serving", "id", w.ID(), "addr", w.Addr(), "data_dir", dataDir)
			metrics.NewRefusedCalls(reg, w.RefusedCalls)
			stopHTTP, err := a.serveHealth(cmd.Context(), httpAddr, w.Ready, reg, nil)
			if err != nil {
				return errors.Join(err, w.Close())
			}
			err = w.Run(cmd.Context())
			return errors.Join(err, w.Close(), stopHTTP())
		},
	}
	f := cmd.Flags()
	f.StringVar(&join, "join", "", "coordinator address(es), comma-separated (required)")
	f.StringVar(&listen, "listen", "", "host:port to serve the ring on, which peers dial (required)")
	f.StringVar(&advertise, "advertise", "", "host:port ring peers dial (default: the listener's address; the host name if it listens on all interfaces)")
	f.StringVar(&dataDir, "data-dir", "", "directory for the worker's id and its local copy of the job's checkpoints (required)")
	f.IntVar(&threads, "threads", runtime.NumCPU(), "compute threads")
	f.StringVar(&httpAddr, "http", "", "host:port to serve /livez, /readyz and /metrics on (none if empty)")
	return cmd
}
