package ckptstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
	"github.com/gencluster/gencluster/checkpoint"
)

const marker = 1234.5 // a value the test checkpoints hold, to find in their bytes

// state is a small checkpoint of step whose first tensor holds n values.
func state(step int64, n int) *checkpoint.State {
	w := make([]float32, n)
	for i := range w {
		w[i] = float32(i%97) / 8
	}
	w[n/2] = marker
	return &checkpoint.State{
		Meta: checkpoint.Meta{
			Job:     checkpoint.Job{Model: "vae", Dataset: "mnist", Batch: 8, TotalSteps: 100, Seed: 1, LR: 1e-3},
			Step:    step,
			Created: time.Unix(1700000000, 0).UTC(),
			Tensors: []checkpoint.TensorInfo{{Name: "param/w", Shape: []int{n}}, {Name: "param/b", Shape: []int{3}}},
		},
		Data: [][]float32{w, {1, 2, 3}},
	}
}

// source writes a checkpoint of step (n values) and returns its file, its
// bytes and the header to send it with.
func source(t testing.TB, job string, step int64, n int) (string, []byte, *pb.CheckpointHeader) {
	t.Helper()
	path := filepath.Join(t.TempDir(), checkpoint.FileName(step))
	sum, err := checkpoint.Write(path, state(step, n))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, b, &pb.CheckpointHeader{JobId: job, Step: step, SizeBytes: int64(len(b)), Checksum: sum, WriterId: "w1"}
}

// frame splits b into a transfer of chunks of at most size bytes.
func frame(hdr *pb.CheckpointHeader, b []byte, size int) []*pb.CheckpointChunk {
	var out []*pb.CheckpointChunk
	for len(b) > 0 {
		n := min(size, len(b))
		out = append(out, &pb.CheckpointChunk{Data: b[:n]})
		b = b[n:]
	}
	out[0].Header = hdr
	out[len(out)-1].FileCrc32C = crc(out)
	return out
}

// crc is the CRC-32C of the chunks' data, as the last chunk carries it.
func crc(chunks []*pb.CheckpointChunk) *uint32 {
	h := crc32.New(castagnoli)
	for _, c := range chunks {
		h.Write(c.GetData())
	}
	return proto.Uint32(h.Sum32())
}

// feed is a recv over chunks, then io.EOF.
func feed(chunks []*pb.CheckpointChunk) func() (*pb.CheckpointChunk, error) {
	return func() (*pb.CheckpointChunk, error) {
		if len(chunks) == 0 {
			return nil, io.EOF
		}
		c := chunks[0]
		chunks = chunks[1:]
		return c, nil
	}
}

// clone deep-copies chunks, for a test to damage.
func clone(chunks []*pb.CheckpointChunk) []*pb.CheckpointChunk {
	out := make([]*pb.CheckpointChunk, len(chunks))
	for i, c := range chunks {
		out[i] = proto.Clone(c).(*pb.CheckpointChunk)
	}
	return out
}

// files lists every file under dir, relative, slash-separated.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func noTemp(t *testing.T, dir string) {
	t.Helper()
	for _, f := range files(t, dir) {
		if strings.Contains(f, ".tmp-") {
			t.Errorf("temp file left behind: %s", f)
		}
	}
}

func open(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "store"), nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestKey(t *testing.T) {
	sum := strings.Repeat("0123456789abcdef", 4)
	if got, want := Key("job-3-1a2b3c4d", 100, sum), "job-3-1a2b3c4d/ckpt-0000000100-0123456789ab.db"; got != want {
		t.Fatalf("Key = %q, want %q", got, want)
	}
}

func TestSendReceiveRoundTrip(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	// A checkpoint of more than one chunk.
	path, want, hdr := source(t, "job-1", 40, 300_000)
	if len(want) <= ChunkSize {
		t.Fatalf("test checkpoint of %d bytes fits a chunk", len(want))
	}
	hdr.SizeBytes = 0 // Send sets it

	ch := make(chan *pb.CheckpointChunk)
	var sent []*pb.CheckpointChunk
	sendErr := make(chan error, 1)
	go func() {
		defer close(ch)
		sendErr <- Send(ctx, path, hdr, func(c *pb.CheckpointChunk) error {
			sent = append(sent, c)
			ch <- c
			return nil
		})
	}()
	var checked *pb.CheckpointHeader
	got, key, err := s.Receive(ctx, func() (*pb.CheckpointChunk, error) {
		c, ok := <-ch
		if !ok {
			return nil, io.EOF
		}
		return c, nil
	}, func(h *pb.CheckpointHeader) error { checked = h; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if err := <-sendErr; err != nil {
		t.Fatal(err)
	}
	if hdr.SizeBytes != 0 {
		t.Error("Send changed the caller's header")
	}
	if checked == nil || got.GetSizeBytes() != int64(len(want)) || got.GetWriterId() != "w1" || got.GetStep() != 40 {
		t.Fatalf("header received %v, checked %v", got, checked)
	}

	// Framing as Send makes it.
	if len(sent) != (len(want)+ChunkSize-1)/ChunkSize {
		t.Errorf("%d chunks for %d bytes", len(sent), len(want))
	}
	for i, c := range sent {
		if (c.Header != nil) != (i == 0) || (c.FileCrc32C != nil) != (i == len(sent)-1) || len(c.Data) > ChunkSize {
			t.Errorf("chunk %d: header %v, crc %v, %d bytes", i, c.Header != nil, c.FileCrc32C != nil, len(c.Data))
		}
	}
	if sent[len(sent)-1].GetFileCrc32C() != crc32.Checksum(want, castagnoli) {
		t.Error("last chunk's CRC-32C is not the file's")
	}

	if wantKey := Key("job-1", 40, hdr.Checksum); key != wantKey || !s.Has(key) {
		t.Fatalf("stored under %q (held: %v), want %q", key, s.Has(key), wantKey)
	}
	p, err := s.Path(key)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); !bytes.Equal(b, want) {
		t.Fatal("stored file differs from the one sent")
	}
	m, sum, err := s.Verify(key)
	if err != nil || m.Step != 40 || sum != hdr.Checksum {
		t.Fatalf("Verify: %v, %s, %v", m, sum, err)
	}
	noTemp(t, s.Dir())
}

func TestSendRefuses(t *testing.T) {
	ctx := context.Background()
	path, _, hdr := source(t, "job-1", 1, 10)
	never := func(*pb.CheckpointChunk) error { t.Error("sent a chunk"); return nil }
	empty := filepath.Join(t.TempDir(), "empty.db")
	os.WriteFile(empty, nil, 0o600)
	bad := proto.Clone(hdr).(*pb.CheckpointHeader)
	bad.JobId = "../x"
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	for name, err := range map[string]error{
		"missing file": Send(ctx, filepath.Join(t.TempDir(), "missing.db"), hdr, never),
		"empty file":   Send(ctx, empty, hdr, never),
		"directory":    Send(ctx, t.TempDir(), hdr, never),
		"bad job id":   Send(ctx, path, bad, never),
		"no header":    Send(ctx, path, nil, never),
		"cancelled":    Send(cancelled, path, hdr, never),
	} {
		if err == nil {
			t.Errorf("%s: sent", name)
		}
	}
	failure := errors.New("stream broken")
	if err := Send(ctx, path, hdr, func(*pb.CheckpointChunk) error { return failure }); !errors.Is(err, failure) {
		t.Errorf("send error: %v", err)
	}
}

// TestReceiveRefuses feeds damaged transfers: each must fail with the
// right error, leave no file under its key and no temp file.
func TestReceiveRefuses(t *testing.T) {
	_, b, hdr := source(t, "job-7", 70, 5000)
	good := frame(hdr, b, 4096)
	if len(good) < 4 {
		t.Fatalf("%d chunks", len(good))
	}
	last := len(good) - 1
	withHeader := func(f func(h *pb.CheckpointHeader)) func([]*pb.CheckpointChunk) []*pb.CheckpointChunk {
		return func(c []*pb.CheckpointChunk) []*pb.CheckpointChunk { f(c[0].Header); return c }
	}
	failure := errors.New("connection reset")
	type tc struct {
		damage func([]*pb.CheckpointChunk) []*pb.CheckpointChunk
		want   error // the error wrapped; nil: any
	}
	cases := map[string]tc{
		"empty stream":     {func([]*pb.CheckpointChunk) []*pb.CheckpointChunk { return nil }, ErrFraming},
		"no header":        {func(c []*pb.CheckpointChunk) []*pb.CheckpointChunk { c[0].Header = nil; return c }, ErrFraming},
		"header twice":     {func(c []*pb.CheckpointChunk) []*pb.CheckpointChunk { c[1].Header = hdr; return c }, ErrFraming},
		"header only last": {func(c []*pb.CheckpointChunk) []*pb.CheckpointChunk { c[0].Header, c[last].Header = nil, hdr; return c }, ErrFraming},
		"too many bytes": {func(c []*pb.CheckpointChunk) []*pb.CheckpointChunk {
			c[last].Data = append(slices.Clone(c[last].Data), 0)
			c[last].FileCrc32C = crc(c)
			return c
		}, ErrFraming},
		"too many bytes, no crc": {func(c []*pb.CheckpointChunk) []*pb.CheckpointChunk {
			extra := &pb.CheckpointChunk{Data: make([]byte, 1)}
			return append(c[:last:last], extra, extra, c[last])
		}, ErrFraming},
		"too few bytes": {func(c []*pb.CheckpointChunk) []*pb.CheckpointChunk {
			c = append(c[:1:1], c[2:]...)
			c[len(c)-1].FileCrc32C = crc(c)
			return c
		}, ErrFraming},
		"too few bytes, header says more": {withHeader(func(h *pb.CheckpointHeader) { h.SizeBytes++ }), ErrFraming},
		"wrong crc": {func(c []*pb.CheckpointChunk) []*pb.CheckpointChunk {
			c[last].FileCrc32C = proto.Uint32(c[last].GetFileCrc32C() ^ 1<<5)
			return c
		}, ErrFraming},
		"zero crc":    {func(c []*pb.CheckpointChunk) []*pb.CheckpointChunk { c[last].FileCrc32C = proto.Uint32(0); return c }, ErrFraming},
		"missing crc": {func(c []*pb.CheckpointChunk) []*pb.CheckpointChunk { c[last].FileCrc32C = nil; return c }, ErrFraming},
		"crc early": {func(c []*pb.CheckpointChunk) []*pb.CheckpointChunk {
			c[0].FileCrc32C = c[last].FileCrc32C
			return c
		}, ErrFraming},
		"chunk after crc": {func(c []*pb.CheckpointChunk) []*pb.CheckpointChunk {
			return append(c, &pb.CheckpointChunk{})
		}, ErrFraming},
		"bad job id":       {withHeader(func(h *pb.CheckpointHeader) { h.JobId = "../x" }), ErrFraming},
		"job id with nul":  {withHeader(func(h *pb.CheckpointHeader) { h.JobId = "a\x00b" }), ErrFraming},
		"long job id":      {withHeader(func(h *pb.CheckpointHeader) { h.JobId = strings.Repeat("j", 129) }), ErrFraming},
		"negative step":    {withHeader(func(h *pb.CheckpointHeader) { h.Step = -1 }), ErrFraming},
		"zero size":        {withHeader(func(h *pb.CheckpointHeader) { h.SizeBytes = 0 }), ErrFraming},
		"huge size":        {withHeader(func(h *pb.CheckpointHeader) { h.SizeBytes = MaxSize + 1 }), ErrFraming},
		"checksum not hex": {withHeader(func(h *pb.CheckpointHeader) { h.Checksum = strings.ToUpper(h.Checksum) }), ErrFraming},
		"checksum short":   {withHeader(func(h *pb.CheckpointHeader) { h.Checksum = h.Checksum[:12] }), ErrFraming},
		"checksum differs from the file's": {withHeader(func(h *pb.CheckpointHeader) {
			h.Checksum = strings.Repeat("ab", 32)
		}), checkpoint.ErrCorrupt},
		"step differs from the file's": {withHeader(func(h *pb.CheckpointHeader) { h.Step = 71 }), checkpoint.ErrCorrupt},
		"flipped byte, crc recomputed": {func(c []*pb.CheckpointChunk) []*pb.CheckpointChunk {
			flipMarker(t, c)
			c[last].FileCrc32C = crc(c)
			return c
		}, checkpoint.ErrCorrupt},
		"not a checkpoint": {func(c []*pb.CheckpointChunk) []*pb.CheckpointChunk {
			for _, x := range c {
				x.Data = bytes.Repeat([]byte{'x'}, len(x.Data))
			}
			c[last].FileCrc32C = crc(c)
			return c
		}, checkpoint.ErrNotCheckpoint},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			_, key, err := s.Receive(context.Background(), feed(tc.damage(clone(good))), nil)
			if err == nil {
				t.Fatalf("accepted as %s", key)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want one wrapping %v", err, tc.want)
			}
			if msg := err.Error(); errors.Is(err, checkpoint.ErrCorrupt) && !strings.Contains(msg, `job "job-7" step 7`) {
				t.Errorf("error %q does not name the job and step", msg)
			}
			if f := files(t, s.Dir()); len(f) != 0 {
				t.Fatalf("files left: %v", f)
			}
			// And ReceiveTo, into a directory of its own.
			dir := t.TempDir()
			if _, err := ReceiveTo(context.Background(), feed(tc.damage(clone(good))), func(*pb.CheckpointHeader) (string, error) {
				return filepath.Join(dir, "ckpt.db"), nil
			}); err == nil {
				t.Fatal("ReceiveTo accepted it")
			}
			if f := files(t, dir); len(f) != 0 {
				t.Fatalf("ReceiveTo left files: %v", f)
			}
		})
	}

	// Errors from the stream, the context and the caller's check.
	s := open(t)
	broken := func() func() (*pb.CheckpointChunk, error) {
		next := feed(clone(good))
		n := 0
		return func() (*pb.CheckpointChunk, error) {
			if n++; n == 3 {
				return nil, failure
			}
			return next()
		}
	}
	if _, _, err := s.Receive(context.Background(), broken(), nil); !errors.Is(err, failure) || !strings.Contains(err.Error(), `"job-7" step 70`) {
		t.Errorf("stream error: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	next := feed(clone(good))
	n := 0
	_, _, err := s.Receive(ctx, func() (*pb.CheckpointChunk, error) {
		if n++; n == 2 {
			cancel()
		}
		return next()
	}, nil)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	refusal := errors.New("not this job's coordinator")
	if _, _, err := s.Receive(context.Background(), feed(clone(good)), func(*pb.CheckpointHeader) error { return refusal }); !errors.Is(err, refusal) {
		t.Errorf("check's refusal: %v", err)
	}
	if f := files(t, s.Dir()); len(f) != 0 {
		t.Fatalf("files left: %v", f)
	}
}

// flipMarker damages the marker value in the chunks' data.
func flipMarker(t *testing.T, chunks []*pb.CheckpointChunk) {
	t.Helper()
	var pat [4]byte
	binary.LittleEndian.PutUint32(pat[:], math.Float32bits(marker))
	for _, c := range chunks {
		if i := bytes.Index(c.Data, pat[:]); i >= 0 {
			c.Data = slices.Clone(c.Data)
			c.Data[i] ^= 0x40
			return
		}
	}
	t.Fatal("marker not found in the checkpoint's bytes")
}

// fullFile is a temp file whose writes go to /dev/full: they fail with the
// kernel's ENOSPC, as on a full disk.
type fullFile struct {
	*os.File
	full *os.File
}

func (f fullFile) Write(b []byte) (int, error) { return f.full.Write(b) }
func (f fullFile) Close() error                { f.full.Close(); return f.File.Close() }

func TestReceiveWriteErrorENOSPC(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	_, b, hdr := source(t, "job-1", 3, 10)
	dir := t.TempDir()
	opt := options{create: func(dir, pattern string) (tempFile, error) {
		f, err := os.CreateTemp(dir, pattern)
		if err != nil {
			return nil, err
		}
		full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
		if err != nil {
			f.Close()
			return nil, err
		}
		return fullFile{f, full}, nil
	}}
	_, err := receive(context.Background(), feed(frame(hdr, b, 4096)), func(*pb.CheckpointHeader) (string, bool, error) {
		return filepath.Join(dir, "ckpt.db"), false, nil
	}, opt)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("error %v, want ENOSPC", err)
	}
	if !strings.Contains(err.Error(), `job "job-1" step 3`) {
		t.Errorf("error %q does not name the job and step", err)
	}
	if f := files(t, dir); len(f) != 0 {
		t.Fatalf("files left: %v", f)
	}
}

func TestReceiveIdempotent(t *testing.T) {
	s := open(t)
	_, b, hdr := source(t, "job-2", 5, 100)
	good := frame(hdr, b, 4096)
	_, key, err := s.Receive(context.Background(), feed(clone(good)), nil)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := s.Path(key)
	before, _ := os.Stat(p)

	// Held already: read through, not written.
	_, key2, err := s.Receive(context.Background(), feed(clone(good)), nil)
	if err != nil || key2 != key {
		t.Fatalf("second receive: %q, %v", key2, err)
	}
	after, _ := os.Stat(p)
	if !os.SameFile(before, after) {
		t.Error("the held file was replaced")
	}
	// Still checked: a bad transfer of a held checkpoint is an error.
	bad := clone(good)
	bad[len(bad)-1].FileCrc32C = proto.Uint32(bad[len(bad)-1].GetFileCrc32C() ^ 1)
	if _, _, err := s.Receive(context.Background(), feed(bad), nil); !errors.Is(err, ErrFraming) {
		t.Errorf("bad transfer of a held checkpoint: %v", err)
	}
	if f := files(t, s.Dir()); len(f) != 1 {
		t.Errorf("files: %v", f)
	}
}

func TestConcurrentReceivesOfOneCheckpoint(t *testing.T) {
	s := open(t)
	_, b, hdr := source(t, "job-2", 5, 20000)
	good := frame(hdr, b, 4096)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, err := s.Receive(context.Background(), feed(clone(good)), nil)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if f := files(t, s.Dir()); len(f) != 1 {
		t.Fatalf("files: %v", f)
	}
	if _, _, err := s.Verify(Key("job-2", 5, hdr.Checksum)); err != nil {
		t.Fatal(err)
	}
}

func TestOpenRemovesTempFiles(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, b, hdr := source(t, "job-1", 1, 10)
	_, key, err := s.Receive(context.Background(), feed(frame(hdr, b, 4096)), nil)
	if err != nil {
		t.Fatal(err)
	}
	leftovers := []string{
		"job-1/" + strings.TrimPrefix(key, "job-1/") + ".tmp-123456",
		"job-1/ckpt-0000000002.db.tmp-99",
		"job-9/ckpt-0000000001-000000000000.db.tmp-1",
	}
	for _, l := range leftovers {
		p := filepath.Join(dir, filepath.FromSlash(l))
		os.MkdirAll(filepath.Dir(p), 0o700)
		if err := os.WriteFile(p, b[:100], 0o600); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(dir, "notes.tmp-1"), nil, 0o600) // not in a job folder: not ours
	var logs bytes.Buffer
	if _, err := Open(dir, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Fatal(err)
	}
	if got, want := files(t, dir), []string{key, "notes.tmp-1"}; !slices.Equal(got, want) {
		t.Fatalf("after Open: %v, want %v", got, want)
	}
	if _, err := os.Stat(filepath.Join(dir, "job-9")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("empty job folder left: %v", err)
	}
	for _, l := range leftovers {
		if !strings.Contains(logs.String(), filepath.Base(l)) {
			t.Errorf("removal of %s not logged:\n%s", l, logs.String())
		}
	}
	if !strings.Contains(logs.String(), "removed the temp file of an interrupted checkpoint write") {
		t.Errorf("logs:\n%s", logs.String())
	}
}

func TestPath(t *testing.T) {
	s := open(t)
	sum := strings.Repeat("0123456789abcdef", 4)
	for _, key := range []string{
		Key("job-3-1a2b3c4d", 100, sum),
		Key("j", 0, sum),
		Key("j", 12345678901, sum),
		Key("job with spaces & ünïcode", math.MaxInt64, sum),
	} {
		p, err := s.Path(key)
		if err != nil {
			t.Errorf("%q: %v", key, err)
			continue
		}
		if rel, _ := filepath.Rel(s.Dir(), p); filepath.ToSlash(rel) != key {
			t.Errorf("%q: path %s", key, p)
		}
	}
	for _, key := range []string{
		"",
		"job-1",
		"job-1/",
		"/ckpt-0000000001-0123456789ab.db",
		"../ckpt-0000000001-0123456789ab.db",
		"./ckpt-0000000001-0123456789ab.db",
		"../../etc/ckpt-0000000001-0123456789ab.db",
		"job-1/../ckpt-0000000001-0123456789ab.db",
		"job-1/../../x/ckpt-0000000001-0123456789ab.db",
		"job-1/sub/ckpt-0000000001-0123456789ab.db",
		`a\b/ckpt-0000000001-0123456789ab.db`,
		"a\x00b/ckpt-0000000001-0123456789ab.db",
		strings.Repeat("j", 129) + "/ckpt-0000000001-0123456789ab.db",
		"job-1/ckpt-1-0123456789ab.db",
		"job-1/ckpt-00000000001-0123456789ab.db",
		"job-1/ckpt--000000001-0123456789ab.db",
		"job-1/ckpt-+000000001-0123456789ab.db",
		"job-1/ckpt-0000000001-0123456789AB.db",
		"job-1/ckpt-0000000001-0123456789a.db",
		"job-1/ckpt-0000000001-0123456789abc.db",
		"job-1/ckpt-0000000001-0123456789ab.db.tmp-1",
		"job-1/ckpt-0000000001-0123456789ab",
		"job-1/ckpt-0000000001.db",
		"job-1/..",
		"job-1/ckpt-99999999999999999999-0123456789ab.db",
	} {
		if p, err := s.Path(key); err == nil {
			t.Errorf("%q: path %s", key, p)
		}
		if s.Has(key) {
			t.Errorf("%q: held", key)
		}
		if err := s.Remove(key); err == nil {
			t.Errorf("%q: removed", key)
		}
	}
}

func TestListRemove(t *testing.T) {
	s := open(t)
	var keys []string
	for _, c := range []struct {
		job  string
		step int64
	}{{"job-b", 20}, {"job-a", 300}, {"job-b", 10}, {"job-a", 4}} {
		_, b, hdr := source(t, c.job, c.step, 50)
		_, key, err := s.Receive(context.Background(), feed(frame(hdr, b, 1<<20)), nil)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, key)
	}
	// Foreign things List leaves out.
	os.WriteFile(filepath.Join(s.Dir(), "README"), nil, 0o600)
	os.WriteFile(filepath.Join(s.Dir(), "job-a", "notes.txt"), nil, 0o600)
	os.WriteFile(filepath.Join(s.Dir(), "job-a", "ckpt-0000000001-0123456789ab.db.tmp-5"), nil, 0o600)
	os.Mkdir(filepath.Join(s.Dir(), "job-a", "ckpt-0000000002-0123456789ab.db"), 0o700)

	ents, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, fmt.Sprintf("%s %d", e.JobID, e.Step))
		if e.Size == 0 || e.ModTime.IsZero() || len(e.Checksum) != 12 || e.Key != Key(e.JobID, e.Step, e.Checksum) || !slices.Contains(keys, e.Key) {
			t.Errorf("entry %+v", e)
		}
	}
	if want := []string{"job-a 4", "job-a 300", "job-b 10", "job-b 20"}; !slices.Equal(got, want) {
		t.Fatalf("List: %v, want %v", got, want)
	}

	for _, k := range keys[:2] { // job-b 20, job-a 300
		if err := s.Remove(k); err != nil {
			t.Fatal(err)
		}
		if s.Has(k) {
			t.Fatalf("%s still held", k)
		}
	}
	if err := s.Remove(keys[0]); err != nil {
		t.Fatalf("removing a missing key: %v", err)
	}
	if err := s.Remove(keys[2]); err != nil { // job-b's last
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(s.Dir(), "job-b")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("empty job folder left: %v", err)
	}
	if _, err := os.Stat(filepath.Join(s.Dir(), "job-a")); err != nil {
		t.Errorf("job folder with files in it removed: %v", err)
	}
	if ents, _ := s.List(); len(ents) != 1 || ents[0].Key != keys[3] {
		t.Fatalf("List after removals: %v", ents)
	}
}

func TestVerifyChecksFileAgainstKey(t *testing.T) {
	s := open(t)
	_, b, hdr := source(t, "job-1", 8, 50)
	_, key, err := s.Receive(context.Background(), feed(frame(hdr, b, 4096)), nil)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := s.Path(key)
	// The same file under another step's name.
	other := Key("job-1", 9, hdr.Checksum)
	p9, _ := s.Path(other)
	if err := os.Link(p, p9); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Verify(other); !errors.Is(err, checkpoint.ErrCorrupt) {
		t.Errorf("a file under the wrong key verified: %v", err)
	}
	if _, _, err := s.Verify(Key("job-1", 10, hdr.Checksum)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing key: %v", err)
	}
}

func TestReceiveToRefusesDestErrors(t *testing.T) {
	_, b, hdr := source(t, "job-1", 1, 10)
	refusal := errors.New("no room")
	if _, err := ReceiveTo(context.Background(), feed(frame(hdr, b, 4096)), func(*pb.CheckpointHeader) (string, error) { return "", refusal }); !errors.Is(err, refusal) {
		t.Errorf("dest error: %v", err)
	}
	if _, err := ReceiveTo(context.Background(), feed(frame(hdr, b, 4096)), func(*pb.CheckpointHeader) (string, error) { return "", nil }); err == nil {
		t.Error("received to no file")
	}
	// A directory that does not exist: ReceiveTo creates none.
	missing := filepath.Join(t.TempDir(), "no", "such")
	if _, err := ReceiveTo(context.Background(), feed(frame(hdr, b, 4096)), func(*pb.CheckpointHeader) (string, error) {
		return filepath.Join(missing, "ckpt.db"), nil
	}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing directory: %v", err)
	}
}

// encodeChunks is FuzzReceive's input format: each chunk, marshalled,
// after its length as a uvarint.
func encodeChunks(chunks []*pb.CheckpointChunk) []byte {
	var out []byte
	for _, c := range chunks {
		b, err := proto.Marshal(c)
		if err != nil {
			panic(err)
		}
		out = binary.AppendUvarint(out, uint64(len(b)))
		out = append(out, b...)
	}
	return out
}

func decodeChunks(data []byte) []*pb.CheckpointChunk {
	var out []*pb.CheckpointChunk
	for len(data) > 0 {
		n, k := binary.Uvarint(data)
		if k <= 0 || n > uint64(len(data)-k) {
			n, k = uint64(len(data)), 0 // the rest is the last piece
		}
		piece := data[k : k+int(n)]
		data = data[k+int(n):]
		c := &pb.CheckpointChunk{}
		if proto.Unmarshal(piece, c) == nil {
			out = append(out, c)
		}
	}
	return out
}

// FuzzReceive: ReceiveTo never panics, never leaves a temp file, and
// stores only bytes whose CRC-32C the transfer carried. Its inputs are
// whole files (tens of KiB), which the fuzzer minimizes slowly: run it with -fuzzminimizetime 500x, as .ci/run does.
func FuzzReceive(f *testing.F) {
	_, b, hdr := source(f, "job-1", 3, 10)
	one := frame(hdr, b, 1<<20)
	many := frame(hdr, b, 8192)
	f.Add(encodeChunks(one))
	f.Add(encodeChunks(many))
	f.Add(encodeChunks(many[:len(many)-1]))
	f.Add(encodeChunks(many[1:]))
	f.Add(encodeChunks(append(clone(many), &pb.CheckpointChunk{Data: []byte{1}})))
	flipped := clone(many)
	flipped[1].Data[100] ^= 1
	f.Add(encodeChunks(flipped))
	enc := encodeChunks(many)
	f.Add(enc[:len(enc)/2])
	f.Add(enc[:len(enc)-1])
	f.Fuzz(func(t *testing.T, data []byte) {
		chunks := decodeChunks(data)
		dir := t.TempDir()
		dest := filepath.Join(dir, "ckpt.db")
		_, err := ReceiveTo(context.Background(), feed(chunks), func(*pb.CheckpointHeader) (string, error) { return dest, nil })
		left := files(t, dir)
		if err != nil {
			if len(left) != 0 {
				t.Fatalf("error %v, files left: %v", err, left)
			}
			return
		}
		if !slices.Equal(left, []string{"ckpt.db"}) {
			t.Fatalf("files: %v", left)
		}
		got, err := os.ReadFile(dest)
		if err != nil {
			t.Fatal(err)
		}
		if crc32.Checksum(got, castagnoli) != chunks[len(chunks)-1].GetFileCrc32C() {
			t.Fatal("stored file's CRC-32C is not the one sent")
		}
	})
}

// ReceiveCopy checks the bytes (size, CRC-32C) but does not read the
// contents back: a copy whose bytes were damaged before the sender framed
// them is stored (the sender had verified its file; every copy is read
// whole at start and before it is served), while Receive refuses it.
func TestReceiveCopyTrustsTheContents(t *testing.T) {
	_, b, hdr := source(t, "job-1", 40, 1000)
	chunks := frame(hdr, b, 1000)
	flipMarker(t, chunks)
	chunks[len(chunks)-1].FileCrc32C = crc(chunks)
	s := open(t)
	if _, _, err := s.Receive(context.Background(), feed(clone(chunks)), nil); !errors.Is(err, checkpoint.ErrCorrupt) {
		t.Fatalf("Receive of damaged contents: %v", err)
	}
	_, key, err := s.ReceiveCopy(context.Background(), feed(clone(chunks)), nil)
	if err != nil {
		t.Fatalf("ReceiveCopy: %v", err)
	}
	if _, _, err := s.Verify(key); !errors.Is(err, checkpoint.ErrCorrupt) {
		t.Fatalf("Verify of the copy: %v", err)
	}
	// The bytes are still checked.
	chunks[len(chunks)-1].FileCrc32C = proto.Uint32(chunks[len(chunks)-1].GetFileCrc32C() ^ 1)
	if _, _, err := open(t).ReceiveCopy(context.Background(), feed(chunks), nil); !errors.Is(err, ErrFraming) {
		t.Fatalf("ReceiveCopy with a bad CRC: %v", err)
	}
}
