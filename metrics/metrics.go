// Package metrics defines gencluster's Prometheus metrics: one registry per
// process (never the global default one), the Go runtime's and the
// process's own metrics, the build's version, a worker's training metrics
// and a coordinator's view of raft and the cluster, read when scraped.
//
// Names follow the Prometheus conventions: one gencluster_ prefix, base
// units (seconds, bytes), _total for counters, and labels only where their
// values are bounded (raft states, job states). The package knows nothing
// of models or the network: the caller feeds it plain values.
package metrics

import (
	"net/http"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace prefixes every gencluster metric.
const Namespace = "gencluster"

// NewRegistry returns a registry holding the Go runtime's and the
// process's metrics and gencluster_build_info{version, goversion} 1.
func NewRegistry(version string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace:   Namespace,
			Name:        "build_info",
			Help:        "Always 1; the labels say which gencluster build runs.",
			ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
		}, func() float64 { return 1 }),
	)
	return reg
}

// Handler serves reg in the Prometheus text format (or what the scraper
// negotiates).
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}

// stepBuckets are the buckets of the per-step time histograms: 1 ms to
// about 33 s, doubling.
func stepBuckets() []float64 { return prometheus.ExponentialBuckets(0.001, 2, 16) }

// Step is one training step as a worker saw it.
type Step struct {
	Job                string
	Step               int64 // the job's step after this one
	Loss               float64
	Generation         uint64
	Rank, World        int
	LocalImages        int   // images this worker computed
	AllReducedBytes    int64 // bytes it summed over the ring
	StepTime, Compute  time.Duration
	AllReduce, Exposed time.Duration // the all-reduce, and the part of it not hidden behind backward
	Optimizer          time.Duration
}

// Checkpoint is what became of one checkpoint a worker (rank 0) took.
type Checkpoint struct {
	// Outcome: "held" (the coordinators hold it), "skipped" (a newer one
	// replaced it before it was written) or "failed".
	Outcome string
	// Copy is the pause the ring saw (copying the state); Commit from the
	// copy's start to the committed manifest (held only).
	Copy, Commit time.Duration
	Size         int64 // bytes of the file (0 if not written)
}

// Worker is a worker's training metrics.
type Worker struct {
	steps, images, reduced                       prometheus.Counter
	stepTime, compute, allreduce, exposed, optim prometheus.Histogram
	loss, step, generation, world, rank          prometheus.Gauge
	ckpts                                        *prometheus.CounterVec
	ckptCopy, ckptCommit                         prometheus.Histogram
	ckptSize                                     prometheus.Gauge
}

// WorkerCounters are a worker's own counters, read at each scrape.
type WorkerCounters interface {
	// RefusedFrames: ring streams and frames it refused (unsigned, stale,
	// not from its assigned neighbour).
	RefusedFrames() uint64
	// FailuresReported: failed ring generations it reported that the
	// coordinators took.
	FailuresReported() uint64
}

// NewWorker registers a worker's metrics on reg; src, if not nil, is read
// at each scrape.
func NewWorker(reg prometheus.Registerer, src WorkerCounters) *Worker {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Subsystem: "worker", Name: name, Help: help})
	}
	hist := func(name, help string) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Subsystem: "worker", Name: name, Help: help, Buckets: stepBuckets()})
	}
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Subsystem: "worker", Name: name, Help: help})
	}
	w := &Worker{
		steps:      counter("steps_total", "Training steps this worker completed."),
		images:     counter("images_total", "Images this worker computed gradients of."),
		reduced:    counter("allreduce_bytes_total", "Bytes this worker summed over the ring (gradients and loss)."),
		stepTime:   hist("step_seconds", "Time of a whole training step."),
		compute:    hist("compute_seconds", "Time of a step's local forward and backward pass."),
		allreduce:  hist("allreduce_seconds", "Time of a step's all-reduce, from the first bucket's start to the last one's end."),
		exposed:    hist("allreduce_exposed_seconds", "The part of a step's all-reduce after the backward pass ended (not hidden behind it)."),
		optim:      hist("optimizer_seconds", "Time of a step's optimizer update."),
		loss:       gauge("loss", "The last step's training loss (nats per image, over the global batch)."),
		step:       gauge("job_step", "The running job's step, as this worker last completed it."),
		generation: gauge("ring_generation", "The ring generation this worker trains in."),
		world:      gauge("world_size", "Workers in this worker's ring."),
		rank:       gauge("rank", "This worker's rank in its ring."),
		ckpts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Subsystem: "worker", Name: "checkpoints_total",
			Help: "Checkpoints this worker took as rank 0, by outcome: held by the coordinators, skipped (a newer one replaced it), failed."}, []string{"outcome"}),
		ckptCopy: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Subsystem: "worker", Name: "checkpoint_copy_seconds",
			Help: "Time the train loop spent copying the state for a checkpoint (the pause the ring sees).", Buckets: stepBuckets()}),
		ckptCommit: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Subsystem: "worker", Name: "checkpoint_commit_seconds",
			Help:    "Time from a checkpoint's copy to its manifest committed by the coordinators (written, uploaded, replicated).",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 16)}),
		ckptSize: gauge("checkpoint_size_bytes", "Size of the last checkpoint file this worker wrote."),
	}
	for _, o := range []string{"held", "skipped", "failed"} {
		w.ckpts.WithLabelValues(o) // every outcome's series from the start
	}
	reg.MustRegister(w.steps, w.images, w.reduced, w.stepTime, w.compute, w.allreduce, w.exposed, w.optim,
		w.loss, w.step, w.generation, w.world, w.rank, w.ckpts, w.ckptCopy, w.ckptCommit, w.ckptSize)
	if src != nil {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "ring", Name: "refused_frames_total",
			Help: "Ring streams and frames this worker refused (unsigned, stale, or not from its assigned neighbour).",
		}, func() float64 { return float64(src.RefusedFrames()) }))
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "worker", Name: "failures_reported_total",
			Help: "Failed ring generations this worker reported (and the coordinators took).",
		}, func() float64 { return float64(src.FailuresReported()) }))
	}
	return w
}

// ObserveCheckpoint records what became of one checkpoint.
func (w *Worker) ObserveCheckpoint(c Checkpoint) {
	w.ckpts.WithLabelValues(c.Outcome).Inc()
	w.ckptCopy.Observe(c.Copy.Seconds())
	if c.Outcome == "held" {
		w.ckptCommit.Observe(c.Commit.Seconds())
	}
	if c.Size > 0 {
		w.ckptSize.Set(float64(c.Size))
	}
}

// Observe records one completed step.
func (w *Worker) Observe(s Step) {
	w.steps.Inc()
	w.images.Add(float64(s.LocalImages))
	w.reduced.Add(float64(s.AllReducedBytes))
	w.stepTime.Observe(s.StepTime.Seconds())
	w.compute.Observe(s.Compute.Seconds())
	w.allreduce.Observe(s.AllReduce.Seconds())
	w.exposed.Observe(s.Exposed.Seconds())
	w.optim.Observe(s.Optimizer.Seconds())
	w.loss.Set(s.Loss)
	w.step.Set(float64(s.Step))
	w.generation.Set(float64(s.Generation))
	w.world.Set(float64(s.World))
	w.rank.Set(float64(s.Rank))
}
