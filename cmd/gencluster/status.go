package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
	"github.com/gencluster/gencluster/coordinator"
	"github.com/gencluster/gencluster/models"
)

// statusJSON is the stable JSON of `gencluster status --json` (docs/CLI.md).
type statusJSON struct {
	Leader         string            `json:"leader"`
	Coordinators   []coordinatorJSON `json:"coordinators"`
	Workers        []workerJSON      `json:"workers"`
	Generation     uint64            `json:"generation"`
	Job            *jobJSON          `json:"job"`
	Queue          []jobJSON         `json:"queue"`
	LastCheckpoint *checkpointJSON   `json:"last_checkpoint"`
	// StaleReason is set when no coordinator that can reach the leader
	// answered: the view is one coordinator's own and may be behind.
	StaleReason string `json:"stale_reason,omitempty"`
	// Version is the gencluster version of the coordinator that answered
	// (empty from one older than this field).
	Version string `json:"version"`
}

type coordinatorJSON struct {
	ID    string `json:"id"`
	Addr  string `json:"addr"`
	State string `json:"state"`
	Voter bool   `json:"voter"`
}

type workerJSON struct {
	ID     string `json:"id"`
	Addr   string `json:"addr"`
	State  string `json:"state"` // ready, training, unfit
	Rank   int    `json:"rank"`
	Reason string `json:"reason,omitempty"` // why it is unfit
	// From the leader: ms since it last heard from the worker (-1: not
	// since it was elected; absent from a coordinator that could not ask
	// the leader), the worker's compute time per step (median of its last
	// steps; 0 before its first) and whether that makes it a straggler
	// (slower than the coordinator's --straggler-factor times the other
	// ring members' median; flagged, not evicted).
	HeartbeatAgeMs *int64  `json:"heartbeat_age_ms,omitempty"`
	ComputeSeconds float64 `json:"compute_seconds"`
	Straggler      bool    `json:"straggler"`
}

type jobJSON struct {
	ID           string  `json:"id"`
	Model        string  `json:"model"`
	Levels       int     `json:"levels,omitempty"` // 256 for grey levels; omitted for the default
	Dataset      string  `json:"dataset"`
	State        string  `json:"state"`
	Step         int64   `json:"step"`
	TotalSteps   int64   `json:"total_steps"`
	Loss         float64 `json:"loss"`
	ImagesPerSec float64 `json:"images_per_sec"`
	// WaitingReason says why a waiting or queued job does not run;
	// WaitingFor lists the workers a waiting job waits for.
	WaitingReason string   `json:"waiting_reason,omitempty"`
	WaitingFor    []string `json:"waiting_for,omitempty"`
	// Warnings: what went wrong without failing the job (it went on
	// without workers that did not come back). Message: why a job failed
	// or was cancelled.
	Warnings []string `json:"warnings,omitempty"`
	Message  string   `json:"message,omitempty"`
	// ETASeconds estimates the time to the last step of a running job
	// from its reported images/s (-1: unknown).
	ETASeconds float64 `json:"eta_seconds"`
}

type checkpointJSON struct {
	Step      int64     `json:"step"`
	Time      time.Time `json:"time"`
	Checksum  string    `json:"checksum"`
	SizeBytes int64     `json:"size_bytes"`
	Holders   []string  `json:"holders"` // coordinator ids holding it durably
}

func toStatusJSON(r *pb.StatusResponse) statusJSON {
	s := statusJSON{Leader: r.GetLeader(), Generation: r.GetGeneration(), Coordinators: []coordinatorJSON{}, Workers: []workerJSON{}, Queue: []jobJSON{},
		StaleReason: r.GetStaleReason(), Version: r.GetVersion()}
	for _, c := range r.GetCoordinators() {
		s.Coordinators = append(s.Coordinators, coordinatorJSON{ID: c.GetId(), Addr: c.GetAddr(), State: c.GetState(), Voter: c.GetVoter()})
	}
	rank := map[string]int{}
	for i, m := range r.GetRing() {
		rank[m.GetWorkerId()] = i
	}
	for _, w := range r.GetWorkers() {
		rk, ok := rank[w.GetId()]
		if !ok {
			rk = -1
		}
		wj := workerJSON{ID: w.GetId(), Addr: w.GetAddr(), State: w.GetState(), Rank: rk, Reason: w.GetReason(),
			ComputeSeconds: w.GetComputeSeconds(), Straggler: w.GetStraggler()}
		if r.GetStaleReason() == "" {
			age := w.GetHeartbeatAgeMs()
			wj.HeartbeatAgeMs = &age
		}
		s.Workers = append(s.Workers, wj)
	}
	for _, j := range r.GetJobs() {
		jj := jobJSON{
			ID: j.GetId(), Model: j.GetSpec().GetModel(), Levels: canonicalLevels(j.GetSpec()), Dataset: j.GetSpec().GetDataset(), State: j.GetState(),
			Step: j.GetStep(), TotalSteps: j.GetSpec().GetSteps(), Loss: j.GetLoss(), ImagesPerSec: j.GetImagesPerSec(),
			WaitingReason: j.GetWaitingReason(), WaitingFor: j.GetWaitingFor(), Warnings: j.GetWarnings(), Message: j.GetMessage(),
			ETASeconds: -1,
		}
		if j.GetState() == "running" && j.GetImagesPerSec() > 0 {
			jj.ETASeconds = float64(j.GetSpec().GetSteps()-j.GetStep()) * float64(j.GetSpec().GetBatch()) / j.GetImagesPerSec()
		}
		if s.Job == nil && (j.GetState() == "running" || j.GetState() == "waiting") {
			s.Job = &jj
			if c := j.GetLastCheckpoint(); c != nil {
				s.LastCheckpoint = &checkpointJSON{Step: c.GetStep(), Time: time.UnixMilli(c.GetTimeUnixMs()).UTC(), Checksum: c.GetChecksum(),
					SizeBytes: c.GetSizeBytes(), Holders: append([]string{}, c.GetHolders()...)}
			}
			continue
		}
		s.Queue = append(s.Queue, jj)
	}
	return s
}

func (a *app) statusCommand() *cobra.Command {
	var addrs string
	var asJSON, watch bool
	var every, timeout time.Duration
	cmd := &cobra.Command{
		Use:   "status --coordinator ADDR[,ADDR...] [--json] [--watch]",
		Short: "Show the cluster: leader, coordinators, workers, job progress, last checkpoint",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.newClient(splitAddrs(addrs))
			if err != nil {
				return err
			}
			defer c.Close()
			redraw := watch && !asJSON && a.tty
			for {
				ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
				r, err := c.Status(ctx)
				cancel()
				if err != nil {
					return err
				}
				s := toStatusJSON(r)
				if asJSON {
					enc := json.NewEncoder(a.stdout)
					if !watch {
						enc.SetIndent("", "  ")
					}
					if err := enc.Encode(s); err != nil {
						return err
					}
				} else {
					if redraw {
						fmt.Fprint(a.stdout, clearScreen)
						fmt.Fprintf(a.stdout, "every %s: gencluster status (Ctrl-C to stop)   %s\n\n", every, time.Now().Format(time.TimeOnly))
					} else if watch {
						fmt.Fprintln(a.stdout, "\n---", time.Now().Format(time.RFC3339))
					}
					printStatus(a, s)
				}
				if !watch {
					return nil
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(every):
				}
			}
		},
	}
	cmd.Flags().StringVar(&addrs, "coordinator", "", "coordinator address(es), comma-separated (required)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (one object per line with --watch)")
	cmd.Flags().BoolVar(&watch, "watch", false, "print again every --every until interrupted (redrawn in place on a terminal)")
	cmd.Flags().DurationVar(&every, "every", 2*time.Second, "interval of --watch")
	cmd.Flags().DurationVar(&timeout, "timeout", 15*time.Second, "give up when no coordinator answers within this")
	return cmd
}

func printStatus(a *app, s statusJSON) {
	if s.StaleReason != "" {
		fmt.Fprintf(a.stdout, "warning: %s\n", s.StaleReason)
	}
	fmt.Fprintf(a.stdout, "leader: %s   ring generation: %d", s.Leader, s.Generation)
	if s.Version != "" {
		fmt.Fprintf(a.stdout, "   gencluster %s", s.Version)
	}
	fmt.Fprintln(a.stdout)
	for _, c := range s.Coordinators {
		fmt.Fprintf(a.stdout, "  coordinator %-8s %-22s %s\n", c.ID, c.Addr, c.State)
	}
	for _, w := range s.Workers {
		fmt.Fprintf(a.stdout, "  worker      %-8s %-22s %s (rank %d)", w.ID, w.Addr, w.State, w.Rank)
		if w.Reason != "" {
			fmt.Fprintf(a.stdout, ": %s", w.Reason)
		}
		if h := w.HeartbeatAgeMs; h != nil && *h >= 0 {
			fmt.Fprintf(a.stdout, ", heard %.1fs ago", float64(*h)/1000)
		}
		if w.ComputeSeconds > 0 {
			fmt.Fprintf(a.stdout, ", compute %.1f ms/step", w.ComputeSeconds*1000)
		}
		if w.Straggler {
			fmt.Fprint(a.stdout, "  STRAGGLER")
		}
		fmt.Fprintln(a.stdout)
	}
	if j := s.Job; j != nil {
		fmt.Fprintf(a.stdout, "job %s: %s on %s, %s, step %d/%d, loss %.3f, %.1f img/s", j.ID, j.Model, j.Dataset, j.State, j.Step, j.TotalSteps, j.Loss, j.ImagesPerSec)
		if j.ETASeconds >= 0 {
			fmt.Fprintf(a.stdout, ", eta %s", (time.Duration(j.ETASeconds) * time.Second).Round(time.Second))
		}
		fmt.Fprintln(a.stdout)
		if j.WaitingReason != "" {
			fmt.Fprintf(a.stdout, "  %s\n", j.WaitingReason)
		}
		for _, w := range j.Warnings {
			fmt.Fprintf(a.stdout, "  warning: %s\n", w)
		}
	} else {
		fmt.Fprintln(a.stdout, "no job running")
	}
	if c := s.LastCheckpoint; c != nil {
		fmt.Fprintf(a.stdout, "last checkpoint: step %d at %s, sha256 %s, %s, held by %s\n", c.Step, c.Time.Format(time.RFC3339), c.Checksum,
			formatBytes(c.SizeBytes), holdersText(c.Holders))
	}
	for _, j := range s.Queue {
		fmt.Fprintf(a.stdout, "  job %s: %s, %s, step %d/%d", j.ID, j.Model, j.State, j.Step, j.TotalSteps)
		switch {
		case j.Message != "":
			fmt.Fprintf(a.stdout, ": %s", j.Message)
		case j.WaitingReason != "":
			fmt.Fprintf(a.stdout, ": %s", j.WaitingReason)
		}
		fmt.Fprintln(a.stdout)
	}
}

// holdersText lists the coordinators holding a checkpoint.
func holdersText(h []string) string {
	if len(h) == 0 {
		return "no coordinator"
	}
	return strings.Join(h, ",")
}

// formatBytes is a size for people: 512 B, 7.8 MB.
func formatBytes(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	f, i := float64(n), -1
	for f >= unit && i < 4 {
		f /= unit
		i++
	}
	return fmt.Sprintf("%.1f %cB", f, "kMGTP"[i])
}

// withCoordinators runs fn with a client of the coordinators at addrs
// (comma-separated) and ctx bounded by timeout.
func (a *app) withCoordinators(ctx context.Context, addrs string, timeout time.Duration, fn func(context.Context, *coordinator.Client) error) error {
	c, err := a.newClient(splitAddrs(addrs))
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return fn(ctx, c)
}

func splitAddrs(s string) []string {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// canonicalLevels is a job's pixel levels as status reports them: 256, or 0
// (omitted) for the model's default.
func canonicalLevels(spec *pb.JobSpec) int {
	if spec.GetLevels() == models.GreyLevels {
		return models.GreyLevels
	}
	return 0
}
