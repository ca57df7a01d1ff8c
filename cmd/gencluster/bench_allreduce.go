package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/gencluster/gencluster/allreduce"
	"github.com/gencluster/gencluster/trust"
)

// allreduceBench is the JSON of `gencluster bench allreduce --json`.
type allreduceBench struct {
	Algorithm     string    `json:"algorithm"`
	World         int       `json:"world"`
	MiB           int       `json:"mib"`
	Iters         int       `json:"iters"`
	Threads       int       `json:"threads"`   // GOMAXPROCS of each member process
	ChunkKiB      int       `json:"chunk_kib"` // pipeline chunk (0: the default)
	MedianSeconds float64   `json:"median_seconds"`
	AlgBWMBps     float64   `json:"algbw_mbps"` // S / t
	BusBWMBps     float64   `json:"busbw_mbps"` // 2(N-1)/N * S / t
	LoopbackMBps  float64   `json:"loopback_mbps,omitempty"`
	BoundSeconds  float64   `json:"bound_seconds,omitempty"` // 2(N-1)/N * S / loopback bandwidth
	Seconds       []float64 `json:"seconds"`                 // rank 0's timed iterations
	TLS           bool      `json:"tls"`                     // the ring ran over mutual TLS (--tls)
}

func (a *app) benchAllreduceCommand() *cobra.Command {
	var world, mib, iters, threads, chunkKiB int
	var asJSON, loopback, useTLS bool
	cmd := &cobra.Command{
		Use:   "allreduce --world N --mib S [--iters K] [--tls] [--json]",
		Short: "Time a ring all-reduce of S MiB across N processes on loopback",
		Long: `Start N ring members as separate processes on loopback, all-reduce a buffer
of S MiB float32 K times (after 2 warm-up runs, each timed run preceded by a
barrier, as scripts/torch_reference.py allreduce does for gloo) and report rank 0's
median time, algorithm bandwidth S/t and bus bandwidth 2(N-1)/N*S/t.
Each member runs on --threads OS threads (GOMAXPROCS), 1 by default as the
anchor's torch.set_num_threads(1).
--loopback also measures one TCP stream's loopback bandwidth and the bound
2(N-1)/N*S / that bandwidth. --tls runs the ring over mutual TLS 1.3 with
worker certificates from a fresh CA (as --tls-dir does), to measure its cost.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if world < 1 || world > 64 || mib < 1 || mib > 4096 || iters < 1 || threads < 1 || threads > 256 {
				return fmt.Errorf("--world must be 1..64, --mib 1..4096, --iters >= 1, --threads 1..256 (got %d, %d, %d, %d)", world, mib, iters, threads)
			}
			if chunkKiB < 0 || chunkKiB > allreduce.MaxChunkBytes>>10 {
				return fmt.Errorf("--chunk-kib must be 0..%d, got %d", allreduce.MaxChunkBytes>>10, chunkKiB)
			}
			tlsDir := ""
			if useTLS {
				dir, err := os.MkdirTemp("", "gencluster-bench-tls")
				if err != nil {
					return err
				}
				defer os.RemoveAll(dir)
				if err := trust.Init(filepath.Join(dir, "certs"), nil, trust.IssueOptions{}); err != nil {
					return err
				}
				tlsDir = filepath.Join(dir, "certs", string(trust.Worker))
			}
			r, err := runAllreduceBench(cmd.Context(), world, mib, iters, threads, chunkKiB, tlsDir)
			if err != nil {
				return err
			}
			if loopback {
				bw, err := loopbackBandwidth(cmd.Context(), 1<<30)
				if err != nil {
					return err
				}
				r.LoopbackMBps = bw / 1e6
				r.BoundSeconds = 2 * float64(world-1) / float64(world) * float64(mib<<20) / bw
			}
			if asJSON {
				return a.printJSON(r)
			}
			fmt.Fprintf(a.stdout, "gencluster ring world=%d MiB=%d median_s=%.4f algbw_MBps=%.0f busbw_MBps=%.0f", r.World, r.MiB, r.MedianSeconds, r.AlgBWMBps, r.BusBWMBps)
			if loopback {
				fmt.Fprintf(a.stdout, " loopback_MBps=%.0f bound_s=%.4f", r.LoopbackMBps, r.BoundSeconds)
			}
			fmt.Fprintln(a.stdout)
			return nil
		},
	}
	cmd.Flags().IntVar(&world, "world", 2, "ring members (processes)")
	cmd.Flags().IntVar(&mib, "mib", 16, "buffer size in MiB")
	cmd.Flags().IntVar(&iters, "iters", 10, "timed runs")
	cmd.Flags().IntVar(&threads, "threads", 1, "OS threads (GOMAXPROCS) per member process")
	cmd.Flags().IntVar(&chunkKiB, "chunk-kib", 0, "pipeline chunk in KiB (0: the default)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON: median_seconds, algbw_mbps, busbw_mbps and the settings")
	cmd.Flags().BoolVar(&loopback, "loopback", false, "also measure single-stream loopback bandwidth and the bound")
	cmd.Flags().BoolVar(&useTLS, "tls", false, "run the ring over mutual TLS (worker certificates from a fresh CA)")
	return cmd
}

// runAllreduceBench starts world member processes (this binary, hidden
// subcommand), tells each the ring, and collects rank 0's timings.
func runAllreduceBench(ctx context.Context, world, mib, iters, threads, chunkKiB int, tlsDir string) (*allreduceBench, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("bench allreduce: find this binary: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type member struct {
		cmd   *exec.Cmd
		in    io.WriteCloser
		out   *bufio.Reader
		errb  *strings.Builder
		addr  string
		times []float64
	}
	ms := make([]*member, world)
	defer func() {
		for _, m := range ms {
			if m != nil && m.cmd.Process != nil {
				m.cmd.Process.Kill()
				m.cmd.Wait()
			}
		}
	}()
	for r := range ms {
		c := exec.CommandContext(ctx, self, "--tls-dir", tlsDir, "bench", "allreduce-member", "--rank", strconv.Itoa(r), "--mib", strconv.Itoa(mib), "--iters", strconv.Itoa(iters), "--threads", strconv.Itoa(threads), "--chunk-kib", strconv.Itoa(chunkKiB))
		in, err := c.StdinPipe()
		if err != nil {
			return nil, err
		}
		out, err := c.StdoutPipe()
		if err != nil {
			return nil, err
		}
		eb := &strings.Builder{}
		c.Stderr = eb
		if err := c.Start(); err != nil {
			return nil, fmt.Errorf("bench allreduce: start member %d: %w", r, err)
		}
		ms[r] = &member{cmd: c, in: in, out: bufio.NewReader(out), errb: eb}
	}
	var addrs []string
	for r, m := range ms {
		line, err := m.out.ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("bench allreduce: member %d gave no address: %w", r, err)
		}
		m.addr = strings.TrimSpace(line)
		addrs = append(addrs, m.addr)
	}
	for _, m := range ms {
		fmt.Fprintln(m.in, strings.Join(addrs, ","))
		m.in.Close()
	}
	var wg sync.WaitGroup
	errs := make([]error, world)
	for r, m := range ms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dec := json.NewDecoder(m.out)
			if err := dec.Decode(&m.times); err != nil {
				errs[r] = fmt.Errorf("member %d: %w", r, err)
			}
			if err := m.cmd.Wait(); err != nil {
				errs[r] = errors.Join(errs[r], fmt.Errorf("member %d: %w: %s", r, err, strings.TrimSpace(m.errb.String())))
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("bench allreduce: %w", err)
	}
	times := slices.Clone(ms[0].times)
	slices.Sort(times)
	med := times[len(times)/2]
	s := float64(mib << 20)
	return &allreduceBench{
		Algorithm: "ring (reduce-scatter + all-gather), gRPC streams", World: world, MiB: mib, Iters: iters, Threads: threads, ChunkKiB: chunkKiB,
		MedianSeconds: med, AlgBWMBps: s / med / 1e6, BusBWMBps: 2 * float64(world-1) / float64(world) * s / med / 1e6,
		Seconds: ms[0].times,
		TLS:     tlsDir != "",
	}, nil
}

// benchAllreduceMemberCommand is one ring member of `bench allreduce`: it
// prints its address, reads the ring's addresses from stdin, runs the
// operations and prints its timings as JSON.
func (a *app) benchAllreduceMemberCommand() *cobra.Command {
	var rank, mib, iters, threads, chunkKiB int
	cmd := &cobra.Command{
		Use:    "allreduce-member",
		Hidden: true,
		Args:   noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			runtime.GOMAXPROCS(threads)
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			creds, err := a.credentials(trust.Worker)
			if err != nil {
				return err
			}
			var dial []grpc.DialOption
			if creds != nil {
				dial = []grpc.DialOption{creds.DialOption(trust.Worker)}
			}
			srv := grpc.NewServer(append(allreduce.ServerOptions(), trust.ServerOptions(creds, nil, trust.WorkerPolicy(), a.log)...)...)
			m, err := allreduce.NewMember(allreduce.Config{Timeout: 60 * time.Second, ChunkBytes: chunkKiB << 10, DialOptions: dial}, srv)
			if err != nil {
				return err
			}
			defer m.Close()
			go srv.Serve(lis)
			defer srv.Stop()
			fmt.Fprintln(a.stdout, lis.Addr().String())
			line, err := bufio.NewReader(os.Stdin).ReadString('\n')
			if err != nil {
				return fmt.Errorf("read the ring: %w", err)
			}
			addrs := strings.Split(strings.TrimSpace(line), ",")
			g, err := m.SetRing(allreduce.Ring{JobID: "bench", Generation: 1, Rank: rank, Addrs: addrs})
			if err != nil {
				return err
			}
			buf := make([]float32, mib<<20/4)
			for i := range buf {
				buf[i] = 1
			}
			barrier := make([]float32, 1)
			for i := 0; i < 2; i++ {
				if err := g.AllReduce(ctx, buf); err != nil {
					return err
				}
			}
			times := make([]float64, iters)
			for i := range times {
				if err := g.AllReduce(ctx, barrier); err != nil {
					return err
				}
				t := time.Now()
				if err := g.AllReduce(ctx, buf); err != nil {
					return err
				}
				times[i] = time.Since(t).Seconds()
			}
			// Each element is now 1 * N^(iters+2): check a few.
			want := math.Pow(float64(len(addrs)), float64(iters+2))
			if got := float64(buf[len(buf)/2]); math.Abs(got-want) > 1e-3*want {
				return fmt.Errorf("rank %d: element is %v after %d all-reduces, want %v", rank, got, iters+2, want)
			}
			if err := g.AllReduce(ctx, barrier); err != nil { // nobody leaves early
				return err
			}
			return json.NewEncoder(a.stdout).Encode(times)
		},
	}
	cmd.Flags().IntVar(&rank, "rank", 0, "")
	cmd.Flags().IntVar(&mib, "mib", 16, "")
	cmd.Flags().IntVar(&iters, "iters", 10, "")
	cmd.Flags().IntVar(&threads, "threads", 1, "")
	cmd.Flags().IntVar(&chunkKiB, "chunk-kib", 0, "")
	return cmd
}

// loopbackBandwidth measures one TCP stream over loopback: bytes per second
// for n bytes written through it.
func loopbackBandwidth(ctx context.Context, n int64) (float64, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer lis.Close()
	done := make(chan error, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		_, err = io.Copy(io.Discard, c)
		done <- err
	}()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", lis.Addr().String())
	if err != nil {
		return 0, err
	}
	block := make([]byte, 1<<20)
	t := time.Now()
	for sent := int64(0); sent < n; sent += int64(len(block)) {
		if _, err := c.Write(block); err != nil {
			c.Close()
			return 0, err
		}
	}
	c.Close()
	if err := <-done; err != nil {
		return 0, err
	}
	return float64(n) / time.Since(t).Seconds(), nil
}
