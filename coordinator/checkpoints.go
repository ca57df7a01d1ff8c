package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
	"github.com/gencluster/gencluster/checkpoint"
	"github.com/gencluster/gencluster/ckptstore"
)

// Checkpoint keeping (see DESIGN.md, "Checkpoints"): the bytes travel
// beside the raft log, coordinator to coordinator; only a manifest (job,
// step, size, checksum, holders) is committed, once a majority of the
// voters hold the file durably.
const (
	// copyTimeout bounds the copy of one checkpoint to one peer.
	copyTimeout = 2 * time.Minute
	// keepEvery is how often a coordinator compares its store with the
	// committed manifests: it fetches what it misses, deletes what is no
	// longer kept.
	keepEvery = 2 * time.Second
	// fetchRetry is how long a failed catch-up of one checkpoint waits
	// before it is tried again.
	fetchRetry = 10 * time.Second
	// orphanGrace is how long a stored file no manifest names is kept (a
	// copy whose manifest is not committed yet, a job this replica has not
	// applied yet) before it is deleted.
	orphanGrace = 10 * time.Minute
)

// keeper is a coordinator's part in holding checkpoints: its store, the
// copies it sends to its peers, the catch-up of what it missed and the
// deletion of what is no longer kept.
type keeper struct {
	s     *Service
	store *ckptstore.Store
	log   *slog.Logger

	ctx    context.Context // the service's life: background copies end with it
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	verified map[string]bool      // keys read whole and found good since start
	failed   map[string]time.Time // keys whose catch-up failed, and when
	claimed  map[string]bool      // keys this coordinator has recorded itself as holder of
}

func newKeeper(s *Service, store *ckptstore.Store) *keeper {
	ctx, cancel := context.WithCancel(context.Background())
	return &keeper{
		s: s, store: store, log: s.log.With("component", "checkpoints"),
		ctx: ctx, cancel: cancel,
		verified: map[string]bool{}, failed: map[string]time.Time{}, claimed: map[string]bool{},
	}
}

// close stops the keeping loop and every background copy, and waits.
func (k *keeper) close() {
	k.cancel()
	k.wg.Wait()
}

func (s *Service) keeperOrErr() (*keeper, error) {
	if s.ckpt == nil {
		return nil, status.Errorf(codes.Unavailable, "coordinator %s keeps no checkpoints", s.node.ID())
	}
	return s.ckpt, nil
}

// manifests returns the committed manifests of a job, oldest first.
func (s *Service) manifests(jobID string) ([]*pb.CheckpointManifest, error) {
	var ms []*pb.CheckpointManifest
	var err error
	s.fsm.Read(func(st *State) { ms, err = st.Checkpoints(jobID) })
	return ms, err
}

// admit checks a checkpoint's header against the state before any of its
// bytes is stored: a job that has started, a step within it and not
// behind its latest checkpoint.
func (s *Service) admit(h *pb.CheckpointHeader) error {
	var j *pb.JobInfo
	var ms []*pb.CheckpointManifest
	var err error
	s.fsm.Read(func(st *State) {
		if j, err = st.Job(h.GetJobId()); err == nil {
			ms, err = st.Checkpoints(h.GetJobId())
		}
	})
	switch {
	case errors.Is(err, ErrNotFound) && !s.node.IsLeader():
		// Perhaps not applied here yet: the leader knows.
		return status.Errorf(codes.Unavailable, "coordinator %s does not know job %s (its replica may lag the leader's); try another", s.node.ID(), h.GetJobId())
	case err != nil:
		return toStatus(fmt.Errorf("checkpoint of job %q: %w", h.GetJobId(), err))
	case j.GetState() == JobQueued:
		return status.Errorf(codes.FailedPrecondition, "checkpoint of job %s: the job is queued", h.GetJobId())
	case h.GetStep() > j.GetSpec().GetSteps():
		return status.Errorf(codes.InvalidArgument, "checkpoint of job %s: step %d is past its %d steps", h.GetJobId(), h.GetStep(), j.GetSpec().GetSteps())
	}
	if n := len(ms); n > 0 && h.GetStep() < ms[n-1].GetStep() {
		return status.Errorf(codes.FailedPrecondition, "checkpoint of job %s: step %d is behind its latest checkpoint at step %d", h.GetJobId(), h.GetStep(), ms[n-1].GetStep())
	}
	return nil
}

// storeStatus maps an error of storing a transfer to a status: a malformed
// or damaged transfer is the sender's fault; anything else (a full disk)
// is this coordinator's, and another may take the checkpoint.
func (s *Service) storeStatus(what string, err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	msg := fmt.Sprintf("coordinator %s: %s: %v", s.node.ID(), what, err)
	switch {
	case errors.Is(err, ckptstore.ErrFraming), errors.Is(err, checkpoint.ErrCorrupt), errors.Is(err, checkpoint.ErrNotCheckpoint):
		return status.Error(codes.InvalidArgument, msg)
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, msg)
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, msg)
	}
	return status.Error(codes.Unavailable, msg)
}

func manifestOf(h *pb.CheckpointHeader, key string) *pb.CheckpointManifest {
	return &pb.CheckpointManifest{
		JobId: h.GetJobId(), Step: h.GetStep(), Checksum: h.GetChecksum(), TimeUnixMs: h.GetTimeUnixMs(),
		SizeBytes: h.GetSizeBytes(), Generation: h.GetGeneration(), WorldSize: h.GetWorldSize(),
		WriterId: h.GetWriterId(), Key: key,
	}
}

func headerOf(m *pb.CheckpointManifest) *pb.CheckpointHeader {
	return &pb.CheckpointHeader{
		JobId: m.GetJobId(), Step: m.GetStep(), Checksum: m.GetChecksum(), TimeUnixMs: m.GetTimeUnixMs(),
		SizeBytes: m.GetSizeBytes(), Generation: m.GetGeneration(), WorldSize: m.GetWorldSize(), WriterId: m.GetWriterId(),
	}
}

// PutCheckpoint stores a worker's checkpoint here, copies it to the other
// voters, and commits its manifest once a majority holds it.
func (s *Service) PutCheckpoint(st pb.Coordinator_PutCheckpointServer) error {
	k, err := s.keeperOrErr()
	if err != nil {
		return err
	}
	ctx := st.Context()
	start := time.Now()
	hdr, key, err := k.store.Receive(ctx, st.Recv, func(h *pb.CheckpointHeader) error {
		if err := s.actingFor(ctx, h.GetWriterId()); err != nil {
			return err // only the writer itself uploads its checkpoint
		}
		if err := s.ringMember("a checkpoint of job "+h.GetJobId(), h.GetWriterId()); err != nil {
			return err
		}
		return s.admit(h)
	})
	if err != nil {
		k.log.Warn("checkpoint not stored", "err", err)
		return s.storeStatus("store checkpoint", err)
	}
	k.markVerified(key)
	m := manifestOf(hdr, key)
	holders, need, failures, late := k.replicate(ctx, hdr, key)
	if len(holders) < need {
		late(nil)
		msg := fmt.Sprintf("checkpoint of job %s at step %d is held by %d coordinator(s) (%s), %d needed: %s",
			hdr.GetJobId(), hdr.GetStep(), len(holders), strings.Join(holders, ", "), need, strings.Join(failures, "; "))
		k.log.Error("checkpoint not held by a majority", "job", hdr.GetJobId(), "step", hdr.GetStep(), "holders", holders, "failures", failures)
		return status.Error(codes.Unavailable, msg)
	}
	m.Holders = holders
	rec, err := k.record(ctx, m, false)
	if err != nil {
		late(nil)
		return toStatus(fmt.Errorf("commit the manifest of job %s step %d: %w", hdr.GetJobId(), hdr.GetStep(), err))
	}
	late(rec)
	s.counts.ckptCommitted.Add(1)
	s.counts.ckptBytes.Add(uint64(rec.GetSizeBytes()))
	k.log.Info("checkpoint committed", "job", rec.GetJobId(), "step", rec.GetStep(), "size_bytes", rec.GetSizeBytes(),
		"holders", rec.GetHolders(), "took_ms", time.Since(start).Milliseconds())
	if len(failures) > 0 {
		k.log.Warn("checkpoint copies failed (the majority holds it)", "job", rec.GetJobId(), "step", rec.GetStep(), "failures", failures)
	}
	return st.SendAndClose(&pb.PutCheckpointResponse{Manifest: rec})
}

// replicate copies the stored checkpoint key to every other voter and
// returns as soon as a majority of the voters hold it (this one included,
// if it votes), or every copy has ended, or ctx ends: the holders, how
// many are needed, the failures so far, and late: call it with the
// committed manifest (nil if none was committed) and the copies still
// running go on in the background and add their coordinators as holders.
func (k *keeper) replicate(ctx context.Context, hdr *pb.CheckpointHeader, key string) (holders []string, need int, failures []string, late func(*pb.CheckpointManifest)) {
	self := k.s.node.ID()
	servers, err := k.s.node.Servers(ctx)
	if err != nil {
		return []string{self}, 2, []string{"read the raft configuration: " + err.Error()}, func(*pb.CheckpointManifest) {}
	}
	voters := 0
	var peers []Server
	for _, sv := range servers {
		if !sv.Voter {
			continue
		}
		voters++
		if sv.ID == self {
			holders = append(holders, self)
		} else {
			peers = append(peers, sv)
		}
	}
	need = voters/2 + 1
	type result struct {
		id  string
		err error
	}
	results := make(chan result, len(peers))
	path, _ := k.store.Path(key)
	for _, p := range peers {
		k.wg.Add(1)
		go func() {
			defer k.wg.Done()
			cctx, cancel := context.WithTimeout(k.ctx, copyTimeout)
			defer cancel()
			results <- result{p.ID, k.sendTo(cctx, p.Addr, path, hdr)}
		}()
	}
	consumed, gaveUp := 0, false
	for !gaveUp && consumed < len(peers) && len(holders) < need {
		select {
		case r := <-results:
			consumed++
			if r.err != nil {
				failures = append(failures, fmt.Sprintf("%s: %v", r.id, r.err))
				k.log.Error("checkpoint copy failed", "to", r.id, "job", hdr.GetJobId(), "step", hdr.GetStep(), "err", r.err)
				continue
			}
			holders = append(holders, r.id)
		case <-ctx.Done():
			failures = append(failures, "the writer went away: "+ctx.Err().Error())
			gaveUp = true // the rest finish in the background
		}
	}
	left := len(peers) - consumed
	late = func(committed *pb.CheckpointManifest) {
		if left <= 0 {
			return
		}
		k.wg.Add(1)
		go func() {
			defer k.wg.Done()
			for range left {
				var r result
				select {
				case r = <-results:
				case <-k.ctx.Done():
					return
				}
				if r.err != nil {
					k.log.Error("checkpoint copy failed", "to", r.id, "job", hdr.GetJobId(), "step", hdr.GetStep(), "err", r.err)
					continue
				}
				if committed == nil {
					continue
				}
				m := proto.CloneOf(committed)
				m.Holders = []string{r.id}
				rctx, cancel := context.WithTimeout(k.ctx, 30*time.Second)
				if _, err := k.record(rctx, m, true); err != nil {
					k.log.Warn("record a late checkpoint copy", "holder", r.id, "job", m.GetJobId(), "step", m.GetStep(), "err", err)
				}
				cancel()
			}
		}()
	}
	return holders, need, failures, late
}

// sendTo copies the checkpoint file at path to the coordinator at addr.
func (k *keeper) sendTo(ctx context.Context, addr, path string, hdr *pb.CheckpointHeader) error {
	c, err := k.s.peer(addr)
	if err != nil {
		return err
	}
	st, err := c.ReplicateCheckpoint(ctx)
	if err != nil {
		return err
	}
	if err := ckptstore.Send(ctx, path, proto.CloneOf(hdr), st.Send); err != nil {
		st.CloseSend()
		if _, rerr := st.CloseAndRecv(); rerr != nil {
			return rerr // the peer's reason
		}
		return err
	}
	_, err = st.CloseAndRecv()
	return err
}

// record commits a manifest through the leader (forwarding if needed).
func (k *keeper) record(ctx context.Context, m *pb.CheckpointManifest, addHolders bool) (*pb.CheckpointManifest, error) {
	req := &pb.RecordCheckpointRequest{Manifest: m, AddHolders: addHolders}
	r, err := k.s.RecordCheckpoint(ctx, req)
	return r.GetManifest(), err
}

// ReplicateCheckpoint stores a peer's copy of a checkpoint.
func (s *Service) ReplicateCheckpoint(st pb.Coordinator_ReplicateCheckpointServer) error {
	k, err := s.keeperOrErr()
	if err != nil {
		return err
	}
	// The sender read these bytes back whole when it stored them; the
	// CRC-32C checks they came whole. This copy is read whole when this
	// coordinator starts and before it serves it.
	hdr, key, err := k.store.ReceiveCopy(st.Context(), st.Recv, nil)
	if err != nil {
		k.log.Error("checkpoint copy not stored", "err", err)
		return s.storeStatus("store a checkpoint copy", err)
	}
	s.counts.copies.Add(1)
	k.log.Debug("checkpoint copy stored", "job", hdr.GetJobId(), "step", hdr.GetStep(), "key", key)
	return st.SendAndClose(&pb.ReplicateCheckpointResponse{CoordinatorId: s.node.ID()})
}

// RecordCheckpoint commits a manifest (on the leader).
func (s *Service) RecordCheckpoint(ctx context.Context, req *pb.RecordCheckpointRequest) (*pb.RecordCheckpointResponse, error) {
	if err := validateManifest(req.GetManifest()); err != nil {
		return nil, toStatus(err)
	}
	return write(ctx, s, func() (*pb.RecordCheckpointResponse, error) {
		v, err := s.propose(ctx, &pb.Command{Body: &pb.Command_RecordCheckpoint{RecordCheckpoint: &pb.RecordCheckpoint{
			Manifest: req.GetManifest(), AddHolders: req.GetAddHolders()}}})
		if err != nil {
			return nil, err
		}
		m, _ := v.(*pb.CheckpointManifest)
		return &pb.RecordCheckpointResponse{Manifest: m}, nil
	}, func(c pb.CoordinatorClient, ctx context.Context) (*pb.RecordCheckpointResponse, error) {
		return c.RecordCheckpoint(ctx, req)
	})
}

// ListCheckpoints lists the committed manifests. A follower answers with
// the leader's list if the leader answers quickly (a follower's replica
// may lag it by a commit), else with its own.
func (s *Service) ListCheckpoints(ctx context.Context, req *pb.ListCheckpointsRequest) (*pb.ListCheckpointsResponse, error) {
	if !isForwarded(ctx) && !s.node.IsLeader() {
		if c, err := s.leaderClient(); err == nil {
			lctx, cancel := context.WithTimeout(ctx, statusFromLeader)
			r, err := c.ListCheckpoints(markForwarded(lctx), req)
			cancel()
			if err == nil || status.Code(err) == codes.NotFound {
				return r, err
			}
		}
	}
	out := &pb.ListCheckpointsResponse{}
	var err error
	s.fsm.Read(func(st *State) {
		if req.GetJobId() != "" {
			out.Checkpoints, err = st.Checkpoints(req.GetJobId())
			return
		}
		for _, j := range st.Jobs() {
			ms, _ := st.Checkpoints(j.GetId())
			out.Checkpoints = append(out.Checkpoints, ms...)
		}
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return out, nil
}

// GetCheckpoint streams a committed checkpoint. Step 0 asks for the
// job's latest good one: a checkpoint no coordinator holds a good copy of
// is reported and the one before it is sent.
func (s *Service) GetCheckpoint(req *pb.GetCheckpointRequest, st pb.Coordinator_GetCheckpointServer) error {
	k, err := s.keeperOrErr()
	if err != nil {
		return err
	}
	if err := validateID("job_id", req.GetJobId()); err != nil {
		return toStatus(err)
	}
	ctx := st.Context()
	ms, err := s.manifests(req.GetJobId())
	if !req.GetLocal() && !s.node.IsLeader() && (err != nil || len(ms) == 0 || req.GetStep() > ms[len(ms)-1].GetStep()) {
		// This replica may lag the leader's: ask it.
		if r, lerr := s.ListCheckpoints(ctx, &pb.ListCheckpointsRequest{JobId: req.GetJobId()}); lerr == nil {
			ms, err = r.GetCheckpoints(), nil
		}
	}
	if err != nil {
		return toStatus(err)
	}
	var candidates []*pb.CheckpointManifest
	for i := len(ms) - 1; i >= 0; i-- {
		if req.GetStep() == 0 || ms[i].GetStep() == req.GetStep() {
			candidates = append(candidates, ms[i])
		}
	}
	if len(candidates) == 0 {
		if req.GetStep() == 0 {
			return status.Errorf(codes.NotFound, "job %s has no checkpoint yet", req.GetJobId())
		}
		return status.Errorf(codes.NotFound, "job %s has no checkpoint at step %d (kept: %s)", req.GetJobId(), req.GetStep(), steps(ms))
	}
	var errs []string
	for _, m := range candidates {
		path, err := k.ensure(ctx, m, true, !req.GetLocal())
		if err != nil && !req.GetLocal() {
			// It cannot be stored here (a full disk, say): pass a peer's
			// copy through.
			relayed, rerr := k.relay(ctx, m, st)
			if relayed {
				return rerr
			}
			err = errors.Join(err, rerr)
		}
		if err != nil {
			errs = append(errs, fmt.Sprintf("step %d: %v", m.GetStep(), err))
			k.log.Error("no good copy of a checkpoint", "job", m.GetJobId(), "step", m.GetStep(), "err", err)
			continue
		}
		if err := ckptstore.Send(ctx, path, headerOf(m), st.Send); err != nil {
			return s.storeStatus(fmt.Sprintf("send checkpoint of job %s step %d", m.GetJobId(), m.GetStep()), err)
		}
		if len(errs) > 0 {
			k.log.Warn("sent an older checkpoint: the newer ones have no good copy", "job", m.GetJobId(), "step", m.GetStep(), "errors", errs)
		}
		return nil
	}
	code := codes.Unavailable
	if req.GetLocal() {
		code = codes.NotFound
	}
	return status.Errorf(code, "coordinator %s: no good copy of job %s's checkpoint: %s", s.node.ID(), req.GetJobId(), strings.Join(errs, "; "))
}

func steps(ms []*pb.CheckpointManifest) string {
	var b strings.Builder
	for i, m := range ms {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprint(&b, m.GetStep())
	}
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}

// ensure makes sure this coordinator holds a good copy of m and returns
// its file. reverify reads a copy verified before once more; a damaged
// copy is reported (naming the file and the checkpoint) and deleted;
// fetch allows fetching a missing or deleted copy from the other
// coordinators (holders first), after which this one records itself as a
// holder.
func (k *keeper) ensure(ctx context.Context, m *pb.CheckpointManifest, reverify, fetch bool) (string, error) {
	key := m.GetKey()
	path, err := k.store.Path(key)
	if err != nil {
		return "", fmt.Errorf("manifest key %q: %w", key, err)
	}
	if k.store.Has(key) {
		k.mu.Lock()
		ok := k.verified[key] && !reverify
		k.mu.Unlock()
		if ok || k.check(key, m.GetJobId(), m.GetStep(), m.GetChecksum()) {
			return path, nil
		}
	}
	if !fetch {
		return "", fmt.Errorf("not held here")
	}
	if err := k.fetch(ctx, m); err != nil {
		return "", err
	}
	return path, nil
}

// check reads the stored copy of key whole (and, if want is set, compares
// its checksum): a damaged copy is logged, naming the file and the
// checkpoint, deleted (a good one is fetched again from a peer) and
// forgotten. It reports whether the copy is good.
func (k *keeper) check(key, job string, step int64, want string) bool {
	_, sum, err := k.store.Verify(key)
	if err == nil && want != "" && sum != want {
		err = fmt.Errorf("%w: checksum %s, the manifest says %s", checkpoint.ErrCorrupt, sum, want)
	}
	if err == nil {
		k.markVerified(key)
		return true
	}
	path, _ := k.store.Path(key)
	k.log.Error("damaged checkpoint copy: deleting it (a good copy is fetched from a peer)", "file", path, "job", job, "step", step, "err", err)
	k.forget(key)
	if rerr := k.store.Remove(key); rerr != nil {
		k.log.Error("remove a damaged checkpoint copy", "file", path, "err", rerr)
	}
	return false
}

func (k *keeper) markVerified(key string) {
	k.mu.Lock()
	k.verified[key] = true
	k.mu.Unlock()
}

// forget drops what the keeper remembers of key (its file is gone).
func (k *keeper) forget(key string) {
	k.mu.Lock()
	delete(k.verified, key)
	delete(k.claimed, key)
	k.mu.Unlock()
}

// fetch copies m from another coordinator into the store and records
// this coordinator as a holder.
func (k *keeper) fetch(ctx context.Context, m *pb.CheckpointManifest) error {
	self := k.s.node.ID()
	servers, err := k.s.node.Servers(ctx)
	if err != nil {
		return err
	}
	slices.SortStableFunc(servers, func(a, b Server) int {
		ha, hb := slices.Contains(m.GetHolders(), a.ID), slices.Contains(m.GetHolders(), b.ID)
		switch {
		case ha && !hb:
			return -1
		case hb && !ha:
			return 1
		}
		return 0
	})
	var errs []string
	for _, sv := range servers {
		if sv.ID == self {
			continue
		}
		if err := k.fetchFrom(ctx, sv.Addr, m); err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", sv.ID, err))
			continue
		}
		k.log.Info("checkpoint fetched from a peer", "from", sv.ID, "job", m.GetJobId(), "step", m.GetStep())
		k.claim(ctx, m)
		return nil
	}
	if len(errs) == 0 {
		return errors.New("no other coordinator to fetch it from")
	}
	return fmt.Errorf("fetch from the other coordinators: %s", strings.Join(errs, "; "))
}

func (k *keeper) fetchFrom(ctx context.Context, addr string, m *pb.CheckpointManifest) error {
	c, err := k.s.peer(addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, copyTimeout)
	defer cancel()
	st, err := c.GetCheckpoint(ctx, &pb.GetCheckpointRequest{JobId: m.GetJobId(), Step: m.GetStep(), Local: true})
	if err != nil {
		return err
	}
	_, key, err := k.store.Receive(ctx, st.Recv, func(h *pb.CheckpointHeader) error {
		if h.GetJobId() != m.GetJobId() || h.GetStep() != m.GetStep() || h.GetChecksum() != m.GetChecksum() {
			return fmt.Errorf("%w: sent job %s step %d checksum %s, asked for job %s step %d checksum %s", ckptstore.ErrFraming,
				h.GetJobId(), h.GetStep(), h.GetChecksum(), m.GetJobId(), m.GetStep(), m.GetChecksum())
		}
		return nil
	})
	if err != nil {
		return err
	}
	if key != m.GetKey() {
		k.store.Remove(key)
		return fmt.Errorf("stored as %s, the manifest says %s", key, m.GetKey())
	}
	k.markVerified(key)
	return nil
}

// relay passes a peer's copy of m to st, chunk by chunk (the receiver
// checks it). relayed says whether any chunk was passed on: then the
// stream is spoken for, and err is its end.
func (k *keeper) relay(ctx context.Context, m *pb.CheckpointManifest, st pb.Coordinator_GetCheckpointServer) (relayed bool, err error) {
	servers, err := k.s.node.Servers(ctx)
	if err != nil {
		return false, err
	}
	var errs []error
	for _, sv := range servers {
		if sv.ID == k.s.node.ID() {
			continue
		}
		c, err := k.s.peer(sv.Addr)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		in, err := c.GetCheckpoint(ctx, &pb.GetCheckpointRequest{JobId: m.GetJobId(), Step: m.GetStep(), Local: true})
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", sv.ID, err))
			continue
		}
		first, err := in.Recv()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", sv.ID, err))
			continue
		}
		k.log.Info("passing a peer's checkpoint copy through", "from", sv.ID, "job", m.GetJobId(), "step", m.GetStep())
		for ch := first; ; {
			if err := st.Send(ch); err != nil {
				return true, err
			}
			if ch, err = in.Recv(); err == io.EOF {
				return true, nil
			} else if err != nil {
				return true, status.Errorf(codes.Unavailable, "relay from %s: %v", sv.ID, err)
			}
		}
	}
	return false, fmt.Errorf("relay from a peer: %w", errors.Join(errs...))
}

// claim records this coordinator as a holder of m (once).
func (k *keeper) claim(ctx context.Context, m *pb.CheckpointManifest) {
	self := k.s.node.ID()
	k.mu.Lock()
	done := k.claimed[m.GetKey()]
	k.mu.Unlock()
	if done || slices.Contains(m.GetHolders(), self) {
		return
	}
	c := proto.CloneOf(m)
	c.Holders = []string{self}
	if _, err := k.record(ctx, c, true); err != nil {
		k.log.Warn("record this coordinator as a checkpoint holder", "job", m.GetJobId(), "step", m.GetStep(), "err", err)
		return
	}
	k.mu.Lock()
	k.claimed[m.GetKey()] = true
	k.mu.Unlock()
}

// run keeps the store in line with the committed manifests until the
// service closes: at start it reads every stored file whole (a damaged one
// is reported and deleted); then, every keepEvery, it fetches the
// checkpoints it misses from its peers and deletes the ones no longer
// kept.
func (k *keeper) run() {
	defer k.wg.Done()
	k.verifyAll()
	t := time.NewTicker(keepEvery)
	defer t.Stop()
	for {
		k.pass(time.Now())
		select {
		case <-k.ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (k *keeper) verifyAll() {
	entries, err := k.store.List()
	if err != nil {
		k.log.Error("list the checkpoint store", "dir", k.store.Dir(), "err", err)
		return
	}
	bad := 0
	for _, e := range entries {
		if k.ctx.Err() != nil {
			return
		}
		if !k.check(e.Key, e.JobID, e.Step, "") {
			bad++
		}
	}
	k.log.Info("checkpoint store checked", "dir", k.store.Dir(), "files", len(entries), "damaged", bad)
}

// pass fetches the committed checkpoints missing here and deletes stored
// files that no kept manifest names.
func (k *keeper) pass(now time.Time) {
	type jobView struct{ ms []*pb.CheckpointManifest }
	jobs := map[string]jobView{}
	k.s.fsm.Read(func(st *State) {
		for _, j := range st.Jobs() {
			ms, _ := st.Checkpoints(j.GetId())
			jobs[j.GetId()] = jobView{ms: ms}
		}
	})
	referenced := map[string]bool{}
	for _, jv := range jobs {
		for _, m := range jv.ms {
			referenced[m.GetKey()] = true
			if k.ctx.Err() != nil {
				return
			}
			if k.store.Has(m.GetKey()) {
				k.claim(k.ctx, m)
				continue
			}
			k.mu.Lock()
			last, failed := k.failed[m.GetKey()]
			k.mu.Unlock()
			if failed && now.Sub(last) < fetchRetry {
				continue
			}
			if _, err := k.ensure(k.ctx, m, false, true); err != nil {
				if k.ctx.Err() == nil {
					k.log.Warn("catching up a checkpoint", "job", m.GetJobId(), "step", m.GetStep(), "err", err)
				}
				k.mu.Lock()
				k.failed[m.GetKey()] = now
				k.mu.Unlock()
				continue
			}
			k.mu.Lock()
			delete(k.failed, m.GetKey())
			k.mu.Unlock()
		}
	}
	entries, err := k.store.List()
	if err != nil {
		k.log.Error("list the checkpoint store", "dir", k.store.Dir(), "err", err)
		return
	}
	for _, e := range entries {
		if referenced[e.Key] {
			continue
		}
		jv, known := jobs[e.JobID]
		retired := known && len(jv.ms) > 0 && e.Step < jv.ms[0].GetStep()
		if !retired && now.Sub(e.ModTime) < orphanGrace {
			continue
		}
		if err := k.store.Remove(e.Key); err != nil {
			k.log.Warn("delete a checkpoint no longer kept", "key", e.Key, "err", err)
			continue
		}
		k.forget(e.Key)
		k.log.Info("checkpoint deleted", "job", e.JobID, "step", e.Step, "why", map[bool]string{true: "retention", false: "no committed manifest names it"}[retired])
	}
}
