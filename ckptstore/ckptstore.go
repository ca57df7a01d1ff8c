// Package ckptstore keeps checkpoint files in a directory and moves them
// between processes: a coordinator's store of the checkpoints it holds, a
// worker's local cache of its job's checkpoints, and the framing of a
// checkpoint file in a gRPC stream (pb.CheckpointChunk: a header first,
// the file's bytes in order, the CRC-32C of all of them last).
//
// A file is stored atomically (temp file, fsync, rename, directory fsync)
// and only after its bytes, its size and its contents (package checkpoint:
// format, checksum, step) check out, so a store never holds a half-written
// or unverified checkpoint under its final name.
package ckptstore

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
	"github.com/gencluster/gencluster/checkpoint"
)

// ChunkSize is how many bytes of a file one chunk carries.
const ChunkSize = 1 << 20

// MaxSize bounds the size of a checkpoint file a receiver accepts.
const MaxSize = 4 << 30

// castagnoli is the CRC-32C table (read-only; hardware-accelerated where
// the CPU has it).
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrFraming marks a stream whose chunks are not a well-formed checkpoint
// transfer (no header first, more or fewer bytes than announced, a bad
// CRC-32C, a header field out of range).
var ErrFraming = errors.New("checkpoint transfer is malformed")

// Store is a directory of checkpoint files, one folder per job:
// DIR/<job-id>/ckpt-<step, 10 digits>-<first 12 hex of the checksum>.db.
type Store struct {
	dir string
	log *slog.Logger
}

// Entry is one stored file.
type Entry struct {
	Key      string // Key(job, step, checksum)
	JobID    string
	Step     int64
	Checksum string // the prefix in the file name
	Size     int64
	ModTime  time.Time
}

// Key is the name of a checkpoint in a store, relative to its directory
// and slash-separated ("job-3-1a2b3c4d/ckpt-0000000100-0123456789ab.db").
func Key(jobID string, step int64, checksum string) string {
	if len(checksum) > sumPrefixLen {
		checksum = checksum[:sumPrefixLen]
	}
	return jobID + "/" + fmt.Sprintf("ckpt-%010d-%s.db", step, checksum)
}

const (
	// maxJobIDLen bounds a job id, which names a folder.
	maxJobIDLen = 128
	// sumPrefixLen is how much of the checksum a file name carries.
	sumPrefixLen = 12
	// tempMark is in the name of every temp file of a write in progress
	// (ours and package checkpoint's).
	tempMark = ".tmp-"
)

// checkJobID refuses a job id that cannot name a folder of a store: keys
// and headers arrive from the network.
func checkJobID(id string) error {
	switch {
	case id == "":
		return errors.New("empty job id")
	case len(id) > maxJobIDLen:
		return fmt.Errorf("job id of %d bytes, more than %d", len(id), maxJobIDLen)
	case id == "." || id == "..":
		return fmt.Errorf("job id %q", id)
	case strings.ContainsAny(id, "/\\\x00"):
		return fmt.Errorf("job id %q holds a slash, a backslash or a NUL", id)
	}
	return nil
}

// isHex reports whether s is n lowercase hex digits.
func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// parseName parses a file name of Key's form: "ckpt-", the step in at
// least 10 digits as %010d writes it, "-", 12 lowercase hex digits, ".db".
func parseName(name string) (step int64, prefix string, ok bool) {
	rest, ok1 := strings.CutPrefix(name, "ckpt-")
	rest, ok2 := strings.CutSuffix(rest, ".db")
	digits, prefix, ok3 := strings.Cut(rest, "-")
	if !ok1 || !ok2 || !ok3 || len(digits) < 10 || !isHex(prefix, sumPrefixLen) {
		return 0, "", false
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return 0, "", false
		}
	}
	step, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || fmt.Sprintf("%010d", step) != digits {
		return 0, "", false
	}
	return step, prefix, true
}

// parseKey splits a key of Key's form into its parts.
func parseKey(key string) (jobID, name string, step int64, prefix string, err error) {
	jobID, name, ok := strings.Cut(key, "/")
	if !ok {
		return "", "", 0, "", fmt.Errorf("checkpoint key %.200q: not <job id>/<file>", key)
	}
	if err := checkJobID(jobID); err != nil {
		return "", "", 0, "", fmt.Errorf("checkpoint key %.200q: %w", key, err)
	}
	step, prefix, ok = parseName(name)
	if !ok {
		return "", "", 0, "", fmt.Errorf("checkpoint key %.200q: file name not of the form ckpt-<step, 10 digits>-<12 hex>.db", key)
	}
	return jobID, name, step, prefix, nil
}

// checkHeader checks the fields of a transfer's header; its errors wrap
// ErrFraming.
func checkHeader(h *pb.CheckpointHeader) error {
	if err := checkJobID(h.GetJobId()); err != nil {
		return fmt.Errorf("%w: %w", ErrFraming, err)
	}
	switch {
	case h.GetStep() < 0:
		return fmt.Errorf("%w: job %q: step %d", ErrFraming, h.GetJobId(), h.GetStep())
	case h.GetSizeBytes() < 1 || h.GetSizeBytes() > MaxSize:
		return fmt.Errorf("%w: job %q step %d: size %d bytes, not in 1..%d", ErrFraming, h.GetJobId(), h.GetStep(), h.GetSizeBytes(), int64(MaxSize))
	case !isHex(h.GetChecksum(), 2*sha256.Size):
		return fmt.Errorf("%w: job %q step %d: checksum %.80q is not 64 lowercase hex digits", ErrFraming, h.GetJobId(), h.GetStep(), h.GetChecksum())
	}
	return nil
}

// Open opens (creating it, mode 0700) the store in dir and removes the
// temp files a crashed write left behind, logging each.
func Open(dir string, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("checkpoint store %s: %w", dir, err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("checkpoint store %s: %w", dir, err)
	}
	for _, e := range ents {
		if !e.IsDir() || checkJobID(e.Name()) != nil {
			continue
		}
		jobDir := filepath.Join(dir, e.Name())
		removed, err := checkpoint.CleanTemp(jobDir)
		for _, f := range removed {
			log.Info("removed the temp file of an interrupted checkpoint write", "file", f)
		}
		if err != nil {
			return nil, fmt.Errorf("checkpoint store %s: %w", dir, err)
		}
		// A job folder a crash left empty goes too (Remove only removes an
		// empty directory).
		_ = os.Remove(jobDir)
	}
	return &Store{dir: dir, log: log}, nil
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// Path is the file of key, or an error for a key that is not of Key's form.
func (s *Store) Path(key string) (string, error) {
	jobID, name, _, _, err := parseKey(key)
	if err != nil {
		return "", err
	}
	return filepath.Join(s.dir, jobID, name), nil
}

// Has reports whether the store holds a file under key.
func (s *Store) Has(key string) bool {
	p, err := s.Path(key)
	if err != nil {
		return false
	}
	fi, err := os.Lstat(p)
	return err == nil && fi.Mode().IsRegular()
}

// List returns every stored checkpoint, by job, then step.
func (s *Store) List() ([]Entry, error) {
	jobs, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("checkpoint store %s: %w", s.dir, err)
	}
	var out []Entry
	for _, j := range jobs {
		if !j.IsDir() || checkJobID(j.Name()) != nil {
			continue
		}
		files, err := os.ReadDir(filepath.Join(s.dir, j.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed since
		}
		if err != nil {
			return nil, fmt.Errorf("checkpoint store %s: %w", s.dir, err)
		}
		for _, f := range files {
			step, prefix, ok := parseName(f.Name())
			if !ok || !f.Type().IsRegular() {
				continue
			}
			fi, err := f.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("checkpoint store %s: %w", s.dir, err)
			}
			out = append(out, Entry{
				Key:      j.Name() + "/" + f.Name(),
				JobID:    j.Name(),
				Step:     step,
				Checksum: prefix,
				Size:     fi.Size(),
				ModTime:  fi.ModTime(),
			})
		}
	}
	sort.Slice(out, func(a, b int) bool {
		x, y := out[a], out[b]
		if x.JobID != y.JobID {
			return x.JobID < y.JobID
		}
		if x.Step != y.Step {
			return x.Step < y.Step
		}
		return x.Checksum < y.Checksum
	})
	return out, nil
}

// Remove deletes a stored checkpoint (and its job folder once empty).
func (s *Store) Remove(key string) error {
	p, err := s.Path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("checkpoint store: remove %s: %w", key, err)
	}
	// Only an empty folder goes; one that still holds a checkpoint, or the
	// temp file of a receive under way, stays.
	err = os.Remove(filepath.Dir(p))
	if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
		return fmt.Errorf("checkpoint store: remove %s: job folder: %w", key, err)
	}
	return nil
}

// Verify reads a stored checkpoint whole and checks it (package checkpoint).
func (s *Store) Verify(key string) (*checkpoint.Meta, string, error) {
	p, err := s.Path(key)
	if err != nil {
		return nil, "", err
	}
	_, _, step, prefix, _ := parseKey(key)
	m, sum, err := checkpoint.Verify(p)
	if err != nil {
		return nil, "", fmt.Errorf("checkpoint store: verify %s: %w", key, err)
	}
	if m.Step != step || !strings.HasPrefix(sum, prefix) {
		return nil, "", fmt.Errorf("checkpoint store: verify %s: %w: the file holds step %d, checksum %s", key, checkpoint.ErrCorrupt, m.Step, sum)
	}
	return m, sum, nil
}

// Receive reads one framed transfer from recv into the store. check, if
// not nil, sees the header before any byte is written and may refuse it.
// It returns the header and the key stored under. A transfer of a
// checkpoint the store already holds is read to its end and accepted.
func (s *Store) Receive(ctx context.Context, recv func() (*pb.CheckpointChunk, error), check func(*pb.CheckpointHeader) error) (*pb.CheckpointHeader, string, error) {
	return s.receive(ctx, recv, check, options{mkdir: true})
}

// ReceiveCopy is Receive for a copy of a checkpoint that the sending store
// verified when it received it (one coordinator copying to another): the
// bytes are checked (size, CRC-32C) but the contents are not read back.
// Every stored copy is still read whole when a coordinator starts and
// before it is served.
func (s *Store) ReceiveCopy(ctx context.Context, recv func() (*pb.CheckpointChunk, error), check func(*pb.CheckpointHeader) error) (*pb.CheckpointHeader, string, error) {
	return s.receive(ctx, recv, check, options{mkdir: true, trustContents: true})
}

func (s *Store) receive(ctx context.Context, recv func() (*pb.CheckpointChunk, error), check func(*pb.CheckpointHeader) error, opt options) (*pb.CheckpointHeader, string, error) {
	var key string
	var held bool
	hdr, err := receive(ctx, recv, func(h *pb.CheckpointHeader) (string, bool, error) {
		if check != nil {
			if err := check(h); err != nil {
				return "", false, fmt.Errorf("refused: %w", err)
			}
		}
		key = Key(h.GetJobId(), h.GetStep(), h.GetChecksum())
		p, err := s.Path(key)
		if err != nil {
			return "", false, err
		}
		held = s.Has(key)
		return p, held, nil
	}, opt)
	if err != nil {
		return nil, "", err
	}
	if held {
		s.log.Debug("checkpoint already held; transfer read and dropped", "key", key)
	} else {
		s.log.Debug("checkpoint stored", "key", key, "bytes", hdr.GetSizeBytes())
	}
	return hdr, key, nil
}

// ReceiveTo reads one framed transfer from recv into the file dest(header)
// names, atomically: the file appears only when the bytes, their size,
// their CRC-32C and the checkpoint's contents (checksum and step as the
// header says) check out.
func ReceiveTo(ctx context.Context, recv func() (*pb.CheckpointChunk, error), dest func(*pb.CheckpointHeader) (string, error)) (*pb.CheckpointHeader, error) {
	return receive(ctx, recv, func(h *pb.CheckpointHeader) (string, bool, error) {
		p, err := dest(h)
		if err == nil && p == "" {
			err = errors.New("no destination file named")
		}
		return p, false, err
	}, options{})
}

// tempFile is what receive writes a transfer to: an *os.File, but for
// tests that make writes fail.
type tempFile interface {
	io.Writer
	Sync() error
	Close() error
	Name() string
}

type options struct {
	mkdir bool // create the destination's directory (mode 0700)
	// trustContents skips reading the checkpoint back (ReceiveCopy): the
	// sender verified these very bytes, and the CRC-32C checks they came
	// whole.
	trustContents bool
	create        func(dir, pattern string) (tempFile, error)
}

// createTemp creates the temp file beside path. With mkdir it creates the
// directory too, and tries again should a concurrent Store.Remove take the
// (empty) directory away in between.
func (o options) createTemp(path string) (tempFile, error) {
	create := o.create
	if create == nil {
		create = func(dir, pattern string) (tempFile, error) {
			f, err := os.CreateTemp(dir, pattern)
			if err != nil {
				return nil, err
			}
			return f, nil
		}
	}
	dir, pattern := filepath.Dir(path), filepath.Base(path)+tempMark+"*"
	for attempt := 1; ; attempt++ {
		if o.mkdir {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return nil, err
			}
		}
		f, err := create(dir, pattern)
		if err == nil || !o.mkdir || attempt == 3 || !errors.Is(err, fs.ErrNotExist) {
			return f, err
		}
	}
}

// receive is ReceiveTo and Store.Receive: dest names the file for a
// header, or says with skip to read the transfer through (checking its
// framing and CRC-32C) without storing it.
func receive(ctx context.Context, recv func() (*pb.CheckpointChunk, error), dest func(*pb.CheckpointHeader) (path string, skip bool, err error), opt options) (*pb.CheckpointHeader, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("checkpoint transfer: %w", err)
	}
	c, err := recv()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: the stream ended before a header", ErrFraming)
	}
	if err != nil {
		return nil, fmt.Errorf("checkpoint transfer: receive the header: %w", err)
	}
	hdr := c.GetHeader()
	if hdr == nil {
		return nil, fmt.Errorf("%w: the first chunk carries no header", ErrFraming)
	}
	if err := checkHeader(hdr); err != nil {
		return nil, err
	}
	what := fmt.Sprintf("checkpoint transfer of job %q step %d", hdr.GetJobId(), hdr.GetStep())
	path, skip, err := dest(hdr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}

	var f tempFile // open while not nil
	var tmp string // to remove while not ""
	if !skip {
		f, err = opt.createTemp(path)
		if err != nil {
			return nil, fmt.Errorf("%s: create a temp file beside %s: %w", what, path, err)
		}
		tmp = f.Name()
		defer func() {
			if f != nil {
				f.Close()
			}
			if tmp != "" {
				os.Remove(tmp)
			}
		}()
	}

	size := hdr.GetSizeBytes()
	h := crc32.New(castagnoli)
	var n int64    // bytes received
	var ended bool // the last chunk (with the CRC-32C) was received
	for first := true; ; first = false {
		if !first {
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("%s: after %d of %d bytes: %w", what, n, size, err)
			}
			c, err = recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%s: receive after %d of %d bytes: %w", what, n, size, err)
			}
			if ended {
				return nil, fmt.Errorf("%s: %w: a chunk after the CRC-32C", what, ErrFraming)
			}
			if c.GetHeader() != nil {
				return nil, fmt.Errorf("%s: %w: a second header after %d bytes", what, ErrFraming, n)
			}
		}
		data := c.GetData()
		if int64(len(data)) > size-n {
			return nil, fmt.Errorf("%s: %w: more than the %d bytes announced", what, ErrFraming, size)
		}
		if f != nil {
			if _, err := f.Write(data); err != nil {
				return nil, fmt.Errorf("%s: write %s: %w", what, tmp, err)
			}
		}
		h.Write(data)
		n += int64(len(data))
		if c.FileCrc32C != nil {
			switch {
			case n != size:
				return nil, fmt.Errorf("%s: %w: the CRC-32C after %d of the %d bytes announced", what, ErrFraming, n, size)
			case c.GetFileCrc32C() != h.Sum32():
				return nil, fmt.Errorf("%s: %w: the bytes received do not have the CRC-32C sent", what, ErrFraming)
			}
			ended = true
		}
	}
	if !ended {
		return nil, fmt.Errorf("%s: %w: the stream ended after %d of %d bytes without a CRC-32C", what, ErrFraming, n, size)
	}
	if skip {
		return hdr, nil
	}

	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("%s: sync %s: %w", what, tmp, err)
	}
	err = f.Close()
	f = nil
	if err != nil {
		return nil, fmt.Errorf("%s: close %s: %w", what, tmp, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if !opt.trustContents {
		m, recorded, err := checkpoint.Verify(tmp)
		if err != nil {
			return nil, fmt.Errorf("%s: the file received: %w", what, err)
		}
		if recorded != hdr.GetChecksum() {
			return nil, fmt.Errorf("%s: %w: the file records checksum %s, the header %s", what, checkpoint.ErrCorrupt, recorded, hdr.GetChecksum())
		}
		if m.Step != hdr.GetStep() {
			return nil, fmt.Errorf("%s: %w: the file holds step %d", what, checkpoint.ErrCorrupt, m.Step)
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("%s: rename into place: %w", what, err)
	}
	tmp = ""
	dirs := []string{filepath.Dir(path)}
	if opt.mkdir { // the directory may be new: make its entry durable too
		dirs = append(dirs, filepath.Dir(dirs[0]))
	}
	for _, d := range dirs {
		if err := syncDir(d); err != nil {
			return nil, fmt.Errorf("%s: stored as %s, but: %w", what, path, err)
		}
	}
	return hdr, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// Send streams the checkpoint file at path with send: hdr (its size_bytes
// set from the file) in the first chunk, ChunkSize bytes a chunk, the
// CRC-32C of the file in the last.
func Send(ctx context.Context, path string, hdr *pb.CheckpointHeader, send func(*pb.CheckpointChunk) error) error {
	if hdr == nil {
		return fmt.Errorf("send checkpoint %s: no header", path)
	}
	what := fmt.Sprintf("send checkpoint %s (job %q step %d)", path, hdr.GetJobId(), hdr.GetStep())
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file", what)
	}
	size := fi.Size()
	// The caller's header is left alone: it may be shared (one checkpoint
	// sent to several peers at once).
	h := proto.Clone(hdr).(*pb.CheckpointHeader)
	h.SizeBytes = size
	if err := checkHeader(h); err != nil {
		return fmt.Errorf("%s: a receiver would refuse the transfer: %w", what, err)
	}
	hash := crc32.New(castagnoli)
	for sent := int64(0); sent < size; {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%s: after %d of %d bytes: %w", what, sent, size, err)
		}
		buf := make([]byte, min(ChunkSize, size-sent)) // send may keep it
		if _, err := io.ReadFull(f, buf); err != nil {
			return fmt.Errorf("%s: read after %d of %d bytes: %w", what, sent, size, err)
		}
		hash.Write(buf)
		c := &pb.CheckpointChunk{Data: buf}
		if sent == 0 {
			c.Header = h
		}
		sent += int64(len(buf))
		if sent == size {
			c.FileCrc32C = proto.Uint32(hash.Sum32())
		}
		if err := send(c); err != nil {
			return fmt.Errorf("%s: send after %d of %d bytes: %w", what, sent-int64(len(buf)), size, err)
		}
	}
	return nil
}
