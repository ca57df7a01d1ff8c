package render

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/png"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// decode decodes a PNG produced by the package.
func decode(t *testing.T, b []byte) image.Image {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("decoding PNG: %v", err)
	}
	return img
}

func grayAt(img image.Image, x, y int) uint8 {
	return color.GrayModel.Convert(img.At(x, y)).(color.Gray).Y
}

func rgbaAt(img image.Image, x, y int) color.RGBA {
	return color.RGBAModel.Convert(img.At(x, y)).(color.RGBA)
}

func gridPNG(t *testing.T, pix []float32, n, rows, cols, pad int) image.Image {
	t.Helper()
	var buf bytes.Buffer
	if err := Grid(&buf, pix, n, rows, cols, pad); err != nil {
		t.Fatalf("Grid: %v", err)
	}
	return decode(t, buf.Bytes())
}

func TestGridColumns(t *testing.T) {
	want := map[int]int{1: 1, 2: 2, 3: 2, 4: 2, 5: 3, 9: 3, 10: 4, 16: 4, 17: 5, 64: 8, 65: 9, 1000000: 1000, 1000001: 1001}
	for n, w := range want {
		if got := gridColumns(n); got != w {
			t.Errorf("gridColumns(%d) = %d, want %d", n, got, w)
		}
	}
}

func TestGridDimensions(t *testing.T) {
	// rows=3, cols=5, pad=2: a cell is 5 wide and 3 high.
	for _, c := range []struct{ n, w, h int }{
		{1, 5, 3},
		{2, 12, 3},                 // 2 columns, 1 row
		{3, 12, 8},                 // 2 columns, 2 rows
		{4, 12, 8},                 // 2x2
		{5, 19, 8},                 // 3 columns, 2 rows
		{10, 26, 13},               // 4 columns, 3 rows
		{64, 54, 38},               // 8x8
		{65, 9*5 + 8*2, 8*3 + 7*2}, // 9 columns, 8 rows
	} {
		img := gridPNG(t, make([]float32, c.n*15), c.n, 3, 5, 2)
		if b := img.Bounds(); b.Dx() != c.w || b.Dy() != c.h {
			t.Errorf("n=%d: image is %dx%d, want %dx%d", c.n, b.Dx(), b.Dy(), c.w, c.h)
		}
		if _, ok := img.(*image.Gray); !ok {
			t.Errorf("n=%d: decoded %T, want a grayscale PNG", c.n, img)
		}
	}
}

func TestGridPixels(t *testing.T) {
	// 10 images of 3 rows x 4 columns with pad 2: 4 grid columns, 3 grid
	// rows; cell k starts at x = (k%4)*6, y = (k/4)*5. The image is 22x13.
	const n, rows, cols, pad = 10, 3, 4, 2
	pix := make([]float32, n*rows*cols)
	set := func(k, r, c int, v float32) { pix[k*rows*cols+r*cols+c] = v }
	set(3, 1, 2, 1)   // image 3 is grid row 0, column 3: pixel (20, 1)
	set(5, 2, 3, 0.5) // image 5 is grid row 1, column 1: pixel (9, 7)
	set(9, 0, 0, 0.2) // image 9 is grid row 2, column 1: pixel (6, 10)
	set(0, 0, 0, 1)   // first pixel of all
	set(9, 2, 3, 1)   // last pixel of image 9: (9, 12)
	img := gridPNG(t, pix, n, rows, cols, pad)
	if b := img.Bounds(); b.Dx() != 22 || b.Dy() != 13 {
		t.Fatalf("image is %dx%d, want 22x13", b.Dx(), b.Dy())
	}
	want := map[image.Point]uint8{
		{20, 1}: 255,
		{9, 7}:  128, // round(0.5*255)
		{6, 10}: 51,  // 0.2*255
		{0, 0}:  255,
		{9, 12}: 255,
		// Neighbours of the set pixels are black (inside cells)...
		{19, 1}: 0, {21, 1}: 0, {20, 0}: 0, {20, 2}: 0, {8, 7}: 0, {1, 0}: 0,
		// ...or pad grey (between cells)...
		{4, 0}: 128, {5, 0}: 128, {10, 7}: 128, {9, 8}: 128, {0, 3}: 128, {0, 4}: 128,
		// ...and the two unused cells (10 and 11) are grey too.
		{12, 10}: 128, {21, 12}: 128, {15, 11}: 128,
	}
	for p, v := range want {
		if got := grayAt(img, p.X, p.Y); got != v {
			t.Errorf("pixel %v = %d, want %d", p, got, v)
		}
	}
	// Every pixel: pad and unused cells grey, cell pixels as set above or 0.
	nonzero := map[image.Point]bool{{20, 1}: true, {9, 7}: true, {6, 10}: true, {0, 0}: true, {9, 12}: true}
	for y := 0; y < 13; y++ {
		for x := 0; x < 22; x++ {
			inCell := x%6 < cols && y%5 < rows && (y/5)*4+x/6 < n
			got := grayAt(img, x, y)
			switch {
			case !inCell && got != 128:
				t.Errorf("pad/unused pixel (%d, %d) = %d, want 128", x, y, got)
			case inCell && !nonzero[image.Pt(x, y)] && got != 0:
				t.Errorf("cell pixel (%d, %d) = %d, want 0", x, y, got)
			}
		}
	}
}

func TestGridClampAndNaN(t *testing.T) {
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	vals := []float32{-1, 2, nan, inf, float32(math.Inf(-1)), 0.5, 1, 0, 1e-9}
	want := []uint8{0, 255, 0, 255, 0, 128, 255, 0, 0}
	img := gridPNG(t, vals, 1, 1, len(vals), 3)
	for i, w := range want {
		if got := grayAt(img, i, 0); got != w {
			t.Errorf("value %v drawn as %d, want %d", vals[i], got, w)
		}
	}
}

func TestGridNoPad(t *testing.T) {
	// 4 images of 1x1 in a 2x2 grid without padding.
	img := gridPNG(t, []float32{0, 1, 0.2, 0.6}, 4, 1, 1, 0)
	if b := img.Bounds(); b.Dx() != 2 || b.Dy() != 2 {
		t.Fatalf("image is %dx%d, want 2x2", b.Dx(), b.Dy())
	}
	for p, v := range map[image.Point]uint8{{0, 0}: 0, {1, 0}: 255, {0, 1}: 51, {1, 1}: 153} {
		if got := grayAt(img, p.X, p.Y); got != v {
			t.Errorf("pixel %v = %d, want %d", p, got, v)
		}
	}
}

func TestGridScaled(t *testing.T) {
	// 2 images of 2x2, scale 3, pad 1: cells 6x6, image 13x6.
	pix := []float32{1, 0, 0, 0, 0, 0, 0, 1}
	var buf bytes.Buffer
	if err := GridScaled(&buf, pix, 2, 2, 2, 1, 3); err != nil {
		t.Fatal(err)
	}
	img := decode(t, buf.Bytes())
	if b := img.Bounds(); b.Dx() != 13 || b.Dy() != 6 {
		t.Fatalf("image is %dx%d, want 13x6", b.Dx(), b.Dy())
	}
	for y := 0; y < 6; y++ {
		for x := 0; x < 13; x++ {
			var want uint8
			switch {
			case x == 6:
				want = 128 // pad
			case x < 3 && y < 3: // image 0, pixel (0, 0)
				want = 255
			case x >= 10 && y >= 3: // image 1, pixel (1, 1)
				want = 255
			}
			if got := grayAt(img, x, y); got != want {
				t.Errorf("pixel (%d, %d) = %d, want %d", x, y, got, want)
			}
		}
	}
}

func TestGridErrors(t *testing.T) {
	pix := make([]float32, 100)
	for _, c := range []struct {
		name                      string
		pix                       []float32
		n, rows, cols, pad, scale int
		msg                       string
	}{
		{"n=0", pix, 0, 2, 2, 1, 1, "n = 0"},
		{"n<0", pix, -3, 2, 2, 1, 1, "n = -3"},
		{"rows=0", pix, 1, 0, 2, 1, 1, "rows"},
		{"cols<0", pix, 1, 2, -1, 1, 1, "cols"},
		{"pad<0", pix, 1, 2, 2, -1, 1, "pad"},
		{"scale=0", pix, 1, 2, 2, 1, 0, "scale"},
		{"short pix", pix, 26, 2, 2, 1, 1, "len(pix) = 100"},
		{"nil pix", nil, 1, 1, 1, 0, 1, "len(pix) = 0"},
		{"overflow", pix, 1 << 40, 1 << 20, 1 << 20, 0, 1, "too large"},
		{"huge output", make([]float32, 4), 4, 1, 1, 1 << 20, 1, "too large"},
	} {
		var buf bytes.Buffer
		err := GridScaled(&buf, c.pix, c.n, c.rows, c.cols, c.pad, c.scale)
		if err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: error %v, want one mentioning %q", c.name, err, c.msg)
		}
		if buf.Len() != 0 {
			t.Errorf("%s: wrote %d bytes despite the error", c.name, buf.Len())
		}
	}
	if err := Grid(nil, pix, 1, 1, 1, 0); err == nil {
		t.Error("Grid to a nil writer succeeded")
	}
}

func TestGridFile(t *testing.T) {
	dir := t.TempDir()
	pix := []float32{0, 0.25, 0.5, 1, 0.75, 0}
	path := filepath.Join(dir, "grid.png")
	if err := GridFile(path, pix, 3, 1, 2, 1); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	if err := Grid(&want, pix, 3, 1, 2, 1); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Error("GridFile wrote different bytes from Grid")
	}
	// 2 grid columns: image 1 at x=3..4 of row 0, image 2 at x=0..1 of y=2.
	img := decode(t, got)
	for p, v := range map[image.Point]uint8{{4, 0}: 255, {3, 0}: 128, {0, 2}: 191, {2, 0}: 128} {
		if g := grayAt(img, p.X, p.Y); g != v {
			t.Errorf("pixel %v = %d, want %d", p, g, v)
		}
	}

	// Bad arguments: an error and no file.
	bad := filepath.Join(dir, "bad.png")
	if err := GridFile(bad, pix, 4, 1, 2, 1); err == nil {
		t.Error("GridFile with too few pixels succeeded")
	}
	if _, err := os.Stat(bad); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("GridFile with bad arguments left a file behind (stat: %v)", err)
	}

	// A path that cannot be created: the error wraps the cause and names the path.
	missing := filepath.Join(dir, "no", "such", "dir", "grid.png")
	err = GridFile(missing, pix, 3, 1, 2, 1)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("GridFile(%s) = %v, want a wrapped fs.ErrNotExist naming the path", missing, err)
	}
}
