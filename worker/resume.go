package worker

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
	"github.com/gencluster/gencluster/checkpoint"
	"github.com/gencluster/gencluster/ckptstore"
	"github.com/gencluster/gencluster/training"
)

// resume gives a freshly built replica the newest state of its job this
// worker can reach: the newest good checkpoint of the job in the local
// store, or the job's latest committed checkpoint (m, from the assignment)
// if that is newer, fetched from the coordinators into the local store. A
// newer committed checkpoint that cannot be fetched is an error (the
// replica never silently starts over). With neither, the model starts from
// the job's seed, as `gencluster train` starts.
func (w *Worker) resume(ctx context.Context, j *job, m *pb.CheckpointManifest) error {
	w.cleanStore(j.id)
	if m.GetStep() <= 0 || (m.GetJobId() != "" && m.GetJobId() != j.id) {
		m = nil
	}
	var state *checkpoint.State
	var file, sum, source string
	if l := w.newestLocal(j, m.GetStep()); l != nil {
		state, file, sum, source = l.state, l.file, l.sum, "local"
	} else if m != nil {
		var err error
		if state, file, sum, err = w.fetchCheckpoint(ctx, j, m); err != nil {
			return fmt.Errorf("job %s: the coordinators hold its checkpoint at step %d, which could not be fetched: %w", j.id, m.GetStep(), err)
		}
		source = "coordinators"
	}
	j.held = -1
	if state == nil {
		training.InitModel(j.model, j.spec.GetSeed())
		j.step, j.loss = 0, 0
		return nil
	}
	if err := training.Restore(state, j.model, j.opt); err != nil {
		return fmt.Errorf("job %s: checkpoint %s: %w", j.id, file, err)
	}
	j.step, j.loss = state.Meta.Step, state.Meta.Loss
	if source == "coordinators" || (m != nil && m.GetStep() == j.step && m.GetChecksum() == sum) {
		j.held = j.step
	}
	j.log.Info("resuming from checkpoint", "step", j.step, "source", source, "file", file)
	if source == "local" && j.held != j.step {
		// The coordinators do not hold this state: the cluster stopped
		// while it was on its way to them. Send it again, in the
		// background (a checkpoint must outlive this machine).
		j.log.Info("sending a checkpoint the coordinators do not hold", "step", j.step)
		w.startWriter(ctx, j)
		j.writer.submit(&snapshot{job: j.id, step: j.step, taken: time.Now(), file: file, sum: sum})
	}
	return nil
}

// localState is a checkpoint read back from the local store.
type localState struct {
	state     *checkpoint.State
	file, sum string
}

// newestLocal returns the newest good checkpoint of j in the local store
// at step atLeast or later (nil if none). Bad files are logged and
// skipped.
func (w *Worker) newestLocal(j *job, atLeast int64) *localState {
	ents, err := w.store.List()
	if err != nil {
		j.log.Warn("cannot list the local checkpoints", "err", err)
		return nil
	}
	var mine []ckptstore.Entry
	for _, e := range ents {
		if e.JobID == j.id && e.Step >= atLeast {
			mine = append(mine, e)
		}
	}
	slices.SortFunc(mine, func(a, b ckptstore.Entry) int { return cmpStep(b, a) })
	for _, e := range mine {
		path, err := w.store.Path(e.Key)
		if err != nil {
			j.log.Warn("skipping bad checkpoint", "key", e.Key, "err", err)
			continue
		}
		st, sum, err := readCheckpoint(path)
		switch {
		case err != nil:
			j.log.Warn("skipping bad checkpoint", "file", path, "err", err)
			continue
		case st.Meta.Step != e.Step || !strings.HasPrefix(sum, e.Checksum):
			j.log.Warn("skipping bad checkpoint", "file", path, "err",
				fmt.Sprintf("its name says step %d, checksum %s...; it holds step %d, checksum %s", e.Step, e.Checksum, st.Meta.Step, sum))
			continue
		case st.Meta.Job != j.meta:
			j.log.Warn("skipping bad checkpoint", "file", path, "err", fmt.Sprintf("it holds another job's settings (%+v)", st.Meta.Job))
			continue
		}
		return &localState{state: st, file: path, sum: sum}
	}
	return nil
}

// fetchCheckpoint fetches the checkpoint m describes (or, if the
// coordinators no longer keep that step, their latest, which is newer)
// into the local store, retrying for up to fetchTimeout, and reads it.
func (w *Worker) fetchCheckpoint(ctx context.Context, j *job, m *pb.CheckpointManifest) (*checkpoint.State, string, string, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	get := w.getCheckpoint
	if get == nil {
		get = w.client.GetCheckpoint
	}
	req := &pb.GetCheckpointRequest{JobId: j.id, Step: m.GetStep()}
	var path string
	dest := func(h *pb.CheckpointHeader) (string, error) {
		switch {
		case h.GetJobId() != j.id:
			return "", fmt.Errorf("asked for job %s's checkpoint, received job %q's", j.id, h.GetJobId())
		case h.GetStep() < m.GetStep():
			return "", fmt.Errorf("asked for step %d or later, received step %d", m.GetStep(), h.GetStep())
		case req.GetStep() != 0 && h.GetStep() != req.GetStep():
			return "", fmt.Errorf("asked for step %d, received step %d", req.GetStep(), h.GetStep())
		case h.GetStep() == m.GetStep() && m.GetChecksum() != "" && h.GetChecksum() != m.GetChecksum():
			return "", fmt.Errorf("step %d: received checksum %s, the manifest says %s", h.GetStep(), h.GetChecksum(), m.GetChecksum())
		}
		p, err := w.store.Path(ckptstore.Key(j.id, h.GetStep(), h.GetChecksum()))
		if err != nil {
			return "", err
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return "", fmt.Errorf("local store: %w", err)
		}
		path = p
		return p, nil
	}
	backoff := 500 * time.Millisecond
	for attempt := 1; ; attempt++ {
		start := time.Now()
		path = ""
		h, err := get(ctx, proto.CloneOf(req), dest)
		if err == nil {
			st, sum, rerr := readCheckpoint(path)
			switch {
			case rerr != nil:
				return nil, "", "", fmt.Errorf("read the fetched checkpoint: %w", rerr)
			case sum != h.GetChecksum() || st.Meta.Step != h.GetStep():
				return nil, "", "", fmt.Errorf("the fetched checkpoint %s holds step %d, checksum %s; the coordinators said step %d, checksum %s",
					path, st.Meta.Step, sum, h.GetStep(), h.GetChecksum())
			case st.Meta.Job != j.meta:
				return nil, "", "", fmt.Errorf("the fetched checkpoint %s holds another job's settings (%+v)", path, st.Meta.Job)
			}
			j.log.Info("checkpoint fetched from the coordinators", "step", h.GetStep(), "bytes", h.GetSizeBytes(), "ms", millis(time.Since(start)))
			w.pruneLocal(j.id)
			return st, path, sum, nil
		}
		if status.Code(err) == codes.NotFound && req.GetStep() != 0 {
			j.log.Info("the coordinators no longer keep that checkpoint; fetching their latest", "step", req.GetStep(), "err", err)
			req.Step = 0
			continue
		}
		if ctx.Err() != nil {
			return nil, "", "", fmt.Errorf("%w (after %d attempts: %w)", err, attempt, ctx.Err())
		}
		if permanent(err) {
			return nil, "", "", err
		}
		j.log.Warn("fetch the checkpoint from the coordinators; retrying", "step", m.GetStep(), "attempt", attempt, "retry_in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return nil, "", "", fmt.Errorf("%w (after %d attempts: %w)", err, attempt, ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// readCheckpoint reads a checkpoint file whole and returns its state and
// the checksum it records (checked against its contents).
func readCheckpoint(path string) (*checkpoint.State, string, error) {
	return checkpoint.ReadFile(path)
}

// manifestOf turns a job's last checkpoint as status shows it into the
// manifest an assignment carries.
func manifestOf(jobID string, c *pb.CheckpointInfo) *pb.CheckpointManifest {
	if c == nil {
		return nil
	}
	return &pb.CheckpointManifest{JobId: jobID, Step: c.GetStep(), Checksum: c.GetChecksum(), TimeUnixMs: c.GetTimeUnixMs(),
		SizeBytes: c.GetSizeBytes(), Holders: slices.Clone(c.GetHolders())}
}
