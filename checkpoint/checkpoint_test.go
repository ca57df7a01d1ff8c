package checkpoint

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func sample(step int64, fill float32) *State {
	d := make([]float32, 300)
	for i := range d {
		d[i] = fill
	}
	return &State{
		Meta: Meta{
			Job:     Job{Model: "vae", Dataset: "mnist", Batch: 8, TotalSteps: 10, Seed: 3, LR: 1e-3},
			Step:    step,
			Created: time.Unix(1700000000, 0).UTC(),
			Tensors: []TensorInfo{{Name: "param/w", Shape: []int{10, 30}}, {Name: "param/b", Shape: []int{2}}},
		},
		Data: [][]float32{d, {1, -2}},
	}
}

func TestWriteReadRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName(5))
	sum, err := Write(path, sample(5, 1.5))
	if err != nil {
		t.Fatal(err)
	}
	st, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Meta.Step != 5 || st.Meta.Job.Model != "vae" || st.Tensor("param/b")[1] != -2 || st.Tensor("param/w")[299] != 1.5 {
		t.Fatalf("read back %+v", st.Meta)
	}
	if got, _ := st.Checksum(); got != sum {
		t.Fatalf("checksum %s, written %s", got, sum)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("temp files left behind: %v", ents)
	}
}

func TestWriteRejectsBadShapes(t *testing.T) {
	s := sample(1, 1)
	s.Data[1] = []float32{1}
	if _, err := Write(filepath.Join(t.TempDir(), "x.db"), s); err == nil {
		t.Fatal("tensor with wrong length written")
	}
}

// flip changes the first float32 of value v in the file.
func flip(t *testing.T, path string, v float32) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var pat [4]byte
	binary.LittleEndian.PutUint32(pat[:], math.Float32bits(v))
	i := bytes.Index(b, pat[:])
	if i < 0 {
		t.Fatal("pattern not found in checkpoint file")
	}
	b[i] ^= 0x40
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptionDetected(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName(1))
	if _, err := Write(path, sample(1, 1234.5)); err != nil {
		t.Fatal(err)
	}
	flip(t, path, 1234.5)
	_, err := Read(path)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("corrupted tensor read with error %v", err)
	}
}

func TestForeignAndTruncatedFiles(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.db")
	if _, err := Write(good, sample(1, 2)); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(good)
	cases := map[string][]byte{
		"text":      []byte("hello, I am not a database\n"),
		"empty":     {},
		"truncated": b[:len(b)/3],
		"zeros":     make([]byte, 64<<10),
	}
	for name, data := range cases {
		p := filepath.Join(dir, name)
		os.WriteFile(p, data, 0o644)
		if _, err := Read(p); err == nil {
			t.Errorf("%s: read without error", name)
		} else if !bytes.Contains([]byte(err.Error()), []byte(p)) {
			t.Errorf("%s: error %q does not name the file", name, err)
		}
	}
	if _, err := Read(filepath.Join(dir, "missing.db")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestLoadDirectoryFallsBackToGoodOne(t *testing.T) {
	dir := t.TempDir()
	for _, s := range []int64{10, 20, 30} {
		if _, err := Write(filepath.Join(dir, FileName(s)), sample(s, float32(1000+s))); err != nil {
			t.Fatal(err)
		}
	}
	flip(t, filepath.Join(dir, FileName(30)), 1030)
	var skipped []string
	st, file, err := Load(dir, func(f string, err error) { skipped = append(skipped, f) })
	if err != nil {
		t.Fatal(err)
	}
	if st.Meta.Step != 20 || file != filepath.Join(dir, FileName(20)) || len(skipped) != 1 {
		t.Fatalf("loaded step %d from %s, skipped %v", st.Meta.Step, file, skipped)
	}
	if err := Prune(dir, 1); err != nil {
		t.Fatal(err)
	}
	files, _ := List(dir)
	if len(files) != 1 || filepath.Base(files[0]) != FileName(30) {
		t.Fatalf("after prune: %v", files)
	}
	if _, _, err := Load(dir, nil); err == nil {
		t.Fatal("directory with only a corrupt checkpoint loaded")
	}
	if _, _, err := Load(t.TempDir(), nil); err == nil {
		t.Fatal("empty directory loaded")
	}
}

func TestWriteRefusesNonFinite(t *testing.T) {
	for name, v := range map[string]float32{"NaN": float32(math.NaN()), "+Inf": float32(math.Inf(1)), "-Inf": float32(math.Inf(-1))} {
		dir := t.TempDir()
		s := sample(1, 1)
		s.Data[0][17] = v
		s.Data[0][40] = v
		_, err := Write(filepath.Join(dir, FileName(1)), s)
		if !errors.Is(err, ErrNonFinite) {
			t.Fatalf("%s: written with error %v", name, err)
		}
		if msg := err.Error(); !strings.Contains(msg, "param/w") || !strings.Contains(msg, "index 17") {
			t.Errorf("%s: error %q does not name the tensor and the first bad index", name, msg)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("%s: files left behind: %v", name, ents)
		}
	}
}

func TestWriteRefusesImpossibleShapes(t *testing.T) {
	for _, shape := range [][]int{{-1, -2}, {1 << 40, 1 << 40}, {math.MaxInt / 2, 0, 4}} {
		s := sample(1, 1)
		s.Meta.Tensors[1].Shape = shape
		if _, err := Write(filepath.Join(t.TempDir(), "x.db"), s); err == nil {
			t.Errorf("shape %v written", shape)
		}
	}
}

func TestVerifyAndReadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName(2))
	want, err := Write(path, sample(2, 3))
	if err != nil {
		t.Fatal(err)
	}
	m, sum, err := Verify(path)
	if err != nil {
		t.Fatal(err)
	}
	if sum != want || m.Step != 2 || len(m.Tensors) != 2 {
		t.Fatalf("Verify: meta %+v, checksum %s, written %s", m, sum, want)
	}
	st, sum2, err := ReadFile(path)
	if err != nil || sum2 != want || st.Meta.Step != 2 || st.Tensor("param/b")[1] != -2 {
		t.Fatalf("ReadFile: %v, checksum %s, written %s", err, sum2, want)
	}
	flip(t, path, 3)
	if _, _, err := ReadFile(path); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("ReadFile of a damaged file: %v", err)
	}
	if _, _, err := Verify(path); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Verify of a damaged file: %v", err)
	}
	if _, _, err := Verify(filepath.Dir(path)); err == nil {
		t.Fatal("a directory verified as a checkpoint")
	}
}

func TestCleanTemp(t *testing.T) {
	dir := t.TempDir()
	keep := filepath.Join(dir, FileName(1))
	if _, err := Write(keep, sample(1, 1)); err != nil {
		t.Fatal(err)
	}
	temps := []string{
		filepath.Join(dir, FileName(2)+".tmp-123456"),
		filepath.Join(dir, "other.tmp-"),
	}
	for _, p := range temps {
		if err := os.WriteFile(p, []byte("half a checkpoint"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sub := filepath.Join(dir, "job.tmp-dir") // a directory is not a temp file, nor searched
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sub, "x.tmp-1"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	removed, err := CleanTemp(dir)
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(removed)
	sort.Strings(temps)
	if !slices.Equal(removed, temps) {
		t.Fatalf("removed %v, want %v", removed, temps)
	}
	for _, p := range []string{keep, sub, filepath.Join(sub, "x.tmp-1")} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	if _, err := CleanTemp(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing directory: %v", err)
	}
}

// Writing a large checkpoint allocates about its size once (bbolt's page
// buffer), at most twice, not several times: the tensors are not copied to bytes, and the
// file is mapped large enough from the start, so bbolt never copies what
// it has written to the heap to remap it. (Before: about six times.)
func TestWriteGarbage(t *testing.T) {
	const n = 1 << 20 // 4 MiB of float32 in three tensors
	st := &State{
		Meta: Meta{Job: Job{Model: "vae", Dataset: "mnist", Batch: 8, TotalSteps: 10, Seed: 3, LR: 1e-3}, Step: 1,
			Tensors: []TensorInfo{{Name: "param/a", Shape: []int{n / 2}}, {Name: "param/b", Shape: []int{n / 4}}, {Name: "param/c", Shape: []int{n / 4}}}},
		Data: [][]float32{make([]float32, n/2), make([]float32, n/4), make([]float32, n/4)},
	}
	for i := range st.Data {
		for j := range st.Data[i] {
			st.Data[i][j] = float32(j%97) * 0.5
		}
	}
	path := filepath.Join(t.TempDir(), "big.db")
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, err := Write(path, st); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if alloc, limit := after.TotalAlloc-before.TotalAlloc, uint64(2*4*n); alloc > limit {
		t.Errorf("writing %d MiB of tensors allocated %.1f MiB, more than %.1f", 4*n>>20, float64(alloc)/(1<<20), float64(limit)/(1<<20))
	} else {
		t.Logf("writing %d MiB of tensors allocated %.1f MiB", 4*n>>20, float64(alloc)/(1<<20))
	}
	readBack(t, path, st)
	if fi, err := os.Stat(path); err != nil || fi.Size() > 8<<20 {
		t.Fatalf("file of %v bytes (%v) for 4 MiB of tensors", fi.Size(), err)
	}
}

// Write commits the tensors in transactions of about txBytes and collects
// after each, so the garbage bbolt leaves (a heap copy of each value) is at
// most about one transaction's worth at a time, not the file's: 6 MiB of
// tensors, none larger than 2 MiB, never leave more than 3 MiB of heap
// objects above what was there before (one transaction of 6 MiB did).
func TestWriteTransactions(t *testing.T) {
	const mib = 1 << 18 // float32 values in a MiB
	sizes := []int{2 * mib, mib / 2, mib / 2, mib, mib / 4, mib / 4, mib / 2, mib}
	st := &State{Meta: Meta{Job: Job{Model: "vae", Dataset: "mnist", Batch: 8, TotalSteps: 10, Seed: 3, LR: 1e-3}, Step: 1}}
	for i, n := range sizes {
		st.Meta.Tensors = append(st.Meta.Tensors, TensorInfo{Name: "param/t" + string(rune('a'+i)), Shape: []int{n}})
		d := make([]float32, n)
		for j := range d {
			d[j] = float32(j%89) * 0.25
		}
		st.Data = append(st.Data, d)
	}
	heap := func() uint64 {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	runtime.GC()
	base := heap()
	var txs int
	var worst uint64
	path := filepath.Join(t.TempDir(), "tx.db")
	if _, err := write(path, st, 0, func() {
		txs++
		if h := heap(); h > base && h-base > worst {
			worst = h - base
		}
		runtime.GC()
	}); err != nil {
		t.Fatal(err)
	}
	// 2 | 0.5+0.5 | 1 | 0.25+0.25+0.5 | 1 (MiB): five transactions.
	if txs != 5 {
		t.Errorf("%d transactions, want 5", txs)
	}
	if worst > 3<<20 {
		t.Errorf("a transaction left %.1f MiB of heap, more than 3", float64(worst)/(1<<20))
	}
	t.Logf("%d transactions, at most %.1f MiB of heap above the start", txs, float64(worst)/(1<<20))
	readBack(t, path, st)
}

// A checkpoint of the first format (every tensor's bytes under its name
// in the tensors bucket, as builds before format 2 wrote them) is still
// read, with the same checksum; a format this build does not know is
// refused, naming it.
func TestReadFormat1(t *testing.T) {
	st := sample(42, 0.25)
	old := func(format int) string {
		st.Meta.Format = format
		meta, err := json.Marshal(st.Meta)
		if err != nil {
			t.Fatal(err)
		}
		sum := checksum(meta, st.encoded())
		p := filepath.Join(t.TempDir(), FileName(42))
		db, err := bolt.Open(p, 0o644, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = db.Update(func(tx *bolt.Tx) error {
			mb, _ := tx.CreateBucket(bucketMeta)
			mb.Put(keyMeta, meta)
			mb.Put(keySum, []byte(sum))
			tb, _ := tx.CreateBucket(bucketTensors)
			for i, ti := range st.Meta.Tensors {
				if err := tb.Put([]byte(ti.Name), encode(st.Data[i])); err != nil {
					return err
				}
			}
			return nil
		})
		if cerr := db.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	got, err := Read(old(1))
	if err != nil {
		t.Fatal(err)
	}
	if got.Meta.Step != 42 || got.Meta.Format != 1 || !slices.Equal(got.Data[0], st.Data[0]) {
		t.Errorf("format 1 read back as format %d, step %d", got.Meta.Format, got.Meta.Step)
	}
	if _, err := Read(old(7)); err == nil || !strings.Contains(err.Error(), "format version 7") {
		t.Errorf("format 7: %v", err)
	}
}

// readBack reads the checkpoint at path and fails unless its tensors are
// st's.
func readBack(t *testing.T, path string, st *State) {
	t.Helper()
	got, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range st.Data {
		if !slices.Equal(got.Data[i], st.Data[i]) {
			t.Fatalf("tensor %d read back differs", i)
		}
	}
}
