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
	"time"
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

// --- Loss curves ---

func lossPNG(t *testing.T, title string, series ...Series) image.Image {
	t.Helper()
	var buf bytes.Buffer
	if err := LossCurve(&buf, title, series...); err != nil {
		t.Fatalf("LossCurve: %v", err)
	}
	img := decode(t, buf.Bytes())
	if b := img.Bounds(); b.Dx() != PlotWidth || b.Dy() != PlotHeight {
		t.Fatalf("plot is %dx%d, want %dx%d", b.Dx(), b.Dy(), PlotWidth, PlotHeight)
	}
	return img
}

// colourSpan counts the pixels of colour col in rows y0..y1-1, and returns
// the columns that hold at least one of them.
func colourSpan(img image.Image, col color.RGBA, y0, y1 int) (count int, cols []bool) {
	b := img.Bounds()
	cols = make([]bool, b.Dx())
	for y := y0; y < y1; y++ {
		for x := 0; x < b.Dx(); x++ {
			if rgbaAt(img, x, y) == col {
				count++
				cols[x] = true
			}
		}
	}
	return count, cols
}

// runs returns the lengths of the runs of true in v.
func runs(v []bool) []int {
	var rs []int
	n := 0
	for _, b := range v {
		if b {
			n++
		} else if n > 0 {
			rs = append(rs, n)
			n = 0
		}
	}
	if n > 0 {
		rs = append(rs, n)
	}
	return rs
}

func line(name string, n int, f func(x float64) float64) Series {
	s := Series{Name: name, X: make([]float64, n), Y: make([]float64, n)}
	for i := range n {
		s.X[i] = float64(i)
		s.Y[i] = f(float64(i))
	}
	return s
}

func TestPaletteDistinct(t *testing.T) {
	seen := map[color.RGBA]bool{white: true, black: true, gridColor: true, noteColor: true, boxColor: true}
	for i, c := range palette {
		if seen[c] {
			t.Errorf("palette colour %d %v is not distinct", i, c)
		}
		seen[c] = true
	}
}

func TestLossCurveSeriesColours(t *testing.T) {
	// Series 0 near y=0 (bottom of the plot), series 1 near y=10 (top), and
	// an empty series 2 in between, which must not matter.
	low := line("low", 200, func(x float64) float64 { return math.Sin(x / 10) })
	high := line("high", 200, func(x float64) float64 { return 10 + math.Cos(x/10) })
	img := lossPNG(t, "two series", low, high, Series{Name: "empty"})

	if got := rgbaAt(img, 0, 0); got != white {
		t.Errorf("corner pixel %v, want white background", got)
	}
	// The legend swatch is 24x3 pixels, so a few hundred pixels of a
	// series colour can only come from its line.
	const minLine = 500
	mid := PlotHeight / 2
	if n, _ := colourSpan(img, palette[0], mid, PlotHeight); n < minLine {
		t.Errorf("series 0 colour: %d pixels in the lower half, want at least %d", n, minLine)
	}
	if n, _ := colourSpan(img, palette[0], 0, mid); n > 100 {
		t.Errorf("series 0 colour: %d pixels in the upper half, want only the legend's", n)
	}
	if n, _ := colourSpan(img, palette[1], 0, mid); n < minLine {
		t.Errorf("series 1 colour: %d pixels in the upper half, want at least %d", n, minLine)
	}
	if n, _ := colourSpan(img, palette[1], mid, PlotHeight); n > 100 {
		t.Errorf("series 1 colour: %d pixels in the lower half, want only the legend's", n)
	}
	// The empty series appears in the legend only.
	if n, _ := colourSpan(img, palette[2], 0, PlotHeight); n == 0 || n > 100 {
		t.Errorf("empty series colour: %d pixels, want only a legend swatch", n)
	}
	// Some text and axes: black pixels in the title band and at the bottom.
	if n, _ := colourSpan(img, black, 0, 30); n == 0 {
		t.Error("no black pixels in the title band")
	}
	if n, _ := colourSpan(img, black, PlotHeight-45, PlotHeight); n == 0 {
		t.Error("no black pixels in the x axis label band")
	}
}

func TestLossCurveContinuous(t *testing.T) {
	// Two points: one straight steep line from the bottom left to the top
	// right of the data area. Every column and every row it crosses must
	// have a pixel of it.
	s := Series{Name: "diag", X: []float64{0, 1}, Y: []float64{0, 1}}
	img := lossPNG(t, "", s)
	_, cols := colourSpan(img, palette[0], 0, PlotHeight)
	if r := runs(cols); len(r) != 1 || r[0] < 600 {
		t.Errorf("line columns form runs %v, want one run of at least 600", r)
	}
	rows := make([]bool, PlotHeight)
	for y := range rows {
		n, _ := colourSpan(img, palette[0], y, y+1)
		rows[y] = n > 0
	}
	// The legend swatch may add a separate short run of rows.
	long := 0
	for _, r := range runs(rows) {
		long = max(long, r)
	}
	if long < 350 {
		t.Errorf("longest run of rows with line pixels is %d, want at least 350", long)
	}
}

func TestLossCurveGaps(t *testing.T) {
	// A NaN breaks the line: two separate pieces, no segment across the gap.
	s := Series{
		Name: "gappy",
		X:    []float64{0, 1, 2, 3, 4, 5},
		Y:    []float64{1, 1, math.NaN(), 2, 2, 2},
	}
	// A second series widens the y range to [0, 3], so that both pieces
	// lie in the middle band, clear of the legend in a corner.
	frame := Series{Name: "frame", X: []float64{0, 5}, Y: []float64{0, 3}}
	img := lossPNG(t, "", frame, s) // s last, so frame does not cover it
	_, cols := colourSpan(img, palette[1], 100, PlotHeight-60)
	r := runs(cols)
	if len(r) != 2 {
		t.Fatalf("line columns form runs %v, want two separate pieces", r)
	}
	// The second piece is twice as long as the first.
	if r[1] < r[0]*3/2 {
		t.Errorf("pieces %v, want the second about twice the first", r)
	}
}

func TestLossCurveManyPoints(t *testing.T) {
	// 100k noisy points with a fresh-model start, plus a moving average.
	const n = 100000
	raw := Series{Name: "loss per step", X: make([]float64, n), Y: make([]float64, n)}
	avg := Series{Name: "moving average", X: make([]float64, n), Y: make([]float64, n)}
	sum := 0.0
	for i := range n {
		raw.X[i], avg.X[i] = float64(i+1), float64(i+1)
		raw.Y[i] = 80 + 463*math.Exp(-float64(i)/20) + 5*math.Sin(float64(i)*1.7)
		sum += raw.Y[i]
		if i >= 100 {
			sum -= raw.Y[i-100]
		}
		avg.Y[i] = sum / float64(min(i+1, 100))
	}
	start := time.Now()
	img := lossPNG(t, "many points", raw, avg)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("plotting %d points took %v", 2*n, d)
	}
	for i := range 2 {
		if c, _ := colourSpan(img, palette[i], 0, PlotHeight); c < 500 {
			t.Errorf("series %d colour: %d pixels, want at least 500", i, c)
		}
	}
}

func TestYRangeCapsOutliers(t *testing.T) {
	// A fresh model's 543 then 999 trained losses in [75, 85].
	ys := []float64{543}
	for i := range 999 {
		ys = append(ys, 75+10*float64(i%100)/99)
	}
	r, above := yRange(ys)
	if r.lo != 75 || r.hi < 85 || r.hi > 90 || above != 1 {
		t.Errorf("yRange = [%g, %g], %d above; want [75, 85..90], 1 above", r.lo, r.hi, above)
	}

	// No outliers: the full range, nothing above.
	ys = ys[:0]
	for i := range 1000 {
		ys = append(ys, float64(i%101))
	}
	if r, above := yRange(ys); r.lo != 0 || r.hi != 100 || above != 0 {
		t.Errorf("yRange = [%g, %g], %d above; want [0, 100], 0 above", r.lo, r.hi, above)
	}

	// Few points: the quantile is the maximum, so nothing is capped.
	if r, above := yRange([]float64{543, 80, 79, 81}); r.hi != 543 || above != 0 {
		t.Errorf("yRange of 4 points = [%g, %g], %d above; want top 543, 0 above", r.lo, r.hi, above)
	}
}

func TestDataRangesThroughSeries(t *testing.T) {
	s := line("loss", 1000, func(x float64) float64 { return 80 + float64(int(x)%7) })
	s.Y[0] = 543
	x, y, above, err := dataRanges([]Series{s})
	if err != nil {
		t.Fatal(err)
	}
	if x.lo != 0 || x.hi != 999 {
		t.Errorf("x range [%g, %g], want [0, 999]", x.lo, x.hi)
	}
	if above != 1 || y.hi >= 100 || y.lo >= 80 {
		t.Errorf("y range [%g, %g] with %d above, want the 543 cut off and 80 shown", y.lo, y.hi, above)
	}
}

func TestNiceTicks(t *testing.T) {
	for raw, want := range map[float64]float64{
		0.7: 1, 1: 1, 1.1: 2, 2: 2, 3: 5, 7: 10, 0.013: 0.02, 2500: 5000, 20000: 20000, 0.3: 0.5,
	} {
		if got := niceStep(raw); math.Abs(got-want) > want*1e-12 {
			t.Errorf("niceStep(%g) = %g, want %g", raw, got, want)
		}
	}
	vs, step := ticks(axisRange{-1, 1}, 4)
	labels, _ := tickLabels(vs, step)
	if got := strings.Join(labels, " "); got != "-1.0 -0.5 0.0 0.5 1.0" {
		t.Errorf("ticks of [-1, 1]: %q", got)
	}
	vs, step = ticks(axisRange{1, 100000}, 8)
	labels, _ = tickLabels(vs, step)
	if got := strings.Join(labels, " "); got != "20000 40000 60000 80000 100000" {
		t.Errorf("ticks of [1, 100000]: %q", got)
	}
	vs, step = ticks(axisRange{72.5, 101.3}, 6)
	labels, _ = tickLabels(vs, step)
	if got := strings.Join(labels, " "); got != "75 80 85 90 95 100" {
		t.Errorf("ticks of [72.5, 101.3]: %q", got)
	}
}

func TestLossCurveErrors(t *testing.T) {
	ok := Series{Name: "ok", X: []float64{1, 2}, Y: []float64{3, 4}}
	nan := math.NaN()
	for _, c := range []struct {
		name   string
		series []Series
		msg    string
	}{
		{"no series", nil, "no series"},
		{"mismatched", []Series{ok, {Name: "bad", X: []float64{1, 2, 3}, Y: []float64{1}}}, `series 1 ("bad") has 3 X values but 1 Y values`},
		{"all empty", []Series{{Name: "a"}, {Name: "b"}}, "all 2 series are empty"},
		{"no finite point", []Series{{X: []float64{1, nan}, Y: []float64{nan, 2}}}, "no point has a finite X and Y"},
		{"too wide", []Series{{X: []float64{-math.MaxFloat64, math.MaxFloat64}, Y: []float64{1, 2}}}, "too wide"},
	} {
		var buf bytes.Buffer
		err := LossCurve(&buf, "t", c.series...)
		if err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: error %v, want one mentioning %q", c.name, err, c.msg)
		}
		if buf.Len() != 0 {
			t.Errorf("%s: wrote %d bytes despite the error", c.name, buf.Len())
		}
	}
	if err := LossCurve(nil, "t", ok); err == nil {
		t.Error("LossCurve to a nil writer succeeded")
	}
}

func TestLossCurveFile(t *testing.T) {
	dir := t.TempDir()
	s := line("loss", 50, func(x float64) float64 { return 100 / (1 + x) })
	path := filepath.Join(dir, "loss.png")
	if err := LossCurveFile(path, "file", s); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	if err := LossCurve(&want, "file", s); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Error("LossCurveFile wrote different bytes from LossCurve")
	}
	decode(t, got)

	bad := filepath.Join(dir, "bad.png")
	if err := LossCurveFile(bad, "bad"); err == nil {
		t.Error("LossCurveFile without series succeeded")
	}
	if _, err := os.Stat(bad); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LossCurveFile with bad arguments left a file behind (stat: %v)", err)
	}

	missing := filepath.Join(dir, "missing", "loss.png")
	err = LossCurveFile(missing, "x", s)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("LossCurveFile(%s) = %v, want a wrapped fs.ErrNotExist naming the path", missing, err)
	}
}

func BenchmarkLossCurve100k(b *testing.B) {
	const n = 100000
	s := line("loss", n, func(x float64) float64 { return 80 + 10*math.Sin(x*0.37) + 400/(1+x) })
	var buf bytes.Buffer
	for b.Loop() {
		buf.Reset()
		if err := LossCurve(&buf, "bench", s); err != nil {
			b.Fatal(err)
		}
	}
}

func TestDrawSeriesColumns(t *testing.T) {
	// A 10x10 area mapping x in [0, 9] and y in [0, 9] to one pixel each
	// (y upwards). All points of one column become one vertical stroke
	// over their full extent, even when the first and last are equal.
	c := newCanvas(10, 10, white)
	red := color.RGBA{255, 0, 0, 255}
	p := &pen{c: c, clip: c.img.Rect, col: red, width: 1}
	m := mapper{area: c.img.Rect, x: axisRange{0, 9}, y: axisRange{0, 9}}
	drawSeries(p, m, Series{
		X: []float64{5, 5.1, 4.9, 5.2, 5},
		Y: []float64{5, 0, 9, 2, 5},
	})
	for y := 0; y < 10; y++ {
		for x := 0; x < 10; x++ {
			if got, want := c.at(x, y) == red, x == 5; got != want {
				t.Errorf("pixel (%d, %d) drawn = %v, want %v", x, y, got, want)
			}
		}
	}
	// Points in neighbouring columns are joined: a staircase from (0, 0)
	// to (9, 9) in data space leaves no column or row empty.
	c = newCanvas(10, 10, white)
	p.c = c
	drawSeries(p, m, Series{X: []float64{0, 3, 9}, Y: []float64{0, 9, 0}})
	for x := 0; x < 10; x++ {
		n := 0
		for y := 0; y < 10; y++ {
			if c.at(x, y) == red {
				n++
			}
		}
		if n == 0 {
			t.Errorf("column %d is empty", x)
		}
	}
	if c.at(3, 0) != red || c.at(0, 9) != red || c.at(9, 9) != red {
		t.Error("line does not pass through its points (0,9), (3,0), (9,9) in pixels")
	}
}

func TestDrawSeriesIsolatedPoint(t *testing.T) {
	// A point joined to nothing is a 5x5 square; a two-point line is not.
	c := newCanvas(20, 20, white)
	red := color.RGBA{255, 0, 0, 255}
	p := &pen{c: c, clip: c.img.Rect, col: red, width: 1}
	m := mapper{area: c.img.Rect, x: axisRange{0, 19}, y: axisRange{0, 19}}
	drawSeries(p, m, Series{X: []float64{5, math.NaN(), 12, 15}, Y: []float64{14, 0, 10, 10}})
	count := 0
	for y := 0; y < 20; y++ {
		for x := 0; x < 20; x++ {
			square := x >= 3 && x <= 7 && y >= 3 && y <= 7 // around pixel (5, 5)
			segment := y == 9 && x >= 12 && x <= 15
			if got, want := c.at(x, y) == red, square || segment; got != want {
				t.Errorf("pixel (%d, %d) drawn = %v, want %v", x, y, got, want)
			}
			if c.at(x, y) == red {
				count++
			}
		}
	}
	if count != 25+4 {
		t.Errorf("%d pixels drawn, want 29", count)
	}
}
