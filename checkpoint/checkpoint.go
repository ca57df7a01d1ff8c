// Package checkpoint stores training state (parameters, optimizer moments,
// step, job settings) in bbolt files, written atomically (temp file, fsync,
// rename, directory fsync) and checksummed, so that a reader either finds a
// whole good checkpoint or a clear error, and can fall back to an older one.
package checkpoint

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"time"
	"unsafe"

	bolt "go.etcd.io/bbolt"
)

// FormatVersion is the version of the layout below that Write writes.
// Readers take it and the first version, and refuse others:
//
//	bucket "gencluster": "meta" (the Meta as JSON), "sha256" (hex)
//	bucket "tensors": version 2: a bucket per tensor, named as the tensor,
//	    holding its little-endian float32 bytes under "data";
//	    version 1: the bytes under the tensor's name.
//
// Version 2 lets a tensor be added without rewriting the page that holds
// the one before it, so that Write can commit in small transactions.
const FormatVersion = 2

var (
	bucketMeta    = []byte("gencluster")
	bucketTensors = []byte("tensors")
	keyMeta       = []byte("meta")
	keySum        = []byte("sha256")
	keyData       = []byte("data")
)

// ErrNotCheckpoint marks a file that is not a gencluster checkpoint at all.
var ErrNotCheckpoint = errors.New("not a gencluster checkpoint")

// ErrCorrupt marks a checkpoint whose contents fail their checksum or shape.
var ErrCorrupt = errors.New("checkpoint is corrupt")

// ErrNonFinite marks a state Write refuses because a tensor holds a NaN or
// an infinity.
var ErrNonFinite = errors.New("a tensor holds NaN or Inf")

// Job is the training configuration a checkpoint belongs to.
type Job struct {
	Model      string  `json:"model"`
	Levels     int     `json:"levels,omitempty"` // 256 for grey levels; 0: the model's default
	Dataset    string  `json:"dataset"`
	Batch      int     `json:"batch"`
	TotalSteps int64   `json:"total_steps"`
	Seed       uint64  `json:"seed"`
	LR         float64 `json:"lr"`
}

// TensorInfo describes one stored tensor: its name (a model parameter name,
// prefixed by its group, e.g. "param/a.weight", "adam.m/a.weight") and shape.
type TensorInfo struct {
	Name  string `json:"name"`
	Shape []int  `json:"shape"`
}

// Meta is the JSON header of a checkpoint.
type Meta struct {
	Format    int          `json:"format"`
	Job       Job          `json:"job"`
	Step      int64        `json:"step"`       // training steps completed
	AdamSteps int64        `json:"adam_steps"` // optimizer updates applied
	Loss      float64      `json:"loss"`       // training loss of the last step
	Created   time.Time    `json:"created"`
	Tensors   []TensorInfo `json:"tensors"`
}

// State is a whole checkpoint: Meta plus the tensors' values in Meta.Tensors order.
type State struct {
	Meta Meta
	Data [][]float32
}

// Tensor returns the values of the tensor called name, or nil.
func (s *State) Tensor(name string) []float32 {
	for i, t := range s.Meta.Tensors {
		if t.Name == name {
			return s.Data[i]
		}
	}
	return nil
}

// Checksum is the hex SHA-256 of the meta JSON and every tensor's bytes.
func (s *State) Checksum() (string, error) {
	meta, err := json.Marshal(s.Meta)
	if err != nil {
		return "", fmt.Errorf("checkpoint: encode meta: %w", err)
	}
	return checksum(meta, s.encoded()), nil
}

func (s *State) encoded() [][]byte {
	out := make([][]byte, len(s.Data))
	for i, d := range s.Data {
		out[i] = encode(d)
	}
	return out
}

func checksum(meta []byte, tensors [][]byte) string {
	h := sha256.New()
	h.Write(meta)
	for _, t := range tensors {
		h.Write(t)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// encode returns d as little-endian bytes: on a little-endian host a view
// of d's own memory (no copy: bbolt copies what it stores when its
// transaction commits, and d does not change meanwhile), elsewhere a copy.
func encode(d []float32) []byte {
	if len(d) == 0 {
		return []byte{}
	}
	if binary.NativeEndian.Uint16([]byte{1, 0}) == 1 {
		return unsafe.Slice((*byte)(unsafe.Pointer(&d[0])), 4*len(d))
	}
	b := make([]byte, 4*len(d))
	for i, v := range d {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

func decodeTensor(b []byte) []float32 {
	d := make([]float32, len(b)/4)
	for i := range d {
		d[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return d
}

// FileName is the name of the checkpoint of step in a checkpoint directory.
func FileName(step int64) string { return fmt.Sprintf("ckpt-%010d.db", step) }

// Write stores s at path atomically: it builds a bbolt file beside path,
// fsyncs it, renames it over path and fsyncs the directory. It returns the
// checksum written.
//
// bbolt builds every value larger than a page in a heap buffer when it
// commits, so a transaction leaves about its values' size in garbage.
// Write commits the tensors in transactions of about txBytes each and
// collects that garbage after each one: a process writing a checkpoint
// peaks at its live heap plus one transaction, not plus the whole file
// (three times the model, with Adam's moments). The collections are short:
// the large live objects (images, tensors) hold no pointers.
func Write(path string, s *State) (string, error) {
	return write(path, s, 0, func() { runtime.GC() })
}

// txBytes is about how many tensor bytes one of Write's transactions
// commits (a larger tensor is a transaction of its own).
const txBytes = 1 << 20

// write is Write with bbolt pages of pageSize bytes (0: bbolt's default,
// the OS page size; tests use small pages for small files), calling
// collect after each transaction.
func write(path string, s *State, pageSize int, collect func()) (string, error) {
	if len(s.Data) != len(s.Meta.Tensors) {
		return "", fmt.Errorf("checkpoint %s: %d tensors described, %d given", path, len(s.Meta.Tensors), len(s.Data))
	}
	for i, t := range s.Meta.Tensors {
		n, ok := numel(t.Shape)
		if !ok {
			return "", fmt.Errorf("checkpoint %s: tensor %s has an impossible shape %v", path, t.Name, t.Shape)
		}
		if n != len(s.Data[i]) {
			return "", fmt.Errorf("checkpoint %s: tensor %s has %d values, shape %v needs %d", path, t.Name, len(s.Data[i]), t.Shape, n)
		}
		for j, v := range s.Data[i] {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return "", fmt.Errorf("checkpoint %s: %w: tensor %s holds %v at index %d", path, ErrNonFinite, t.Name, v, j)
			}
		}
	}
	s.Meta.Format = FormatVersion
	meta, err := json.Marshal(s.Meta)
	if err != nil {
		return "", fmt.Errorf("checkpoint %s: encode meta: %w", path, err)
	}
	tensors := s.encoded()
	sum := checksum(meta, tensors)

	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("checkpoint %s: create temp file: %w", path, err)
	}
	tmpName := tmp.Name()
	tmp.Close()
	ok := false
	defer func() {
		if !ok {
			os.Remove(tmpName)
		}
	}()
	// Map a large file big enough for its tensors from the start: a file
	// that outgrows its mapping is remapped, and before each remap bbolt
	// copies every value written so far to the heap (node.dereference),
	// which made a checkpoint cost several times its size in garbage.
	// bbolt rounds the mapping up to a power of two and grows the file to
	// it, so the margin covers only its own pages (a page or so per
	// tensor, the meta and freelist pages): a file that needs more is
	// remapped once, as before. Small files are left as they were.
	var size int
	for _, t := range tensors {
		size += len(t)
	}
	// Transactions are not synced one by one: the file is synced once,
	// before it is renamed into place (a crash before that leaves only a
	// temporary file).
	opts := &bolt.Options{Timeout: time.Second, PageSize: pageSize, NoSync: true}
	if size >= 1<<20 {
		opts.InitialMmapSize = size + 64<<10
	}
	db, err := bolt.Open(tmpName, 0o644, opts)
	if err != nil {
		return "", fmt.Errorf("checkpoint %s: open temp file: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		mb, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		if err := mb.Put(keyMeta, meta); err != nil {
			return err
		}
		if err := mb.Put(keySum, []byte(sum)); err != nil {
			return err
		}
		_, err = tx.CreateBucket(bucketTensors)
		return err
	})
	for i := 0; err == nil && i < len(tensors); {
		err = db.Update(func(tx *bolt.Tx) error {
			tb := tx.Bucket(bucketTensors)
			for n := 0; i < len(tensors) && (n == 0 || n+len(tensors[i]) <= txBytes); i++ {
				name := s.Meta.Tensors[i].Name
				sb, err := tb.CreateBucket([]byte(name))
				if err != nil {
					return fmt.Errorf("tensor %s: %w", name, err)
				}
				if err := sb.Put(keyData, tensors[i]); err != nil {
					return fmt.Errorf("tensor %s: %w", name, err)
				}
				n += len(tensors[i])
			}
			return nil
		})
		collect()
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = trimAndSync(tmpName)
	}
	if err != nil {
		return "", fmt.Errorf("checkpoint %s: write: %w", path, err)
	}
	if err := os.Rename(tmpName, path); err != nil {
		return "", fmt.Errorf("checkpoint %s: rename into place: %w", path, err)
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		serr := d.Sync()
		d.Close()
		if serr != nil {
			return "", fmt.Errorf("checkpoint %s: sync directory: %w", path, serr)
		}
	}
	return sum, nil
}

// trimAndSync cuts the bbolt file at path after its last page in use
// (bbolt grows a file in powers of two, and pages past the high water mark
// hold nothing: they would only be stored and sent around) and fsyncs it.
func trimAndSync(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	m0 := readMeta(f, 0)
	if !m0.ok {
		return errors.New("bbolt wrote no valid meta page")
	}
	m := currentMeta(f, m0)
	if fi, err := f.Stat(); err == nil && int64(m.pgid)*m.pageSize < fi.Size() {
		if err := f.Truncate(int64(m.pgid) * m.pageSize); err != nil {
			return err
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

// numel is the number of values of a tensor of shape, and false for a
// shape with a negative dimension or more values than 4 bytes each can
// address.
func numel(shape []int) (int, bool) {
	n := 1
	for _, d := range shape {
		if d < 0 {
			return 0, false
		}
		if d != 0 && n > math.MaxInt/4/d {
			return 0, false
		}
		n *= d
	}
	return n, true
}

// Read opens the checkpoint file at path read-only, checks its format and
// checksum and returns its state. Errors wrap ErrNotCheckpoint or ErrCorrupt
// where that is what they are.
func Read(path string) (*State, error) {
	st, _, err := read(path, true)
	return st, err
}

// Verify checks the checkpoint file at path as Read does, without decoding
// its tensors, and returns its meta and the checksum it records (which the
// check has found its contents to have).
func Verify(path string) (*Meta, string, error) {
	st, sum, err := read(path, false)
	if err != nil {
		return nil, "", err
	}
	return &st.Meta, sum, nil
}

// ReadFile is Read that also returns the checksum the file records (which
// Read has found its contents to have): one read of the file where Verify
// then Read, or Read then State.Checksum, would make two.
func ReadFile(path string) (*State, string, error) { return read(path, true) }

// read is ReadFile, and Verify when not decode (st.Data stays nil).
func read(path string, decode bool) (st *State, sum string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, "", fmt.Errorf("checkpoint %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err == nil && fi.IsDir() {
		err = errors.New("is a directory")
	}
	if err == nil {
		err = checkLayout(f, fi.Size())
	}
	f.Close()
	if err != nil {
		return nil, "", fmt.Errorf("checkpoint %s: %w", path, err)
	}
	// bbolt trusts the pages it maps: a damaged or truncated file can make
	// it index out of range or touch memory past the end of the file
	// (SIGBUS). checkLayout has refused the files it knows to do that; as a
	// second line, both become panics on this goroutine, recovered as errors.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			st, sum, err = nil, "", fmt.Errorf("checkpoint %s: %w: %v", path, ErrCorrupt, r)
		}
	}()
	db, err := bolt.Open(path, 0o444, &bolt.Options{ReadOnly: true, Timeout: 2 * time.Second})
	if err != nil {
		return nil, "", fmt.Errorf("checkpoint %s: %w: %w", path, ErrNotCheckpoint, err)
	}
	defer db.Close()
	st = &State{}
	err = db.View(func(tx *bolt.Tx) error {
		mb := tx.Bucket(bucketMeta)
		if mb == nil {
			return fmt.Errorf("%w: a bbolt file without the %q bucket", ErrNotCheckpoint, bucketMeta)
		}
		meta := mb.Get(keyMeta)
		if err := json.Unmarshal(meta, &st.Meta); err != nil {
			return fmt.Errorf("%w: meta: %w", ErrCorrupt, err)
		}
		if st.Meta.Format != FormatVersion && st.Meta.Format != 1 {
			return fmt.Errorf("format version %d, this build reads 1 to %d", st.Meta.Format, FormatVersion)
		}
		tb := tx.Bucket(bucketTensors)
		if tb == nil {
			return fmt.Errorf("%w: no tensors bucket", ErrCorrupt)
		}
		raw := make([][]byte, len(st.Meta.Tensors))
		for i, t := range st.Meta.Tensors {
			n, ok := numel(t.Shape)
			if !ok {
				return fmt.Errorf("%w: tensor %s has an impossible shape %v", ErrCorrupt, t.Name, t.Shape)
			}
			var v []byte
			if st.Meta.Format == 1 {
				v = tb.Get([]byte(t.Name))
			} else if sb := tb.Bucket([]byte(t.Name)); sb != nil {
				v = sb.Get(keyData)
			}
			if len(v) != 4*n {
				return fmt.Errorf("%w: tensor %s has %d bytes, shape %v needs %d", ErrCorrupt, t.Name, len(v), t.Shape, 4*n)
			}
			raw[i] = v
		}
		sum = string(mb.Get(keySum))
		if got := checksum(meta, raw); got != sum {
			rec := sum
			if len(rec) > 2*sha256.Size {
				rec = rec[:2*sha256.Size] + "..."
			}
			return fmt.Errorf("%w: checksum %s, recorded %q", ErrCorrupt, got, rec)
		}
		if decode {
			st.Data = make([][]float32, len(raw))
			for i, v := range raw {
				st.Data[i] = decodeTensor(v)
			}
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("checkpoint %s: %w", path, err)
	}
	return st, sum, nil
}

// CleanTemp removes from dir (not its subdirectories) the temp files
// ("*.tmp-*") that Writes interrupted by a crash left behind, and returns
// the paths it removed. Call it when no Write into dir is under way: it
// cannot tell a live Write's temp file from a dead one's.
func CleanTemp(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("checkpoint directory %s: clean temp files: %w", dir, err)
	}
	var removed []string
	var errs []error
	for _, e := range ents {
		if e.IsDir() || !strings.Contains(e.Name(), ".tmp-") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if err := os.Remove(p); err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("checkpoint directory %s: remove temp file: %w", dir, err))
			}
			continue
		}
		removed = append(removed, p)
	}
	return removed, errors.Join(errs...)
}

// List returns the checkpoint files in dir, newest step first.
func List(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("checkpoint directory %s: %w", dir, err)
	}
	var names []string
	for _, e := range ents {
		n := e.Name()
		if !e.IsDir() && strings.HasPrefix(n, "ckpt-") && strings.HasSuffix(n, ".db") {
			names = append(names, n)
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(names))) // zero-padded steps sort by name
	for i, n := range names {
		names[i] = filepath.Join(dir, n)
	}
	return names, nil
}

// Load reads a checkpoint file, or, given a directory, the newest checkpoint
// in it that reads back whole; skipped files are reported through skipped
// (which may be nil). It returns the state and the file it came from.
func Load(path string, skipped func(file string, err error)) (*State, string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, "", fmt.Errorf("checkpoint %s: %w", path, err)
	}
	if !fi.IsDir() {
		st, err := Read(path)
		return st, path, err
	}
	files, err := List(path)
	if err != nil {
		return nil, "", err
	}
	if len(files) == 0 {
		return nil, "", fmt.Errorf("checkpoint directory %s: no ckpt-*.db files", path)
	}
	var errs []error
	for _, f := range files {
		st, err := Read(f)
		if err == nil {
			return st, f, nil
		}
		errs = append(errs, err)
		if skipped != nil {
			skipped(f, err)
		}
	}
	return nil, "", fmt.Errorf("checkpoint directory %s: no good checkpoint among %d: %w", path, len(files), errors.Join(errs...))
}

// Prune removes all but the newest keep checkpoints in dir (keep < 1 keeps all).
func Prune(dir string, keep int) error {
	if keep < 1 {
		return nil
	}
	files, err := List(dir)
	if err != nil {
		return err
	}
	for _, f := range files[min(keep, len(files)):] {
		if err := os.Remove(f); err != nil {
			return fmt.Errorf("checkpoint prune: %w", err)
		}
	}
	return nil
}
