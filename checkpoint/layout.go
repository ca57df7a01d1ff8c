package checkpoint

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
)

// bbolt trusts its file: only the meta pages carry a checksum, so one
// damaged byte in a branch page can point the page at itself, and a lookup
// then recurses until the Go runtime dies of a stack overflow (fatal, not a
// recoverable panic); a damaged element can send a read past the end of
// the file. checkLayout walks the tree bbolt will walk, before bbolt is
// let at the file, and refuses such a file.
//
// The constants below are bbolt's on-disk format, version 2 (stable since
// boltdb): a page is a 16-byte header (id u64, flags u16, count u16,
// overflow u32) and count 16-byte elements; a branch element is (pos u32,
// ksize u32, pgid u64), a leaf element (flags u32, pos u32, ksize u32,
// vsize u32), pos counting from the element itself; a bucket's value
// starts with (root pgid u64, sequence u64), and a bucket whose root is 0
// keeps its only (leaf) page inline after that header. Integers are in the
// machine's byte order.
const (
	boltMagic        = 0xED0CDAED
	boltVersion      = 2
	pageHeaderSize   = 16
	elementSize      = 16
	bucketHeaderSize = 16
	metaSize         = 64 // magic, version, page size, flags, root bucket, freelist, pgid, txid, checksum
	metaSumOffset    = 56 // the checksum is the FNV-1a 64 of the meta's bytes before it
	branchPage       = 0x01
	leafPage         = 0x02
	bucketFlag       = 0x01
	// maxLayoutDepth bounds the nesting of pages and buckets; a B+tree of
	// any file size this package writes is a handful of levels deep.
	maxLayoutDepth = 64
	minPageSize    = 512
	maxPageSize    = 1 << 24
)

type boltMeta struct {
	ok       bool
	pageSize int64
	root     uint64 // root bucket's page
	pgid     uint64 // high water mark: every page in use is below it
	txid     uint64
}

func readMeta(r io.ReaderAt, off int64) boltMeta {
	var b [pageHeaderSize + metaSize]byte
	if _, err := r.ReadAt(b[:], off); err != nil {
		return boltMeta{}
	}
	m := b[pageHeaderSize:]
	ne := binary.NativeEndian
	if ne.Uint32(m[0:]) != boltMagic || ne.Uint32(m[4:]) != boltVersion {
		return boltMeta{}
	}
	h := fnv.New64a()
	h.Write(m[:metaSumOffset])
	if h.Sum64() != ne.Uint64(m[metaSumOffset:]) {
		return boltMeta{}
	}
	return boltMeta{
		ok:       true,
		pageSize: int64(ne.Uint32(m[8:])),
		root:     ne.Uint64(m[16:]),
		pgid:     ne.Uint64(m[40:]),
		txid:     ne.Uint64(m[48:]),
	}
}

// currentMeta returns the meta page bbolt uses, given the first one, m0
// (valid): the valid one of the two with the higher transaction id.
func currentMeta(r io.ReaderAt, m0 boltMeta) boltMeta {
	if m1 := readMeta(r, m0.pageSize); m1.ok && m1.txid > m0.txid {
		return m1
	}
	return m0
}

// checkLayout checks the bbolt file r of size bytes as described above.
// Its errors wrap ErrNotCheckpoint (no valid meta page) or ErrCorrupt.
// It is stricter than bbolt in one way: bbolt can open a file whose first
// meta page is damaged from the second; a checkpoint file's data live in
// the transaction the first one records, so checkLayout refuses it.
func checkLayout(r io.ReaderAt, size int64) error {
	m0 := readMeta(r, 0)
	if !m0.ok {
		return fmt.Errorf("%w: no valid bbolt meta page", ErrNotCheckpoint)
	}
	ps := m0.pageSize // bbolt takes the page size from the first meta page
	if ps < minPageSize || ps > maxPageSize || ps&(ps-1) != 0 {
		return fmt.Errorf("%w: bbolt page size %d", ErrCorrupt, ps)
	}
	if size < 2*ps {
		return fmt.Errorf("%w: %d bytes, shorter than the two bbolt meta pages", ErrCorrupt, size)
	}
	m := currentMeta(r, m0)
	l := &layout{r: r, size: size, ps: ps, pgid: m.pgid, seen: map[uint64]bool{}}
	if err := l.page(m.root, 0); err != nil {
		return fmt.Errorf("%w: bbolt tree: %w", ErrCorrupt, err)
	}
	return nil
}

type layout struct {
	r    io.ReaderAt
	size int64
	ps   int64
	pgid uint64
	seen map[uint64]bool
}

// page checks the branch or leaf page id and everything below it.
func (l *layout) page(id uint64, depth int) error {
	if depth > maxLayoutDepth {
		return fmt.Errorf("pages nested more than %d deep", maxLayoutDepth)
	}
	if id < 2 || id >= l.pgid || id >= uint64(l.size/l.ps) {
		return fmt.Errorf("page %d out of range (high water mark %d, file %d pages)", id, l.pgid, l.size/l.ps)
	}
	if l.seen[id] {
		return fmt.Errorf("page %d referenced twice", id)
	}
	l.seen[id] = true
	off := int64(id) * l.ps
	var h [pageHeaderSize]byte
	if _, err := l.r.ReadAt(h[:], off); err != nil {
		return fmt.Errorf("page %d: %w", id, err)
	}
	ne := binary.NativeEndian
	if got := ne.Uint64(h[0:]); got != id {
		return fmt.Errorf("page %d calls itself %d", id, got)
	}
	overflow := uint64(ne.Uint32(h[12:]))
	if id+overflow >= l.pgid {
		return fmt.Errorf("page %d with %d overflow pages runs past the high water mark %d", id, overflow, l.pgid)
	}
	span := int64(overflow+1) * l.ps
	if off+span > l.size {
		return fmt.Errorf("page %d (%d bytes) runs past the end of the file", id, span)
	}
	read := func(pos, n int64) ([]byte, error) {
		b := make([]byte, n)
		if _, err := l.r.ReadAt(b, off+pos); err != nil {
			return nil, fmt.Errorf("page %d: %w", id, err)
		}
		return b, nil
	}
	return l.node(fmt.Sprintf("page %d", id), h[:], span, read, false, depth)
}

// node checks the elements of a page with header h, span bytes long
// (header included), whose bytes read returns.
func (l *layout) node(what string, h []byte, span int64, read func(pos, n int64) ([]byte, error), inline bool, depth int) error {
	if depth > maxLayoutDepth {
		return fmt.Errorf("%s: pages nested more than %d deep", what, maxLayoutDepth)
	}
	ne := binary.NativeEndian
	flags, count := ne.Uint16(h[8:]), int64(ne.Uint16(h[10:]))
	switch {
	case flags == branchPage && inline:
		return fmt.Errorf("%s: an inline bucket with a branch page", what)
	case flags == branchPage && count == 0:
		return fmt.Errorf("%s: an empty branch page", what)
	case flags != branchPage && flags != leafPage:
		return fmt.Errorf("%s: page type %#x where a branch or leaf page belongs", what, flags)
	}
	if pageHeaderSize+count*elementSize > span {
		return fmt.Errorf("%s: %d elements overrun its %d bytes", what, count, span)
	}
	elems, err := read(pageHeaderSize, count*elementSize)
	if err != nil {
		return err
	}
	for i := range count {
		e := elems[i*elementSize:]
		at := pageHeaderSize + i*elementSize // the element's offset in the page
		if flags == branchPage {
			pos, ksize := int64(ne.Uint32(e[0:])), int64(ne.Uint32(e[4:]))
			if at+pos+ksize > span {
				return fmt.Errorf("%s: key %d overruns the page", what, i)
			}
			if err := l.page(ne.Uint64(e[8:]), depth+1); err != nil {
				return err
			}
			continue
		}
		eflags, pos, ksize, vsize := ne.Uint32(e[0:]), int64(ne.Uint32(e[4:])), int64(ne.Uint32(e[8:])), int64(ne.Uint32(e[12:]))
		vat := at + pos + ksize // the value's offset in the page
		if vat+vsize > span {
			return fmt.Errorf("%s: element %d overruns the page", what, i)
		}
		if eflags&bucketFlag == 0 {
			continue
		}
		if vsize < bucketHeaderSize {
			return fmt.Errorf("%s: bucket %d has a %d-byte header", what, i, vsize)
		}
		bh, err := read(vat, bucketHeaderSize)
		if err != nil {
			return err
		}
		if root := ne.Uint64(bh); root != 0 {
			if err := l.page(root, depth+1); err != nil {
				return err
			}
			continue
		}
		n := vsize - bucketHeaderSize
		if n < pageHeaderSize || n > l.ps {
			return fmt.Errorf("%s: inline bucket %d of %d bytes", what, i, n)
		}
		v, err := read(vat+bucketHeaderSize, n)
		if err != nil {
			return err
		}
		sub := func(pos, n int64) ([]byte, error) { return v[pos : pos+n], nil } // node checks bounds first
		if err := l.node(fmt.Sprintf("%s: inline bucket %d", what, i), v, n, sub, true, depth+1); err != nil {
			return err
		}
	}
	return nil
}
