// Package dashboard serves a coordinator's web page: the raft group and
// who leads, the workers with their rank, address, last heartbeat and
// compute time per step (stragglers marked), the job's progress and ETA,
// its loss curve and latest sample grid, its checkpoints, and the queue
// with why jobs wait or failed. The page (static/, embedded in the binary:
// no build step, nothing fetched from elsewhere) polls GET /api/status
// once a second and redraws itself.
//
//	GET /                 the page
//	GET /static/...       its script and style sheet
//	GET /api/status       the View as JSON
//	GET /api/sample.png   ?job=ID: the job's latest sample grid
//
// It only reads: nothing on the page changes the cluster. It knows
// nothing of models or gradients; what it shows comes from a Source
// (a coordinator's service).
package dashboard

import (
	"context"
	"embed"
	"encoding/json"
	"io/fs"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"time"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
)

// Source is what the dashboard reads: a coordinator's Status and
// checkpoint list, and (from its own replica) a job's loss history and
// latest sample grid.
type Source interface {
	Status(ctx context.Context, req *pb.StatusRequest) (*pb.StatusResponse, error)
	ListCheckpoints(ctx context.Context, req *pb.ListCheckpointsRequest) (*pb.ListCheckpointsResponse, error)
	LossHistory(jobID string) []*pb.LossPoint
	Sample(jobID string) (step int64, png []byte)
}

//go:embed static
var static embed.FS

// readTimeout bounds what one request reads from the Source.
const readTimeout = 3 * time.Second

// Handler serves the dashboard. version is shown on the page.
func Handler(src Source, version string, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sub, _ := fs.Sub(static, "static") // cannot fail: the directory is embedded
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeFileFS(w, r, sub, "index.html")
	})
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(sub)))
	mux.HandleFunc("GET /api/status", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), readTimeout)
		defer cancel()
		v, err := Read(ctx, src, version, time.Now())
		if err != nil {
			log.Warn("dashboard: status not read", "err", err)
			http.Error(w, "status: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		if err := json.NewEncoder(w).Encode(v); err != nil {
			log.Debug("dashboard: status not sent", "err", err)
		}
	})
	mux.HandleFunc("GET /api/sample.png", func(w http.ResponseWriter, r *http.Request) {
		step, png := src.Sample(r.URL.Query().Get("job"))
		if png == nil {
			http.Error(w, "no sample grid for this job yet", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "image/png")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Sample-Step", strconv.FormatInt(step, 10))
		w.Write(png)
	})
	return mux
}

// View is what /api/status returns: the cluster as the page draws it.
type View struct {
	TimeUnixMs   int64         `json:"time_unix_ms"`
	Version      string        `json:"version"`     // of this dashboard's binary
	Coordinator  string        `json:"coordinator"` // version of the coordinator that answered
	Leader       string        `json:"leader"`
	StaleReason  string        `json:"stale_reason,omitempty"`
	Generation   uint64        `json:"generation"`
	Coordinators []Coordinator `json:"coordinators"`
	Workers      []Worker      `json:"workers"`
	Jobs         []Job         `json:"jobs"`
	// Job is the one shown in detail: the running job, else the newest
	// finished one (nil if there is none).
	Job *Detail `json:"job"`
}

// Coordinator is one member of the raft group.
type Coordinator struct {
	ID     string `json:"id"`
	Addr   string `json:"addr"`
	State  string `json:"state"`
	Voter  bool   `json:"voter"`
	Leader bool   `json:"leader"`
}

// Worker is one registered worker.
type Worker struct {
	ID    string `json:"id"`
	Addr  string `json:"addr"`
	State string `json:"state"`
	Rank  int    `json:"rank"` // in the current ring (-1: not in it)
	// HeartbeatAgeMs: -1 when unknown (the answer did not come from the
	// leader, or the leader has not heard from it since it was elected).
	HeartbeatAgeMs int64   `json:"heartbeat_age_ms"`
	ComputeMs      float64 `json:"compute_ms"` // median compute time per step (0: none yet)
	Straggler      bool    `json:"straggler"`
	Reason         string  `json:"reason,omitempty"`
}

// Job is one job of the queue.
type Job struct {
	ID             string   `json:"id"`
	Model          string   `json:"model"`
	State          string   `json:"state"`
	Step           int64    `json:"step"`
	Steps          int64    `json:"steps"`
	Batch          int32    `json:"batch"`
	Loss           float64  `json:"loss"`
	ImagesPerSec   float64  `json:"images_per_sec"`
	ETASeconds     float64  `json:"eta_seconds"` // -1: unknown
	SubmittedMs    int64    `json:"submitted_unix_ms"`
	StartedMs      int64    `json:"started_unix_ms,omitempty"`
	FinishedMs     int64    `json:"finished_unix_ms,omitempty"`
	WaitingReason  string   `json:"waiting_reason,omitempty"`
	WaitingFor     []string `json:"waiting_for,omitempty"`
	Message        string   `json:"message,omitempty"`
	Warnings       []string `json:"warnings,omitempty"`
	SampleStep     int64    `json:"sample_step"`
	CheckpointStep int64    `json:"checkpoint_step"` // latest held (0: none)
}

// Detail is the job shown in detail: its loss history and checkpoints.
type Detail struct {
	Job
	LossHistory [][2]float64 `json:"loss_history"` // [step, nats per image]
	Checkpoints []Checkpoint `json:"checkpoints"`
}

// Checkpoint is one checkpoint the coordinators hold.
type Checkpoint struct {
	Step      int64    `json:"step"`
	TimeMs    int64    `json:"time_unix_ms"`
	SizeBytes int64    `json:"size_bytes"`
	Checksum  string   `json:"checksum"`
	Holders   []string `json:"holders"`
	World     int32    `json:"world_size"`
}

// Read builds the View from src at time now.
func Read(ctx context.Context, src Source, version string, now time.Time) (*View, error) {
	st, err := src.Status(ctx, &pb.StatusRequest{})
	if err != nil {
		return nil, err
	}
	v := &View{TimeUnixMs: now.UnixMilli(), Version: version, Coordinator: st.GetVersion(), Leader: st.GetLeader(),
		StaleReason: st.GetStaleReason(), Generation: st.GetGeneration(),
		Coordinators: []Coordinator{}, Workers: []Worker{}, Jobs: []Job{}}
	for _, c := range st.GetCoordinators() {
		v.Coordinators = append(v.Coordinators, Coordinator{ID: c.GetId(), Addr: c.GetAddr(), State: c.GetState(), Voter: c.GetVoter(),
			Leader: c.GetAddr() == st.GetLeader()})
	}
	rank := map[string]int{}
	for i, m := range st.GetRing() {
		rank[m.GetWorkerId()] = i
	}
	for _, w := range st.GetWorkers() {
		r, ok := rank[w.GetId()]
		if !ok {
			r = -1
		}
		age := w.GetHeartbeatAgeMs()
		if st.GetLeader() == "" || st.GetStaleReason() != "" {
			age = -1
		}
		v.Workers = append(v.Workers, Worker{ID: w.GetId(), Addr: w.GetAddr(), State: w.GetState(), Rank: r, HeartbeatAgeMs: age,
			ComputeMs: w.GetComputeSeconds() * 1000, Straggler: w.GetStraggler(), Reason: w.GetReason()})
	}
	slices.SortStableFunc(v.Workers, func(a, b Worker) int {
		switch {
		case a.Rank == b.Rank:
			return 0
		case a.Rank < 0:
			return 1
		case b.Rank < 0:
			return -1
		}
		return a.Rank - b.Rank
	})
	var shown *pb.JobInfo
	for _, j := range st.GetJobs() {
		v.Jobs = append(v.Jobs, jobOf(j))
		if shown == nil && (j.GetState() == "running" || j.GetState() == "waiting") {
			shown = j
		}
	}
	if shown == nil {
		for _, j := range st.GetJobs() { // finished ones come newest first
			if j.GetState() != "queued" {
				shown = j
				break
			}
		}
	}
	if shown != nil {
		d := &Detail{Job: jobOf(shown), LossHistory: [][2]float64{}, Checkpoints: []Checkpoint{}}
		for _, p := range src.LossHistory(shown.GetId()) {
			d.LossHistory = append(d.LossHistory, [2]float64{float64(p.GetStep()), p.GetLoss()})
		}
		if n := len(d.LossHistory); shown.GetStep() > 0 && (n == 0 || d.LossHistory[n-1][0] < float64(shown.GetStep())) {
			d.LossHistory = append(d.LossHistory, [2]float64{float64(shown.GetStep()), shown.GetLoss()}) // the latest report
		}
		cps, err := src.ListCheckpoints(ctx, &pb.ListCheckpointsRequest{JobId: shown.GetId()})
		if err != nil {
			return nil, err
		}
		for _, c := range slices.Backward(cps.GetCheckpoints()) { // newest first
			d.Checkpoints = append(d.Checkpoints, Checkpoint{Step: c.GetStep(), TimeMs: c.GetTimeUnixMs(), SizeBytes: c.GetSizeBytes(),
				Checksum: c.GetChecksum(), Holders: c.GetHolders(), World: c.GetWorldSize()})
		}
		v.Job = d
	}
	return v, nil
}

func jobOf(j *pb.JobInfo) Job {
	s := j.GetSpec()
	out := Job{ID: j.GetId(), Model: s.GetModel(), State: j.GetState(), Step: j.GetStep(), Steps: s.GetSteps(), Batch: s.GetBatch(),
		Loss: j.GetLoss(), ImagesPerSec: j.GetImagesPerSec(), ETASeconds: -1,
		SubmittedMs: j.GetSubmittedUnixMs(), StartedMs: j.GetStartedUnixMs(), FinishedMs: j.GetFinishedUnixMs(),
		WaitingReason: j.GetWaitingReason(), WaitingFor: j.GetWaitingFor(), Message: j.GetMessage(), Warnings: j.GetWarnings(),
		SampleStep: j.GetSampleStep(), CheckpointStep: j.GetLastCheckpoint().GetStep()}
	if j.GetState() == "running" && j.GetImagesPerSec() > 0 {
		out.ETASeconds = float64(s.GetSteps()-j.GetStep()) * float64(s.GetBatch()) / j.GetImagesPerSec()
	}
	return out
}
