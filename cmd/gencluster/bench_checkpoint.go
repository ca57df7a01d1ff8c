package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
	"github.com/gencluster/gencluster/localcluster"
	"github.com/gencluster/gencluster/worker"
)

// checkpointBench is the checkpoint part of `bench cluster`: the same job
// on 3 coordinators and --workers workers, without checkpoints and with
// one every --checkpoint-every steps, alternated --rounds times.
type checkpointBench struct {
	Every int `json:"checkpoint_every"`
	Steps int `json:"checkpoint_steps"` // timed steps of each run
	// StepMs are rank 0's mean step times of each run (without, with).
	StepMsWithout []float64 `json:"step_ms_without_checkpoints"`
	StepMsWith    []float64 `json:"step_ms_with_checkpoints"`
	// Overhead is with/without - 1 of each pair of runs, and its median.
	Overhead       []float64 `json:"checkpoint_overhead"`
	OverheadMedian float64   `json:"checkpoint_overhead_median"`
	// CopyMs is the pause of the train loop to copy the state; CommitMs
	// from the copy to the manifest committed by a majority (medians over
	// every checkpoint of the runs); SizeBytes the file's size.
	CopyMsMedian   float64 `json:"checkpoint_copy_ms_median"`
	CommitMsMedian float64 `json:"checkpoint_commit_ms_median"`
	Checkpoints    int     `json:"checkpoints"`
	Failed         int     `json:"checkpoints_failed"`
	SizeBytes      int64   `json:"checkpoint_size_bytes"`
}

// measureCheckpoints runs the checkpoint-overhead part of the benchmark:
// each round is one cluster that runs the job twice, without and with
// checkpoints (the order alternates between rounds), so that both runs
// share the processes' placement and warm-up.
func measureCheckpoints(ctx context.Context, log *slog.Logger, model string, batch, workers, steps, every, rounds int) (*checkpointBench, error) {
	r := &checkpointBench{Every: every, Steps: steps}
	var copies, commits []float64
	for round := range rounds {
		without, with, evs, err := checkpointRound(ctx, log, model, batch, workers, steps, every, round%2 == 1)
		if err != nil {
			return nil, err
		}
		r.StepMsWithout = append(r.StepMsWithout, without)
		r.StepMsWith = append(r.StepMsWith, with)
		r.Overhead = append(r.Overhead, with/without-1)
		for _, e := range evs {
			if e.Final {
				continue
			}
			if e.Err != nil {
				r.Failed++
				continue
			}
			r.Checkpoints++
			r.SizeBytes = e.Size
			copies = append(copies, float64(e.Copy.Microseconds())/1e3)
			commits = append(commits, float64(e.Commit.Microseconds())/1e3)
		}
	}
	r.OverheadMedian = median(r.Overhead)
	r.CopyMsMedian, r.CommitMsMedian = median(copies), median(commits)
	return r, nil
}

// checkpointRound runs, on one cluster of 3 coordinators, a job of warm-up
// + steps steps without checkpoints and the same job with one every
// `every` steps (the one with checkpoints first if withFirst), and returns
// rank 0's mean step time after the warm-up in each and the checkpoints'
// events.
func checkpointRound(ctx context.Context, log *slog.Logger, model string, batch, workers, steps, every int, withFirst bool) (without, with float64, evs []worker.CheckpointEvent, err error) {
	const warmup = 5
	var mu sync.Mutex
	times := map[string][]time.Time{}
	wc := worker.Config{
		Threads: 1,
		OnStep: func(s worker.StepInfo) {
			if s.Rank == 0 {
				mu.Lock()
				times[s.JobID] = append(times[s.JobID], time.Now())
				mu.Unlock()
			}
		},
		OnCheckpoint: func(e worker.CheckpointEvent) {
			mu.Lock()
			evs = append(evs, e)
			mu.Unlock()
		},
	}
	mean := func(id string) (float64, error) {
		mu.Lock()
		defer mu.Unlock()
		t := times[id]
		if len(t) < warmup+steps {
			return 0, fmt.Errorf("bench cluster: rank 0 reported %d steps of %s, want %d", len(t), id, warmup+steps)
		}
		t = t[warmup-1:]
		return ms(t[len(t)-1].Sub(t[0])) / float64(len(t)-1), nil
	}
	err = withClusterConfig(ctx, log, 3, workers, false, wc, func(c *localcluster.Cluster, _ []*localcluster.Worker) error {
		for _, ckpt := range []bool{withFirst, !withFirst} {
			spec := benchJob(model, batch, int64(warmup+steps))
			if ckpt {
				spec.CheckpointEvery = int64(every)
			}
			id, err := c.Submit(ctx, spec)
			if err != nil {
				return err
			}
			if _, err := c.AwaitJob(ctx, 30*time.Minute, id, func(j *pb.JobInfo) bool { return j.GetState() == "done" }); err != nil {
				return err
			}
			m, err := mean(id)
			if err != nil {
				return err
			}
			if ckpt {
				with = m
			} else {
				without = m
			}
		}
		return nil
	})
	return without, with, evs, err
}
