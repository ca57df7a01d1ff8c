package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
	"github.com/gencluster/gencluster/checkpoint"
	"github.com/gencluster/gencluster/ckptstore"
	"github.com/gencluster/gencluster/training"
)

// Checkpoints. Rank 0 copies its replica's state at a step boundary
// (training.Snapshot, on the train loop: the only pause training sees) and
// hands the copy to the job's background writer, which checksums it,
// writes it into the worker's local store (DATA_DIR/checkpoints) and sends
// it to the coordinators, who answer once a majority of them hold it and
// its manifest is committed. The ring goes on at once. The writer has one
// pending slot: a snapshot taken while it is still busy with an older one
// replaces the one waiting, if any (the newer state is worth more).
//
// The final checkpoint is synchronous: rank 0 drains the writer, writes
// the last step's state and retries its upload for up to holdTimeout, and
// only then finishes the job.

const (
	// localKeep is how many checkpoint files of its job a worker keeps in
	// its local store.
	localKeep = 2
	// holdTimeout bounds one background upload, and the retries of the
	// final checkpoint's.
	holdTimeout = 2 * time.Minute
	// fetchTimeout bounds fetching the job's latest checkpoint from the
	// coordinators when a replica is built.
	fetchTimeout = 2 * time.Minute
)

// ErrCheckpointSkipped is the Err of a CheckpointEvent for a checkpoint
// that a newer one replaced before the writer started on it.
var ErrCheckpointSkipped = errors.New("checkpoint skipped: a newer one replaced it before the writer started on it")

// CheckpointEvent describes what became of one checkpoint rank 0 took.
type CheckpointEvent struct {
	JobID string
	Step  int64
	Final bool // the job's last step, written synchronously before FinishJob
	// Copy is the time the train loop spent copying the state (the pause
	// the ring saw); Commit is from the start of the copy to the committed
	// manifest (0 if it was not committed).
	Copy, Commit time.Duration
	Size         int64    // bytes of the file (0 if it was not written)
	Holders      []string // coordinator ids holding it, as committed
	// Err is why the checkpoint is not held by the coordinators (nil when
	// it is); ErrCheckpointSkipped if a newer one replaced it.
	Err error
}

// snapshot is one copy of a replica's state on its way to the coordinators.
type snapshot struct {
	job   string
	step  int64
	gen   uint64
	world int
	st    *checkpoint.State
	taken time.Time     // when the copy began
	copy  time.Duration // how long it took
	// file and sum, if set, are a checkpoint already in the local store
	// (st is nil): only sent, not written.
	file, sum string
}

// snapshot copies the replica's state (a deep copy: training may go on).
func (j *job) snapshot(a *pb.Assignment) *snapshot {
	t := time.Now()
	st := training.Snapshot(j.meta, j.step, j.loss, j.model, j.opt)
	return &snapshot{job: j.id, step: j.step, gen: a.GetGeneration(), world: len(a.GetRing()), st: st, taken: t, copy: time.Since(t)}
}

// ckptWriter writes and uploads checkpoints on its own goroutine, one at a
// time, with one pending slot. It stops when its context ends or stop is
// called, dropping what it has not started.
type ckptWriter struct {
	persist func(context.Context, *snapshot) // writes and uploads one (and reports it)
	drop    func(s *snapshot, why error)     // a snapshot that will not be written
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{} // closed when the goroutine has ended
	wake    chan struct{} // cap 1

	mu      sync.Mutex
	pending *snapshot
	idle    chan struct{} // closed when nothing is pending or being written; nil while idle
	stopped bool
}

func newCkptWriter(ctx context.Context, persist func(context.Context, *snapshot), drop func(*snapshot, error)) *ckptWriter {
	ctx, cancel := context.WithCancel(ctx)
	cw := &ckptWriter{persist: persist, drop: drop, ctx: ctx, cancel: cancel, done: make(chan struct{}), wake: make(chan struct{}, 1)}
	go cw.run()
	return cw
}

// submit hands s to the writer; a snapshot still waiting is replaced.
func (cw *ckptWriter) submit(s *snapshot) {
	cw.mu.Lock()
	if cw.stopped {
		cw.mu.Unlock()
		cw.drop(s, fmt.Errorf("checkpoint writer stopped: %w", context.Canceled))
		return
	}
	old := cw.pending
	cw.pending = s
	if cw.idle == nil {
		cw.idle = make(chan struct{})
	}
	cw.mu.Unlock()
	if old != nil {
		cw.drop(old, ErrCheckpointSkipped)
	}
	select {
	case cw.wake <- struct{}{}:
	default:
	}
}

func (cw *ckptWriter) run() {
	defer close(cw.done)
	for {
		select {
		case <-cw.ctx.Done():
			cw.mu.Lock()
			s := cw.pending
			cw.pending, cw.stopped = nil, true
			if cw.idle != nil {
				close(cw.idle)
				cw.idle = nil
			}
			cw.mu.Unlock()
			if s != nil {
				cw.drop(s, fmt.Errorf("checkpoint writer stopped: %w", cw.ctx.Err()))
			}
			return
		case <-cw.wake:
		}
		for cw.ctx.Err() == nil {
			cw.mu.Lock()
			s := cw.pending
			cw.pending = nil
			if s == nil {
				if cw.idle != nil {
					close(cw.idle)
					cw.idle = nil
				}
				cw.mu.Unlock()
				break
			}
			cw.mu.Unlock()
			cw.persist(cw.ctx, s)
		}
	}
}

// drain waits until the writer has nothing pending or in progress (or it
// stopped, or ctx ended).
func (cw *ckptWriter) drain(ctx context.Context) error {
	cw.mu.Lock()
	idle := cw.idle
	cw.mu.Unlock()
	if idle == nil {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for the checkpoint writer: %w", ctx.Err())
	}
}

// stop ends the writer: the write in progress sees its context cancelled,
// a pending one is dropped. It returns once the goroutine has ended.
func (cw *ckptWriter) stop() {
	cw.cancel()
	<-cw.done
}

// checkpointAsync takes a snapshot of j and hands it to j's background
// writer (started on first use; it ends with the job or ctx).
func (w *Worker) checkpointAsync(ctx context.Context, j *job, a *pb.Assignment) {
	s := j.snapshot(a)
	if j.writer == nil {
		w.startWriter(ctx, j)
	}
	j.writer.submit(s)
}

// persistBackground writes and uploads one background checkpoint, and
// reports the outcome: true if the coordinators hold it.
func (w *Worker) persistBackground(ctx context.Context, s *snapshot) bool {
	var path, sum string
	var size int64
	var err error
	if s.file != "" {
		path, sum = s.file, s.sum
		var fi os.FileInfo
		if fi, err = os.Stat(path); err == nil {
			size = fi.Size()
		}
	} else {
		path, sum, size, err = w.writeLocal(s)
	}
	var m *pb.CheckpointManifest
	if err == nil {
		uctx, cancel := context.WithTimeout(ctx, holdTimeout)
		m, err = w.upload(uctx, s, path, sum)
		cancel()
	}
	if err != nil && ctx.Err() != nil {
		w.log.Info("checkpoint upload abandoned: the job was closed", "job", s.job, "step", s.step)
		w.onCheckpoint(CheckpointEvent{JobID: s.job, Step: s.step, Copy: s.copy, Size: size, Err: err})
		return false
	}
	w.checkpointOutcome(s, false, size, m, err)
	return err == nil
}

// checkpointDropped reports a snapshot that will never be written.
func (w *Worker) checkpointDropped(s *snapshot, why error) {
	if errors.Is(why, ErrCheckpointSkipped) {
		w.log.Info("checkpoint skipped: the writer is still busy with an older one, and a newer one replaces it", "job", s.job, "step", s.step)
	} else {
		w.log.Info("checkpoint dropped", "job", s.job, "step", s.step, "why", why)
	}
	w.onCheckpoint(CheckpointEvent{JobID: s.job, Step: s.step, Copy: s.copy, Err: why})
}

// checkpointOutcome logs a checkpoint's upload and reports it.
func (w *Worker) checkpointOutcome(s *snapshot, final bool, size int64, m *pb.CheckpointManifest, err error) {
	ev := CheckpointEvent{JobID: s.job, Step: s.step, Final: final, Copy: s.copy, Size: size, Err: err}
	switch {
	case err != nil && final:
		// finalCheckpoint says what becomes of the job.
	case err != nil:
		w.log.Error("checkpoint not held by the coordinators", "job", s.job, "step", s.step, "err", err)
	default:
		ev.Commit, ev.Holders = time.Since(s.taken), m.GetHolders()
		w.log.Info("checkpoint held by the coordinators", "job", s.job, "step", s.step, "final", final, "holders", ev.Holders,
			"size", size, "copy_ms", millis(ev.Copy), "commit_ms", millis(ev.Commit))
	}
	w.onCheckpoint(ev)
}

func (w *Worker) onCheckpoint(ev CheckpointEvent) {
	if w.cfg.OnCheckpoint != nil {
		w.cfg.OnCheckpoint(ev)
	}
}

func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// holdFinal writes the job's final checkpoint and uploads it, retrying
// with backoff for up to holdTimeout; it returns once the coordinators
// hold it, or the error that stopped it.
func (w *Worker) holdFinal(ctx context.Context, s *snapshot) error {
	ctx, cancel := context.WithTimeout(ctx, holdTimeout)
	defer cancel()
	var path, sum string
	var size int64
	backoff := time.Second
	for attempt := 1; ; attempt++ {
		var err error
		var m *pb.CheckpointManifest
		if path == "" {
			path, sum, size, err = w.writeLocal(s)
			if err != nil {
				path = ""
			}
		}
		if err == nil {
			m, err = w.upload(ctx, s, path, sum)
		}
		if err == nil || ctx.Err() != nil || permanent(err) {
			w.checkpointOutcome(s, true, size, m, err)
			return err
		}
		w.log.Warn("final checkpoint not held yet; retrying", "job", s.job, "step", s.step, "attempt", attempt, "retry_in", backoff, "err", err)
		select {
		case <-ctx.Done():
			err = fmt.Errorf("%w (after %d attempts: %w)", err, attempt, ctx.Err())
			w.checkpointOutcome(s, true, size, nil, err)
			return err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// permanent reports an error that trying again will not change.
func permanent(err error) bool {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.NotFound, codes.PermissionDenied, codes.Unauthenticated, codes.Unimplemented:
		return true
	}
	return false
}

// writeLocal checksums s's state and writes it into the local store under
// its key. It returns the file, the checksum and the size.
func (w *Worker) writeLocal(s *snapshot) (path, sum string, size int64, err error) {
	// The file's name holds its checksum, which Write computes: write it
	// under a temp name (one Open would clean up), then rename it.
	tmp, err := w.store.Path(ckptstore.Key(s.job, s.step, strings.Repeat("0", 64)))
	if err != nil {
		return "", "", 0, fmt.Errorf("checkpoint of step %d: %w", s.step, err)
	}
	tmp += ".tmp-unnamed"
	if err := os.MkdirAll(filepath.Dir(tmp), 0o700); err != nil {
		return "", "", 0, fmt.Errorf("checkpoint of step %d: local store: %w", s.step, err)
	}
	s.st.Meta.Created = s.taken.UTC()
	if sum, err = checkpoint.Write(tmp, s.st); err != nil {
		os.Remove(tmp)
		return "", "", 0, fmt.Errorf("checkpoint of step %d: %w", s.step, err)
	}
	if path, err = w.store.Path(ckptstore.Key(s.job, s.step, sum)); err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return "", "", 0, fmt.Errorf("checkpoint of step %d: name it in the local store: %w", s.step, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", "", 0, fmt.Errorf("checkpoint of step %d: %w", s.step, err)
	}
	w.pruneLocal(s.job)
	return path, sum, fi.Size(), nil
}

// upload sends the file of s to the coordinators and returns the
// committed manifest.
func (w *Worker) upload(ctx context.Context, s *snapshot, path, sum string) (*pb.CheckpointManifest, error) {
	hdr := &pb.CheckpointHeader{
		JobId: s.job, Step: s.step, Checksum: sum, Generation: s.gen, WorldSize: int32(s.world),
		WriterId: w.id, TimeUnixMs: s.taken.UnixMilli(),
	}
	put := w.putCheckpoint
	if put == nil {
		put = w.client.PutCheckpoint
	}
	m, err := put(ctx, path, hdr)
	if err != nil {
		return nil, fmt.Errorf("send the checkpoint of step %d to the coordinators: %w", s.step, err)
	}
	if m.GetStep() != s.step {
		return nil, fmt.Errorf("send the checkpoint of step %d to the coordinators: they committed step %d", s.step, m.GetStep())
	}
	if m.GetChecksum() != sum {
		// Another writer's file of the same step came first: the same
		// state (replicas are identical), held all the same.
		w.log.Warn("the coordinators hold another file of this step", "job", s.job, "step", s.step, "checksum", sum, "held", m.GetChecksum())
	}
	return m, nil
}

// pruneLocal keeps the newest localKeep checkpoints of job in the local
// store.
func (w *Worker) pruneLocal(job string) {
	ents, err := w.store.List()
	if err != nil {
		w.log.Warn("list the local checkpoints", "err", err)
		return
	}
	var mine []ckptstore.Entry
	for _, e := range ents {
		if e.JobID == job {
			mine = append(mine, e)
		}
	}
	slices.SortFunc(mine, func(a, b ckptstore.Entry) int { return cmpStep(b, a) })
	for _, e := range mine[min(localKeep, len(mine)):] {
		if err := w.store.Remove(e.Key); err != nil {
			w.log.Warn("remove an old local checkpoint", "key", e.Key, "err", err)
		}
	}
}

// cleanStore removes the local checkpoints of every job but job.
func (w *Worker) cleanStore(job string) {
	ents, err := w.store.List()
	if err != nil {
		w.log.Warn("list the local checkpoints", "err", err)
		return
	}
	removed := map[string]int{}
	for _, e := range ents {
		if e.JobID == job {
			continue
		}
		if err := w.store.Remove(e.Key); err != nil {
			w.log.Warn("remove another job's local checkpoint", "key", e.Key, "err", err)
			continue
		}
		removed[e.JobID]++
	}
	for id, n := range removed {
		w.log.Info("removed the local checkpoints of another job", "job", id, "files", n)
	}
}

// cmpStep orders entries by step, then by key.
func cmpStep(a, b ckptstore.Entry) int {
	switch {
	case a.Step < b.Step:
		return -1
	case a.Step > b.Step:
		return 1
	case a.Key < b.Key:
		return -1
	case a.Key > b.Key:
		return 1
	}
	return 0
}
