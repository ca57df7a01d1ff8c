package coordinator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
	"github.com/gencluster/gencluster/checkpoint"
	"github.com/gencluster/gencluster/ckptstore"
)

// ckptGroup is a group of coordinators that keep checkpoints, with a
// running job.
type ckptGroup struct {
	ms     []*svcMember
	stores []*ckptstore.Store
	client *Client
	job    string
}

func startCkptGroup(t testing.TB, dirs []string, keep int32) *ckptGroup {
	t.Helper()
	g := &ckptGroup{}
	for i, d := range dirs {
		if d == "" {
			dirs[i] = t.TempDir()
		}
		st, err := ckptstore.Open(dirs[i], nil)
		if err != nil {
			t.Fatal(err)
		}
		g.stores = append(g.stores, st)
	}
	g.ms = startServiceGroupStores(t, len(dirs), ServiceConfig{Lease: 10 * time.Second}, g.stores)
	l := leaderOf(t, g.ms)
	var addrs []string
	for _, m := range g.ms {
		addrs = append(addrs, m.addr)
	}
	c, err := NewClient(addrs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	g.client = c
	ctx := context.Background()
	join(t, ctx, l, "w1", "127.0.0.1:9001")
	r, err := l.client.Submit(ctx, &pb.SubmitRequest{Job: &pb.JobSpec{Model: "vae", Dataset: "mnist", Batch: 8, Steps: 1_000_000, Lr: 1e-3, Seed: 1, MinWorkers: 1, Keep: keep}})
	if err != nil {
		t.Fatal(err)
	}
	g.job = r.GetJobId()
	return g
}

// writeCkpt writes a checkpoint of job at step holding n values and
// returns its file and checksum.
func writeCkpt(t testing.TB, job string, step int64, n int) (string, string) {
	t.Helper()
	data := make([]float32, n)
	for i := range data {
		data[i] = float32(step) + float32(i)/float32(n)
	}
	st := &checkpoint.State{
		Meta: checkpoint.Meta{Job: checkpoint.Job{Model: "vae", Dataset: "mnist", Batch: 8, TotalSteps: 1000, Seed: 1, LR: 1e-3},
			Step: step, Tensors: []checkpoint.TensorInfo{{Name: "param/w", Shape: []int{n}}}},
		Data: [][]float32{data},
	}
	path := filepath.Join(t.TempDir(), fmt.Sprintf("%s-%d.db", job, step))
	sum, err := checkpoint.Write(path, st)
	if err != nil {
		t.Fatal(err)
	}
	return path, sum
}

func (g *ckptGroup) put(t testing.TB, step int64, n int) *pb.CheckpointManifest {
	t.Helper()
	path, sum := writeCkpt(t, g.job, step, n)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := g.client.PutCheckpoint(ctx, path, &pb.CheckpointHeader{JobId: g.job, Step: step, Checksum: sum, Generation: 1, WorldSize: 1, WriterId: "w1", TimeUnixMs: time.Now().UnixMilli()})
	if err != nil {
		t.Fatalf("put step %d: %v", step, err)
	}
	if m.GetStep() != step || m.GetChecksum() != sum || len(m.GetHolders()) < 2 {
		t.Fatalf("put step %d: manifest %v", step, m)
	}
	return m
}

// holders waits until the manifest of step names want as holders and
// every one of them has the file.
func (g *ckptGroup) awaitHolders(t *testing.T, step int64, want []string) *pb.CheckpointManifest {
	t.Helper()
	var got *pb.CheckpointManifest
	eventually(t, 15*time.Second, fmt.Sprintf("step %d held by %v", step, want), func() error {
		ms, err := g.client.ListCheckpoints(context.Background(), g.job)
		if err != nil {
			return err
		}
		i := slices.IndexFunc(ms, func(m *pb.CheckpointManifest) bool { return m.GetStep() == step })
		if i < 0 {
			return fmt.Errorf("step %d not listed: %v", step, ms)
		}
		got = ms[i]
		if !slices.Equal(got.GetHolders(), want) {
			return fmt.Errorf("holders %v", got.GetHolders())
		}
		for j, m := range g.ms {
			if slices.Contains(want, m.id) && !g.stores[j].Has(got.GetKey()) {
				return fmt.Errorf("%s lists itself but has no file", m.id)
			}
		}
		return nil
	})
	return got
}

func (g *ckptGroup) get(t *testing.T, m *svcMember, step int64) (*pb.CheckpointHeader, *checkpoint.State, error) {
	t.Helper()
	c, err := NewClient([]string{m.addr})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	out := filepath.Join(t.TempDir(), "got.db")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := c.GetCheckpoint(ctx, &pb.GetCheckpointRequest{JobId: g.job, Step: step}, func(*pb.CheckpointHeader) (string, error) { return out, nil })
	if err != nil {
		return nil, nil, err
	}
	st, err := checkpoint.Read(out)
	return h, st, err
}

// A checkpoint is committed once a majority holds it, every coordinator
// ends up holding it, status shows it, any coordinator serves it; a copy
// deleted behind a coordinator's back is fetched again from a peer, a
// damaged one is reported, deleted and replaced; retention deletes the
// files of checkpoints no longer kept, everywhere.
func TestCheckpointsHeldByTheGroup(t *testing.T) {
	g := startCkptGroup(t, make([]string, 3), 2)
	all := []string{"c1", "c2", "c3"}
	m1 := g.put(t, 100, 1000)
	g.awaitHolders(t, 100, all)

	st, err := g.client.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	lc := st.GetJobs()[0].GetLastCheckpoint()
	if lc.GetStep() != 100 || lc.GetChecksum() != m1.GetChecksum() || lc.GetSizeBytes() != m1.GetSizeBytes() || lc.GetSizeBytes() <= 0 {
		t.Fatalf("status last_checkpoint %v, manifest %v", lc, m1)
	}
	for _, m := range g.ms {
		h, got, err := g.get(t, m, 0)
		if err != nil {
			t.Fatalf("get from %s: %v", m.id, err)
		}
		if h.GetStep() != 100 || got.Meta.Step != 100 {
			t.Fatalf("get from %s: step %d / %d", m.id, h.GetStep(), got.Meta.Step)
		}
	}

	// c3 loses its copy: it fetches it again and stays a holder.
	path, _ := g.stores[2].Path(m1.GetKey())
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "c3 fetches its lost copy", func() error { return yet(g.stores[2].Has(m1.GetKey())) })

	// c2's copy is damaged: reading through c2 reports it, fetches a good
	// copy and serves that.
	path, _ = g.stores[1].Path(m1.GetKey())
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for k := 100; k < len(b); k += 256 {
		b[k] ^= 0xff
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := g.stores[1].Verify(m1.GetKey()); err == nil {
		t.Fatal("the damage did not damage c2's copy")
	}
	if _, got, err := g.get(t, g.ms[1], 100); err != nil || got.Meta.Step != 100 {
		t.Fatalf("get through c2 after damage: %v", err)
	}
	if _, _, err := g.stores[1].Verify(m1.GetKey()); err != nil {
		t.Fatalf("c2's copy after the read: %v", err)
	}

	// Retention (keep 2): the oldest goes, its files everywhere.
	g.put(t, 200, 1000)
	g.put(t, 300, 1000)
	g.awaitHolders(t, 300, all)
	ms, err := g.client.ListCheckpoints(context.Background(), g.job)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[0].GetStep() != 200 || ms[1].GetStep() != 300 {
		t.Fatalf("kept %v", ms)
	}
	eventually(t, 10*time.Second, "step 100 deleted everywhere", func() error {
		for i, s := range g.stores {
			if s.Has(m1.GetKey()) {
				return fmt.Errorf("c%d still has it", i+1)
			}
		}
		return nil
	})
	// An older step than the newest kept is refused.
	path200, sum := writeCkpt(t, g.job, 150, 10)
	_, err = g.client.PutCheckpoint(context.Background(), path200, &pb.CheckpointHeader{JobId: g.job, Step: 150, Checksum: sum, WriterId: "w1"})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("put behind the latest: %v", err)
	}
	// Only a member of the job's ring uploads its checkpoints.
	path400, sum := writeCkpt(t, g.job, 400, 10)
	_, err = g.client.PutCheckpoint(context.Background(), path400, &pb.CheckpointHeader{JobId: g.job, Step: 400, Checksum: sum, WriterId: "w9"})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("put by a worker outside the ring: %v", err)
	}
	if ms, err := g.client.ListCheckpoints(context.Background(), g.job); err != nil || ms[len(ms)-1].GetStep() != 300 {
		t.Fatalf("after the refused put: %v, %v", ms, err)
	}
	// A step not kept is NotFound, naming what is kept.
	if _, _, err := g.get(t, g.ms[0], 100); status.Code(err) != codes.NotFound {
		t.Fatalf("get a step not kept: %v", err)
	}

	// Every copy of the latest (300) damaged, one flipped, one truncated,
	// one emptied: asking for the latest gets the previous good one (200).
	m300 := g.awaitHolders(t, 300, all)
	for i, st := range g.stores {
		path, _ := st.Path(m300.GetKey())
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		switch i {
		case 0:
			for k := 100; k < len(b); k += 256 {
				b[k] ^= 0x40
			}
		case 1:
			b = b[:len(b)/2]
		case 2:
			b = nil
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	h, got, err := g.get(t, g.ms[1], 0)
	if err != nil || h.GetStep() != 200 || got.Meta.Step != 200 {
		t.Fatalf("latest with every copy of 300 damaged: %v, %v", h, err)
	}
}

// Job ids have a random part: two groups that both count from 1 never
// name a job alike, so a new job never meets an old one's checkpoints.
func TestJobIDsNeverRepeat(t *testing.T) {
	seen := map[string]bool{}
	for range 2 {
		ms := startServiceGroup(t, 1, time.Second)
		l := leaderOf(t, ms)
		r, err := l.client.Submit(context.Background(), &pb.SubmitRequest{Job: &pb.JobSpec{Model: "vae", Dataset: "mnist", Batch: 8, Steps: 10, Lr: 1e-3, Seed: 1, MinWorkers: 1}})
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`^job-1-[0-9a-f]{8}$`).MatchString(r.GetJobId()) || seen[r.GetJobId()] {
			t.Fatalf("job id %q (seen %v)", r.GetJobId(), seen)
		}
		seen[r.GetJobId()] = true
	}
}

// A coordinator whose disk is full fails its copy loudly; the others hold
// the quorum and the checkpoint is committed without it.
func TestCheckpointFullDisk(t *testing.T) {
	full := filepath.Join(t.TempDir(), "full")
	if err := os.Mkdir(full, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", full).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a small tmpfs to fill (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", full).Run() })
	g := startCkptGroup(t, []string{"", "", full}, 0)
	m := g.put(t, 100, 200_000) // 800 kB: more than c3's disk
	if slices.Contains(m.GetHolders(), "c3") {
		t.Fatalf("c3 (full) holds it: %v", m)
	}
	g.awaitHolders(t, 100, []string{"c1", "c2"})
	if g.stores[2].Has(m.GetKey()) {
		t.Fatal("c3 has a file on a full disk")
	}
	ents, err := os.ReadDir(filepath.Join(full, g.job))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("left on the full disk: %s", e.Name())
	}
	// Reading through c3 still works: it cannot store a copy, so it
	// passes a peer's through.
	if h, got, err := g.get(t, g.ms[2], 0); err != nil || h.GetStep() != 100 || got.Meta.Step != 100 {
		t.Fatalf("get through the full c3: %v", err)
	}
}

// benchCkptValues is the size of the benchmarks' checkpoint: 3M float32
// values (12 MiB; the VAE's checkpoint file is 8 MiB).
const benchCkptValues = 3 << 20

// BenchmarkCommitCheckpoint compares the two ways a checkpoint could reach
// a majority of 3 coordinators on loopback: as one raft log entry holding
// the bytes (through-log), or stored and copied beside the log with only a
// manifest committed (beside-log, what PutCheckpoint does: store, copy,
// commit).
func BenchmarkCommitCheckpoint(b *testing.B) {
	b.Run("through-log", func(b *testing.B) {
		var peers []Peer
		var lis []net.Listener
		for i := range 3 {
			l := listenLoopback(b)
			lis = append(lis, l)
			peers = append(peers, Peer{ID: fmt.Sprintf("c%d", i+1), Addr: l.Addr().String()})
		}
		var nodes []*Node
		for i, p := range peers {
			srv := grpc.NewServer(grpc.MaxRecvMsgSize(64 << 20))
			cfg := NodeConfig{ID: p.ID, Addr: p.Addr, DataDir: b.TempDir(), Peers: peers, FSM: newKV()}
			fastConfig(&cfg)
			n, err := NewNode(context.Background(), cfg, srv)
			if err != nil {
				b.Fatal(err)
			}
			go srv.Serve(lis[i])
			nodes = append(nodes, n)
			b.Cleanup(func() { n.Close(context.Background()); srv.Stop() })
		}
		var leader *Node
		elect := func() {
			eventually(b, 10*time.Second, "a leader", func() error {
				for _, n := range nodes {
					if n.IsLeader() {
						leader = n
						return nil
					}
				}
				return errors.New("none")
			})
		}
		elect()
		payload := append([]byte("ckpt="), make([]byte, 4*benchCkptValues)...)
		b.SetBytes(int64(len(payload)))
		b.ResetTimer()
		var small time.Duration
		lost := 0
		for range b.N {
			// A 12 MiB entry holds up the heartbeats behind it: with the
			// tests' 200 ms timeouts the leader may lose its lease. Count
			// that, and commit again through the new leader.
			for {
				var err error
				small += alongside(b, func(ctx context.Context) error {
					_, err = leader.Apply(ctx, payload)
					return nil
				}, func(ctx context.Context) error {
					leader.Apply(ctx, []byte("k=v")) // may fail the same way
					return nil
				})
				if err == nil {
					break
				}
				if !errors.Is(err, raft.ErrLeadershipLost) && !errors.Is(err, ErrNotLeader) {
					b.Fatal(err)
				}
				lost++
				elect()
			}
		}
		b.ReportMetric(float64(small.Milliseconds())/float64(b.N), "small-commit-ms")
		b.ReportMetric(float64(lost)/float64(b.N), "leader-lost/op")
	})
	b.Run("beside-log", func(b *testing.B) {
		g := startCkptGroup(b, make([]string, 3), 0)
		l := leaderOf(b, g.ms)
		noop, err := EncodeCommand(&pb.Command{Version: CommandVersion, TimeUnixMs: 1, Body: &pb.Command_RenewRing{RenewRing: &pb.RenewRing{Generation: 1 << 40, Reason: "bench"}}})
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(4 * benchCkptValues)
		b.ResetTimer()
		var small time.Duration
		for i := range b.N {
			b.StopTimer()
			path, sum := writeCkpt(b, g.job, int64(i+1), benchCkptValues)
			b.StartTimer()
			small += alongside(b, func(ctx context.Context) error {
				_, err := g.client.PutCheckpoint(ctx, path, &pb.CheckpointHeader{JobId: g.job, Step: int64(i + 1), Checksum: sum, WriterId: "w1"})
				return err
			}, func(ctx context.Context) error {
				_, err := l.node.Apply(ctx, noop) // committed, refused as stale by the FSM
				return err
			})
		}
		b.ReportMetric(float64(small.Milliseconds())/float64(b.N), "small-commit-ms")
	})
}

// alongside runs big, and 20 ms into it a small commit, and returns how
// long the small one took: what a checkpoint costs the other commands.
func alongside(b *testing.B, big, small func(context.Context) error) time.Duration {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- big(ctx) }()
	time.Sleep(20 * time.Millisecond) // the big one is on its way
	start := time.Now()
	if err := small(ctx); err != nil {
		b.Fatal(err)
	}
	took := time.Since(start)
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	return took
}
