package dataset

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBuiltinMNIST(t *testing.T) {
	for split, want := range map[Split]int{Train: 60000, Test: 10000} {
		s, err := Open(MNIST, split)
		if err != nil {
			t.Fatal(err)
		}
		if s.N != want || s.Rows != 28 || s.Cols != 28 || len(s.Pix) != want*784 {
			t.Fatalf("%s: %d images of %dx%d", split, s.N, s.Rows, s.Cols)
		}
		// MNIST digits cover roughly 13% of the pixels after thresholding.
		x := make([]float32, 784)
		var on float64
		for i := 0; i < 1000; i++ {
			s.Binary(i, x)
			for _, v := range x {
				if v != 0 && v != 1 {
					t.Fatalf("pixel %v is not binary", v)
				}
				on += float64(v)
			}
		}
		if f := on / (1000 * 784); f < 0.08 || f > 0.2 {
			t.Fatalf("%s: %.3f of pixels on", split, f)
		}
	}
}

func TestBinaryThreshold(t *testing.T) {
	s := &Images{N: 1, Rows: 16, Cols: 16, Pix: make([]byte, 256)}
	for v := range s.Pix {
		s.Pix[v] = byte(v)
	}
	x := make([]float32, 256)
	for i := range x {
		x[i] = 9
	}
	s.Binary(0, x)
	for v, got := range x {
		if want := map[bool]float32{true: 1, false: 0}[v > 127]; got != want {
			t.Errorf("byte %d thresholded to %v, want %v", v, got, want)
		}
	}
}

// idxBytes builds an IDX3 image file.
func idxBytes(magic uint32, n, rows, cols int, pix []byte) []byte {
	var b bytes.Buffer
	var hdr [16]byte
	binary.BigEndian.PutUint32(hdr[0:], magic)
	binary.BigEndian.PutUint32(hdr[4:], uint32(n))
	binary.BigEndian.PutUint32(hdr[8:], uint32(rows))
	binary.BigEndian.PutUint32(hdr[12:], uint32(cols))
	b.Write(hdr[:])
	b.Write(pix)
	return b.Bytes()
}

func gz(b []byte) []byte {
	var out bytes.Buffer
	w := gzip.NewWriter(&out)
	w.Write(b)
	w.Close()
	return out.Bytes()
}

func write(t *testing.T, dir, name string, b []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestIDXDirectory(t *testing.T) {
	pix := []byte{0, 200, 0, 0, 255, 3, 1, 2}
	plain := idxBytes(idxImageMagic, 2, 2, 2, pix)
	for _, zipped := range []bool{false, true} {
		dir := t.TempDir()
		name, data := "train-images-idx3-ubyte", plain
		if zipped {
			name, data = name+".gz", gz(plain)
		}
		write(t, dir, name, data)
		s, err := Open("idx:"+dir, Train)
		if err != nil {
			t.Fatal(err)
		}
		if s.N != 2 || s.Rows != 2 || s.Cols != 2 || !bytes.Equal(s.Pix, pix) {
			t.Fatalf("read %+v", s)
		}
		if n, err := Count("idx:"+dir, Train); n != 2 || err != nil {
			t.Fatalf("Count: %d, %v", n, err)
		}
		if err := CheckShape(s, 28, 28); err == nil || !strings.Contains(err.Error(), "2x2") {
			t.Fatalf("CheckShape: %v", err)
		}
		if _, err := Open("idx:"+dir, Test); err == nil || !strings.Contains(err.Error(), "t10k-images-idx3-ubyte") {
			t.Fatalf("missing test split: %v", err)
		}
	}
}

func TestBadInputNamesTheFile(t *testing.T) {
	good := idxBytes(idxImageMagic, 2, 2, 2, make([]byte, 8))
	cases := map[string]struct {
		data []byte
		want string
	}{
		"wrong magic":       {idxBytes(0x801, 2, 2, 2, make([]byte, 8)), "magic"},
		"labels file":       {idxBytes(0x801, 2, 0, 0, nil)[:8], "truncated IDX header"},
		"truncated":         {good[:len(good)-3], "truncated"},
		"truncated gzip":    {gz(good)[:20], "truncated"},
		"too long":          {append(append([]byte{}, good...), 1, 2, 3), "shape does not match"},
		"empty":             {nil, "truncated IDX header"},
		"zero images":       {idxBytes(idxImageMagic, 0, 2, 2, nil), "0 images"},
		"huge header":       {idxBytes(idxImageMagic, 1<<30, 1<<10, 1<<10, nil), "more than"},
		"not gzip after 1f": {[]byte{0x1f, 0x8b, 0, 0, 0}, "gzip"},
	}
	for name, c := range cases {
		dir := t.TempDir()
		write(t, dir, "train-images-idx3-ubyte", c.data)
		_, err := Open("idx:"+dir, Train)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "train-images-idx3-ubyte") {
			t.Errorf("%s: error %v, want one naming the file and %q", name, err, c.want)
		}
	}
}

func TestBadSpecs(t *testing.T) {
	for spec, want := range map[string]string{
		"cifar":               "unknown data set",
		"idx:":                "no directory",
		"idx:/does/not/exist": "/does/not/exist",
	} {
		if _, err := Count(spec, Train); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Count(%q): %v, want an error saying %q", spec, err, want)
		}
		if _, err := Open(spec, Train); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", spec, err, want)
		}
	}
	if _, err := ParseSplit("validation"); err == nil {
		t.Error("split validation accepted")
	}
	if _, err := Open(MNIST, "dev"); err == nil {
		t.Error("split dev accepted")
	}
}

func TestGreyLevels(t *testing.T) {
	s := &Images{N: 1, Rows: 16, Cols: 16, Pix: make([]byte, 256)}
	for v := range s.Pix {
		s.Pix[v] = byte(v)
	}
	x := make([]float32, 256)
	s.Pixels(0, x, true)
	for v, got := range x {
		if want := float32(v) / 255; got != want || got < 0 || got > 1 {
			t.Errorf("byte %d scaled to %v, want %v", v, got, want)
		}
	}
	s.Pixels(0, x, false)
	if x[127] != 0 || x[128] != 1 {
		t.Errorf("Pixels(grey=false) is not the threshold: %v %v", x[127], x[128])
	}
}

func TestBuiltinLabels(t *testing.T) {
	for split, want := range map[Split]int{Train: 60000, Test: 10000} {
		l, err := Labels(MNIST, split)
		if err != nil {
			t.Fatal(err)
		}
		if len(l) != want {
			t.Fatalf("%s: %d labels, want %d", split, len(l), want)
		}
		var count [10]int
		for i, v := range l {
			if v > 9 {
				t.Fatalf("%s: label %d is %d", split, i, v)
			}
			count[v]++
		}
		for d, c := range count {
			if c < want/20 {
				t.Errorf("%s: digit %d labels %d images", split, d, c)
			}
		}
	}
	// The first training digits of MNIST are 5, 0, 4, 1, 9; the first test ones 7, 2, 1, 0, 4.
	tr, _ := Labels(MNIST, Train)
	te, _ := Labels(MNIST, Test)
	if !bytes.Equal(tr[:5], []byte{5, 0, 4, 1, 9}) || !bytes.Equal(te[:5], []byte{7, 2, 1, 0, 4}) {
		t.Errorf("first labels %v and %v", tr[:5], te[:5])
	}
}

// labelBytes builds an IDX1 label file.
func labelBytes(magic uint32, n int, labels []byte) []byte {
	var hdr [8]byte
	binary.BigEndian.PutUint32(hdr[0:], magic)
	binary.BigEndian.PutUint32(hdr[4:], uint32(n))
	return append(hdr[:], labels...)
}

func TestIDXLabels(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "train-images-idx3-ubyte", idxBytes(idxImageMagic, 3, 2, 2, make([]byte, 12)))
	// No label file: a clear error naming the files looked for.
	_, err := Labels("idx:"+dir, Train)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "train-labels-idx1-ubyte") || !strings.Contains(err.Error(), "labels") {
		t.Fatalf("missing labels: %v", err)
	}
	write(t, dir, "train-labels-idx1-ubyte.gz", gz(labelBytes(idxLabelMagic, 3, []byte{3, 1, 4})))
	l, err := Labels("idx:"+dir, Train)
	if err != nil || !bytes.Equal(l, []byte{3, 1, 4}) {
		t.Fatalf("labels %v, %v", l, err)
	}
	for name, c := range map[string]struct {
		data []byte
		want string
	}{
		"image file":  {idxBytes(idxImageMagic, 3, 2, 2, make([]byte, 12)), "magic"},
		"truncated":   {labelBytes(idxLabelMagic, 3, []byte{1}), "truncated"},
		"too long":    {labelBytes(idxLabelMagic, 1, []byte{1, 2}), "more data"},
		"zero labels": {labelBytes(idxLabelMagic, 0, nil), "0 labels"},
		"empty":       {nil, "truncated IDX header"},
	} {
		d := t.TempDir()
		write(t, d, "t10k-labels-idx1-ubyte", c.data)
		_, err := Labels("idx:"+d, Test)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "t10k-labels-idx1-ubyte") {
			t.Errorf("%s: error %v, want one naming the file and %q", name, err, c.want)
		}
	}
}
