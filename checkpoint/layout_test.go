package checkpoint

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// wide is a checkpoint of n tensors of size values but the first, ten
// times bigger: with enough of them its tensors bucket needs branch pages
// (a hundred of a page's quarter or more: each is then a bucket of its
// own, a small header in the tensors bucket), and the first one overflow
// pages.
func wide(n, size int) *State {
	s := &State{Meta: Meta{Step: 7, Created: time.Unix(1700000000, 0).UTC()}}
	for i := range n {
		size := size
		if i == 0 {
			size *= 10
		}
		d := make([]float32, size)
		for j := range d {
			d[j] = float32(i) + float32(j)/1000
		}
		s.Meta.Tensors = append(s.Meta.Tensors, TensorInfo{Name: fmt.Sprintf("param/t%03d", i), Shape: []int{size}})
		s.Data = append(s.Data, d)
	}
	return s
}

// pages returns the bbolt pages of the file b by type: page id by flags.
func pages(t *testing.T, b []byte) (ps int, byFlags map[uint16][]int) {
	t.Helper()
	m := readMeta(bytes.NewReader(b), 0)
	if !m.ok {
		t.Fatal("no valid meta page")
	}
	ps = int(m.pageSize)
	byFlags = map[uint16][]int{}
	for id := 2; (id+1)*ps <= len(b); id++ {
		p := b[id*ps:]
		if binary.NativeEndian.Uint64(p) != uint64(id) {
			continue
		}
		f := binary.NativeEndian.Uint16(p[8:])
		byFlags[f] = append(byFlags[f], id)
		id += int(binary.NativeEndian.Uint32(p[12:]))
	}
	return ps, byFlags
}

func writeWide(t *testing.T) (string, []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), FileName(7))
	if _, err := Write(path, wide(120, 300)); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, b
}

func TestReadRefusesDamagedTree(t *testing.T) {
	path, good := writeWide(t)
	if _, err := Read(path); err != nil {
		t.Fatal(err)
	}
	ps, byFlags := pages(t, good)
	if len(byFlags[branchPage]) == 0 || len(byFlags[leafPage]) < 2 {
		t.Fatalf("test checkpoint has no branch page: %v", byFlags)
	}
	br := byFlags[branchPage][0] * ps
	leaf := byFlags[leafPage][len(byFlags[leafPage])-1] * ps
	ne := binary.NativeEndian
	cases := map[string]func(b []byte){
		// Without checkLayout this one kills the process (fatal error:
		// stack overflow in bbolt's Cursor.search).
		"branch points at itself": func(b []byte) { copy(b[br+pageHeaderSize+8:], b[br:br+8]) },
		"branch points past the high water mark": func(b []byte) {
			ne.PutUint64(b[br+pageHeaderSize+8:], 1<<40)
		},
		"branch points at a meta page": func(b []byte) { ne.PutUint64(b[br+pageHeaderSize+8:], 0) },
		"branch points twice at a page": func(b []byte) {
			copy(b[br+pageHeaderSize+8:], b[br+pageHeaderSize+elementSize+8:br+pageHeaderSize+elementSize+16])
		},
		"empty branch":             func(b []byte) { ne.PutUint16(b[br+10:], 0) },
		"branch key past the page": func(b []byte) { ne.PutUint32(b[br+pageHeaderSize:], 1<<20) },
		"leaf value past the page": func(b []byte) { ne.PutUint32(b[leaf+pageHeaderSize+12:], 1<<30) },
		"leaf count past the page": func(b []byte) { ne.PutUint16(b[leaf+10:], 0xffff) },
		"page type unknown":        func(b []byte) { ne.PutUint16(b[leaf+8:], 0x80) },
		"page calls itself other":  func(b []byte) { ne.PutUint64(b[leaf:], 3) },
		"overflow past the file":   func(b []byte) { ne.PutUint32(b[leaf+12:], 1<<20) },
	}
	for name, damage := range cases {
		b := bytes.Clone(good)
		damage(b)
		p := filepath.Join(t.TempDir(), "damaged.db")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Read(p); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: read with error %v", name, err)
		}
	}
}

// TestLayoutAcceptsBboltFiles checks checkLayout against files bbolt wrote
// over many transactions: nested, inline and deleted buckets, values
// bigger than a page, keys deleted and rewritten.
func TestLayoutAcceptsBboltFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "many.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	for tx := range 30 {
		err := db.Update(func(tx2 *bolt.Tx) error {
			top, err := tx2.CreateBucketIfNotExists([]byte(fmt.Sprintf("top%d", tx%4)))
			if err != nil {
				return err
			}
			inner, err := top.CreateBucketIfNotExists([]byte("inner"))
			if err != nil {
				return err
			}
			if _, err := inner.CreateBucketIfNotExists([]byte("tiny")); err != nil { // stays inline
				return err
			}
			for k := range 40 {
				v := bytes.Repeat([]byte{byte(tx + k)}, 100+(tx*k*37)%9000)
				if err := inner.Put([]byte(fmt.Sprintf("k%03d", (k*7+tx)%60)), v); err != nil {
					return err
				}
			}
			if tx%5 == 4 {
				if err := tx2.DeleteBucket([]byte(fmt.Sprintf("top%d", (tx+1)%4))); err != nil && !errors.Is(err, bolt.ErrBucketNotFound) {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	if err := checkLayout(f, fi.Size()); err != nil {
		t.Fatalf("a file bbolt wrote refused: %v", err)
	}

	// And a checkpoint of many tensors, some several pages long.
	p := filepath.Join(t.TempDir(), FileName(7))
	s := wide(300, 300)
	s.Data[5] = make([]float32, 50000)
	s.Meta.Tensors[5].Shape = []int{100, 500}
	if _, err := Write(p, s); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(p); err != nil {
		t.Fatal(err)
	}
}

// FuzzRead: Read never panics or crashes on any file. Its inputs are whole files (tens of KiB), which the fuzzer
// minimizes slowly: run it with -fuzzminimizetime 500x, as .ci/run does.
func FuzzRead(f *testing.F) {
	// Seeds: checkpoints as Write makes them, one with branch pages, with
	// 1 KiB pages to keep the inputs small; each whole, truncated, and with
	// a byte flipped in each page.
	dir := f.TempDir()
	for i, s := range []*State{sample(3, 0.5), wide(8, 40)} {
		p := filepath.Join(dir, fmt.Sprintf("seed%d.db", i))
		if _, err := write(p, s, 1024, func() {}); err != nil {
			f.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		// Write cuts the file after its last page in use.
		m := currentMeta(bytes.NewReader(b), readMeta(bytes.NewReader(b), 0))
		if int64(len(b)) != int64(m.pgid)*m.pageSize {
			f.Fatalf("%s: %d bytes, %d pages of %d in use", p, len(b), m.pgid, m.pageSize)
		}
		if _, err := Read(p); err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2])
		f.Add(b[:len(b)-1])
		for at := 20; at < len(b); at += 1024 {
			c := bytes.Clone(b)
			c[at] ^= 0x5a
			f.Add(c)
		}
	}
	f.Add([]byte("not a checkpoint"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "fuzz.db")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		st, err := Read(p)
		m, sum, verr := Verify(p)
		if (err == nil) != (verr == nil) {
			t.Fatalf("Read: %v, Verify: %v", err, verr)
		}
		if err != nil {
			if st != nil || m != nil || sum != "" {
				t.Fatalf("error %v with a result", err)
			}
			return
		}
		if got, err := st.Checksum(); err != nil || got != sum || m.Step != st.Meta.Step {
			t.Fatalf("read a state whose checksum is %s (%v), recorded %s", got, err, sum)
		}
	})
}
