// Package dataset reads the image data sets gencluster trains on: the MNIST
// set built into the binary and any directory of IDX files in the MNIST
// layout, and their labels where the set has them. Images are kept as bytes
// and turned into float32 pixels on demand: thresholded into {0,1} (byte >
// 127 is 1, the reference scripts' binarisation) or scaled to grey levels
// byte/255 in [0,1].
package dataset

import (
	"bufio"
	"compress/gzip"
	_ "embed" // the built-in MNIST
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Split names a part of a data set.
type Split string

// The splits of an MNIST-layout data set.
const (
	Train Split = "train"
	Test  Split = "test"
)

// ParseSplit turns a --split value into a Split.
func ParseSplit(s string) (Split, error) {
	switch Split(s) {
	case Train, Test:
		return Split(s), nil
	}
	return "", fmt.Errorf("unknown split %q (known: train, test)", s)
}

// fileName is the IDX image file of a split, without a .gz suffix.
func (s Split) fileName() string {
	if s == Test {
		return "t10k-images-idx3-ubyte"
	}
	return "train-images-idx3-ubyte"
}

// labelFileName is the IDX label file of a split, without a .gz suffix.
func (s Split) labelFileName() string {
	if s == Test {
		return "t10k-labels-idx1-ubyte"
	}
	return "train-labels-idx1-ubyte"
}

// Images is a set of N grey-scale images of Rows x Cols bytes, stored one
// after the other in row-major order.
type Images struct {
	N, Rows, Cols int
	Pix           []byte
	Source        string // where they were read from, for messages
}

// Dim is the number of pixels of one image.
func (s *Images) Dim() int { return s.Rows * s.Cols }

// Binary writes image i thresholded to {0,1} (byte > 127 is 1) into dst,
// which must hold Dim() values.
func (s *Images) Binary(i int, dst []float32) {
	src := s.Pix[i*s.Dim() : (i+1)*s.Dim()]
	dst = dst[:len(src)]
	for j, v := range src {
		dst[j] = float32(v >> 7) // 1 exactly when v > 127, without a branch per pixel
	}
}

// Grey writes image i as grey levels byte/255 (float32) into dst, which
// must hold Dim() values.
func (s *Images) Grey(i int, dst []float32) {
	src := s.Pix[i*s.Dim() : (i+1)*s.Dim()]
	dst = dst[:len(src)]
	for j, v := range src {
		dst[j] = float32(v) / 255
	}
}

// Pixels writes image i into dst as a model takes it: grey levels (Grey)
// when grey is set, thresholded (Binary) otherwise.
func (s *Images) Pixels(i int, dst []float32, grey bool) {
	if grey {
		s.Grey(i, dst)
	} else {
		s.Binary(i, dst)
	}
}

// CheckShape returns an error unless the images are rows x cols.
func CheckShape(s *Images, rows, cols int) error {
	if s.Rows != rows || s.Cols != cols {
		return fmt.Errorf("data set %s has %dx%d images; the model needs %dx%d", s.Source, s.Rows, s.Cols, rows, cols)
	}
	return nil
}

// The built-in MNIST images, gzipped, in the binary's read-only data.
var (
	//go:embed mnistdata/train-images-idx3-ubyte.gz
	builtinTrain string
	//go:embed mnistdata/t10k-images-idx3-ubyte.gz
	builtinTest string
	//go:embed mnistdata/train-labels-idx1-ubyte.gz
	builtinTrainLabels string
	//go:embed mnistdata/t10k-labels-idx1-ubyte.gz
	builtinTestLabels string
)

// embedded reads a built-in file; closing it hands its pages back to the
// OS (see release): they were read once, and would otherwise stay in the
// process's resident set for the rest of its life, 10 MB of it for the
// training images, on top of the decompressed set.
type embedded struct {
	*strings.Reader
	data string
}

func (e embedded) Close() error {
	release(e.data)
	return nil
}

// MNIST is the name of the built-in data set.
const MNIST = "mnist"

// Open reads a split of the data set named by spec: "mnist" (built into
// the binary) or "idx:DIR" (a directory of MNIST-layout IDX files, gzipped
// or not).
func Open(spec string, split Split) (*Images, error) {
	f, name, err := openFile(spec, split)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readIDX(f, name)
}

// Count returns the number of images in a split of the data set named by
// spec, reading only the file's header.
func Count(spec string, split Split) (int, error) {
	f, name, err := openFile(spec, split)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	src, done, err := idxStream(f, name)
	if err != nil {
		return 0, err
	}
	defer done()
	n, _, _, err := readIDXHeader(src, name)
	return int(n), err
}

// Labels reads the labels (one byte, 0-9 for MNIST, per image) of a split
// of the data set named by spec. The built-in MNIST has them; a directory
// has them when it holds the split's IDX label file
// (train-labels-idx1-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]), and
// otherwise the error says so (errors.Is fs.ErrNotExist).
func Labels(spec string, split Split) ([]byte, error) {
	f, name, err := openAny(spec, split, true)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	src, done, err := idxStream(f, name)
	if err != nil {
		return nil, err
	}
	defer done()
	var hdr [8]byte
	if _, err := io.ReadFull(src, hdr[:]); err != nil {
		return nil, fmt.Errorf("labels %s: truncated IDX header: %w", name, err)
	}
	if magic := binary.BigEndian.Uint32(hdr[0:]); magic != idxLabelMagic {
		return nil, fmt.Errorf("labels %s: magic number %#08x is not an IDX label file (want %#08x)", name, magic, idxLabelMagic)
	}
	n := int64(binary.BigEndian.Uint32(hdr[4:]))
	if n < 1 || n > maxBytes {
		return nil, fmt.Errorf("labels %s: header says %d labels", name, n)
	}
	labels := make([]byte, n)
	if got, err := io.ReadFull(src, labels); err != nil {
		return nil, fmt.Errorf("labels %s: truncated: header says %d labels but only %d follow: %w", name, n, got, err)
	}
	var one [1]byte
	if k, _ := io.ReadFull(src, one[:]); k > 0 {
		return nil, fmt.Errorf("labels %s: more data than the header's %d labels", name, n)
	}
	return labels, nil
}

// idxLabelMagic is the IDX magic number of unsigned-byte, 1-dimensional data.
const idxLabelMagic = 0x00000801

// openFile opens split's image file of the data set named by spec (in a
// directory, the plain file before the .gz one when both exist) and
// returns it with the name errors give it.
func openFile(spec string, split Split) (io.ReadCloser, string, error) {
	return openAny(spec, split, false)
}

// openAny opens split's image file, or its label file when labels is set.
func openAny(spec string, split Split, labels bool) (io.ReadCloser, string, error) {
	if _, err := ParseSplit(string(split)); err != nil {
		return nil, "", err
	}
	file, what := split.fileName(), "data set"
	if labels {
		file, what = split.labelFileName(), "labels of data set"
	}
	switch {
	case spec == MNIST:
		var data string
		switch {
		case split == Test && labels:
			data = builtinTestLabels
		case split == Test:
			data = builtinTest
		case labels:
			data = builtinTrainLabels
		default:
			data = builtinTrain
		}
		return embedded{strings.NewReader(data), data}, "mnist:" + file, nil
	case strings.HasPrefix(spec, "idx:"):
		dir := strings.TrimPrefix(spec, "idx:")
		if dir == "" {
			return nil, "", errors.New(`data set "idx:" names no directory (want idx:DIR)`)
		}
		base := filepath.Join(dir, file)
		for _, path := range []string{base, base + ".gz"} {
			f, err := os.Open(path)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, "", fmt.Errorf("%s: %w", what, err)
			}
			return f, path, nil
		}
		return nil, "", fmt.Errorf("%s %s: neither %s nor %s.gz exists: %w", what, spec, base, base, fs.ErrNotExist)
	}
	return nil, "", fmt.Errorf("unknown data set %q (known: mnist, idx:DIR)", spec)
}

// FromPixels makes an Images of n images of rows x cols bytes from pix
// (n*rows*cols bytes, row-major, one image after the other), as a worker
// receives a data set it does not have from the coordinators.
func FromPixels(n, rows, cols int, pix []byte, source string) (*Images, error) {
	if n < 1 || rows < 1 || cols < 1 || rows > 1<<12 || cols > 1<<12 {
		return nil, fmt.Errorf("data set %s: %d images of %dx%d pixels is not a data set", source, n, rows, cols)
	}
	if want := int64(n) * int64(rows) * int64(cols); int64(len(pix)) != want {
		return nil, fmt.Errorf("data set %s: %d bytes of pixels, want %d (%d images of %dx%d)", source, len(pix), want, n, rows, cols)
	}
	return &Images{N: n, Rows: rows, Cols: cols, Pix: pix, Source: source}, nil
}

// idxStream returns the IDX bytes of r: r itself (buffered), or r
// gunzipped when it starts as gzip does. done releases the decompressor.
func idxStream(r io.Reader, name string) (src io.Reader, done func(), err error) {
	br := bufio.NewReader(r)
	if head, _ := br.Peek(2); len(head) == 2 && head[0] == 0x1f && head[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("data set %s: bad gzip stream: %w", name, err)
		}
		return zr, func() { zr.Close() }, nil
	}
	return br, func() {}, nil
}

// readIDXHeader reads and checks an IDX3 image header from r (the IDX
// bytes: see idxStream) and returns the shape it announces.
func readIDXHeader(r io.Reader, name string) (n, rows, cols int64, err error) {
	var hdr [16]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, 0, 0, fmt.Errorf("data set %s: truncated IDX header: %w", name, err)
	}
	magic := binary.BigEndian.Uint32(hdr[0:])
	if magic != idxImageMagic {
		return 0, 0, 0, fmt.Errorf("data set %s: magic number %#08x is not an IDX image file (want %#08x)", name, magic, idxImageMagic)
	}
	n = int64(binary.BigEndian.Uint32(hdr[4:]))
	rows = int64(binary.BigEndian.Uint32(hdr[8:]))
	cols = int64(binary.BigEndian.Uint32(hdr[12:]))
	if n < 1 || rows < 1 || cols < 1 {
		return 0, 0, 0, fmt.Errorf("data set %s: header says %d images of %dx%d", name, n, rows, cols)
	}
	if rows > 1<<16 || cols > 1<<16 || n*rows*cols > maxBytes {
		return 0, 0, 0, fmt.Errorf("data set %s: header says %d images of %dx%d, more than this reader accepts", name, n, rows, cols)
	}
	return n, rows, cols, nil
}

// idxImageMagic is the IDX magic number of unsigned-byte, 3-dimensional data.
const idxImageMagic = 0x00000803

// maxBytes bounds what a header may ask us to allocate (4 GiB).
const maxBytes = 1 << 32

// readIDX parses an IDX3 image file, gzipped or not (told by its first
// bytes). name is used in errors.
func readIDX(r io.Reader, name string) (*Images, error) {
	src, done, err := idxStream(r, name)
	if err != nil {
		return nil, err
	}
	defer done()
	n, rows, cols, err := readIDXHeader(src, name)
	if err != nil {
		return nil, err
	}
	pix := make([]byte, n*rows*cols)
	if got, err := io.ReadFull(src, pix); err != nil {
		return nil, fmt.Errorf("data set %s: truncated: header says %d images of %dx%d (%d bytes) but only %d follow: %w",
			name, n, rows, cols, len(pix), got, err)
	}
	var one [1]byte
	if k, _ := io.ReadFull(src, one[:]); k > 0 {
		return nil, fmt.Errorf("data set %s: more data than the header's %d images of %dx%d: shape does not match", name, n, rows, cols)
	}
	return &Images{N: int(n), Rows: int(rows), Cols: int(cols), Pix: pix, Source: name}, nil
}
