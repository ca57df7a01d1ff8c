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

// Worker is a worker's training metrics.
type Worker struct {
	steps, images, reduced                       prometheus.Counter
	stepTime, compute, allreduce, exposed, optim prometheus.Histogram
	loss, step, generation, world, rank          prometheus.Gauge
}

// NewWorker registers a worker's metrics on reg. refusedFrames, if not nil,
// is read at each scrape as gencluster_ring_refused_frames_total (ring
// streams and frames this worker refused: unsigned, stale, not from its
// assigned neighbour).
func NewWorker(reg prometheus.Registerer, refusedFrames func() uint64) *Worker {
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
	}
	reg.MustRegister(w.steps, w.images, w.reduced, w.stepTime, w.compute, w.allreduce, w.exposed, w.optim,
		w.loss, w.step, w.generation, w.world, w.rank)
	if refusedFrames != nil {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "ring", Name: "refused_frames_total",
			Help: "Ring streams and frames this worker refused (unsigned, stale, or not from its assigned neighbour).",
		}, func() float64 { return float64(refusedFrames()) }))
	}
	return w
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
