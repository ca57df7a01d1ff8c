package render

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg/draw"
)

func lossPNG(t *testing.T, title string, opt Options, series ...Series) image.Image {
	t.Helper()
	var buf bytes.Buffer
	if err := LossCurve(&buf, title, opt, series...); err != nil {
		t.Fatalf("LossCurve: %v", err)
	}
	img := decode(t, buf.Bytes())
	if b := img.Bounds(); b.Dx() != PlotWidth || b.Dy() != PlotHeight {
		t.Fatalf("plot is %dx%d, want %dx%d", b.Dx(), b.Dy(), PlotWidth, PlotHeight)
	}
	return img
}

// geometry returns where LossCurve puts the data point (x, y) in the
// image, in pixels from the top left, and the data area's pixel bounds:
// gonum/plot's own transforms for the same plot on the same canvas.
func geometry(t *testing.T, title string, opt Options, series ...Series) (at func(x, y float64) image.Point, area image.Rectangle) {
	t.Helper()
	p, err := lossPlot(title, opt, series)
	if err != nil {
		t.Fatal(err)
	}
	dc := p.DataCanvas(draw.New(newCanvas()))
	trX, trY := p.Transforms(&dc)
	px := func(l float64) float64 { return l * plotDPI / 72 }
	at = func(x, y float64) image.Point {
		return image.Pt(int(math.Floor(px(float64(trX(x))))), int(math.Floor(PlotHeight-px(float64(trY(y))))))
	}
	area = image.Rect(int(math.Ceil(px(float64(dc.Min.X)))), int(math.Ceil(PlotHeight-px(float64(dc.Max.Y)))),
		int(px(float64(dc.Max.X))), int(PlotHeight-px(float64(dc.Min.Y))))
	return at, area
}

// dist is the Euclidean distance of two colours' RGB, 0..441.
func dist(a, b color.RGBA) float64 {
	dr, dg, db := float64(a.R)-float64(b.R), float64(a.G)-float64(b.G), float64(a.B)-float64(b.B)
	return math.Sqrt(dr*dr + dg*dg + db*db)
}

// near counts the pixels of r (clipped to the image) within tol of col.
func near(img image.Image, r image.Rectangle, col color.RGBA, tol float64) int {
	r = r.Intersect(img.Bounds())
	n := 0
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			if dist(rgbaAt(img, x, y), col) <= tol {
				n++
			}
		}
	}
	return n
}

// around is the square of pixels within d of p.
func around(p image.Point, d int) image.Rectangle {
	return image.Rect(p.X-d, p.Y-d, p.X+d+1, p.Y+d+1)
}

// A line is anti-aliased: its middle pixels are its colour, give or take
// lineTol; a pixel half covered is much further (blue half on white is
// 136 away).
const lineTol = 40

func straight(name string, x0, x1, y0, y1 float64, n int) Series {
	s := Series{Name: name, X: make([]float64, n), Y: make([]float64, n)}
	for i := range n {
		f := float64(i) / float64(n-1)
		s.X[i], s.Y[i] = x0+f*(x1-x0), y0+f*(y1-y0)
	}
	return s
}

func TestPaletteDistinct(t *testing.T) {
	seen := map[color.RGBA]bool{white: true, black: true, gridColor: true}
	for i, c := range palette {
		if seen[c] {
			t.Errorf("palette colour %d %v is not distinct", i, c)
		}
		seen[c] = true
	}
}

// TestLossCurveDrawsWhereTheDataIs: the per-step loss, its average and
// the test loss marks are each drawn, in their colour, at the pixels
// gonum/plot maps their data to, and nowhere far from them.
func TestLossCurveDrawsWhereTheDataIs(t *testing.T) {
	raw := straight("loss per step", 0, 1000, 100, 50, 1001)
	avg := straight("moving average", 0, 1000, 92, 42, 1001)
	test := Series{Name: "test set", X: []float64{250, 500, 1000}, Y: []float64{95, 80, 60}, Marks: true}
	series := []Series{raw, avg, test}
	img := lossPNG(t, "vae training loss", Options{}, series...)
	at, area := geometry(t, "vae training loss", Options{}, series...)

	if area.Dx() < 600 || area.Dy() < 300 || !area.In(image.Rect(0, 0, PlotWidth, PlotHeight)) {
		t.Fatalf("data area %v: not most of the image", area)
	}
	if got := rgbaAt(img, 0, 0); got != white {
		t.Errorf("corner pixel %v, want the white background", got)
	}
	if n := near(img, img.Bounds(), white, 0); n > PlotWidth*PlotHeight*97/100 {
		t.Errorf("%d of %d pixels white: the plot is nearly blank", n, PlotWidth*PlotHeight)
	}
	// Text: dark pixels in the title band and under the data area.
	if n := near(img, image.Rect(0, 0, PlotWidth, area.Min.Y), black, 120); n < 20 {
		t.Errorf("%d dark pixels above the data area, want a title", n)
	}
	if n := near(img, image.Rect(area.Min.X, area.Max.Y+1, area.Max.X, PlotHeight), black, 120); n < 50 {
		t.Errorf("%d dark pixels under the data area, want tick labels and the axis label", n)
	}

	// The two lines: their colour at their points, and not 25 pixels
	// above or below (where the other line or a mark may be, in another
	// colour). x = 250, 500, 1000 hold marks; avoid them.
	for i, s := range series[:2] {
		col := seriesColor(i)
		for _, x := range []float64{40, 150, 380, 620, 880} {
			y := s.Y[int(x)]
			p := at(x, y)
			if n := near(img, around(p, 1), col, lineTol); n == 0 {
				t.Errorf("%s at (%g, %g): no pixel of its colour around %v", s.Name, x, y, p)
			}
			for _, off := range []int{-25, 25} {
				q := p.Add(image.Pt(0, off))
				if n := near(img, around(q, 2), col, lineTol); n > 0 {
					t.Errorf("%s at (%g, %g): its colour also %d pixels off the line, at %v", s.Name, x, y, off, q)
				}
			}
		}
	}
	// The marks: a filled circle (radius 3.5 points, 4.7 pixels) of the
	// third colour at each test point; between them only the thin line
	// that joins them.
	col := seriesColor(2)
	for i, x := range test.X {
		p := at(x, test.Y[i])
		if n := near(img, around(p, 2), col, 10); n != 25 {
			t.Errorf("test mark at (%g, %g), pixel %v: %d of the 25 pixels around it are its colour, want all", x, test.Y[i], p, n)
		}
	}
	mid := at(750, 70) // on the line joining the marks at 500 and 1000
	if n := near(img, around(mid, 2), col, lineTol); n == 0 || n > 12 {
		t.Errorf("between the test marks, pixel %v: %d of 25 pixels in the test colour, want a thin line (1..12)", mid, n)
	}
	// Nothing of the test colour far from its points (the legend's
	// thumbnail is in the top right corner, above the data here).
	if n := near(img, image.Rect(area.Min.X, at(0, 70).Y, at(200, 0).X, area.Max.Y), col, lineTol); n > 0 {
		t.Errorf("%d pixels of the test colour in the lower left, where there is no test point", n)
	}
}

// TestLossCurveLogScale: a log y axis moves the curve to where the log
// mapping puts it, changes the picture, and labels 1-2-5 ticks.
func TestLossCurveLogScale(t *testing.T) {
	// y from 1000 down to 10: 100 points, too few for the linear axis's
	// cap, so both axes show all of it.
	s := Series{Name: "loss"}
	for x := 0.0; x < 100; x++ {
		s.X, s.Y = append(s.X, x), append(s.Y, 1000/(x+1))
	}
	var linBuf, logBuf bytes.Buffer
	if err := LossCurve(&linBuf, "t", Options{}, s); err != nil {
		t.Fatal(err)
	}
	if err := LossCurve(&logBuf, "t", Options{LogY: true}, s); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(linBuf.Bytes(), logBuf.Bytes()) {
		t.Fatal("log and linear plots are the same image")
	}
	lin, log := decode(t, linBuf.Bytes()), decode(t, logBuf.Bytes())
	linAt, area := geometry(t, "t", Options{}, s)
	logAt, _ := geometry(t, "t", Options{LogY: true}, s)
	col := seriesColor(0)
	for _, x := range []float64{1, 9, 49, 99} { // y = 500, 100, 20, 10
		y := s.Y[int(x)]
		pl, pg := linAt(x, y), logAt(x, y)
		if near(lin, around(pl, 1), col, lineTol) == 0 {
			t.Errorf("linear: (%g, %g) not drawn at %v", x, y, pl)
		}
		if near(log, around(pg, 1), col, lineTol) == 0 {
			t.Errorf("log: (%g, %g) not drawn at %v", x, y, pg)
		}
		if (x == 9 || x == 49) && pl.Y-pg.Y < 40 {
			t.Errorf("(%g, %g) is at row %d on the linear axis and %d on the log one: want it well higher on the log one", x, y, pl.Y, pg.Y)
		}
		// And the log image has nothing where the linear one drew it.
		if x == 9 && near(log, around(pl, 1), col, lineTol) > 0 {
			t.Errorf("log: (%g, %g) drawn where the linear axis puts it, %v", x, y, pl)
		}
	}
	// On the log axis y = 100 is half way from 10 to 1000.
	frac := float64(logAt(0, 10).Y-logAt(0, 100).Y) / float64(logAt(0, 10).Y-logAt(0, 1000).Y)
	if math.Abs(frac-0.5) > 0.01 {
		t.Errorf("log axis: y = 100 at %.3f of the way from 10 to 1000, want 1/2", frac)
	}
	// The linear axis puts y = 20 within 4% of the bottom of the data area.
	if d := area.Max.Y - linAt(0, 20).Y; d > area.Dy()*4/100 {
		t.Errorf("linear axis: y = 20 is %d pixels above the bottom of %d", d, area.Dy())
	}
}

func TestLogTicks(t *testing.T) {
	labels := func(lo, hi float64) string {
		var ls []string
		for _, tk := range (logTicks{}).Ticks(lo, hi) {
			if tk.Value < lo || tk.Value > hi {
				t.Errorf("tick %g outside [%g, %g]", tk.Value, lo, hi)
			}
			if tk.Label != "" {
				ls = append(ls, tk.Label)
			}
		}
		return strings.Join(ls, " ")
	}
	for _, c := range []struct {
		lo, hi float64
		want   string
	}{
		{75, 560, "100 200 500"},
		{1, 1000, "1 2 5 10 20 50 100 200 500 1000"},
		{80, 450, "80 90 100 200 300 400"}, // one 1-2-5 label: every integer
		{0.02, 0.3, "0.02 0.05 0.1 0.2"},
		{1e5, 2e6, "100000 200000 500000 1000000 2000000"},
	} {
		if got := labels(c.lo, c.hi); got != c.want {
			t.Errorf("log ticks of [%g, %g]: %q, want %q", c.lo, c.hi, got, c.want)
		}
	}
	if ts := (logTicks{}).Ticks(0, 10); ts != nil {
		t.Errorf("log ticks of [0, 10]: %v, want none", ts)
	}
}

func TestLossCurveLogScaleRejectsNonPositive(t *testing.T) {
	for _, c := range []struct {
		y    []float64
		want string
	}{
		{[]float64{5, 3, 0, 2}, `series 0 ("loss") has y = 0 at x = 2`},
		{[]float64{5, -1, 4, 2}, `series 0 ("loss") has y = -1 at x = 1`},
	} {
		var buf bytes.Buffer
		err := LossCurve(&buf, "t", Options{LogY: true}, Series{Name: "loss", X: []float64{0, 1, 2, 3}, Y: c.y})
		if err == nil || !strings.Contains(err.Error(), "log-scale y axis needs positive values") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("y %v: error %v, want one saying a log axis needs positive values and %q", c.y, err, c.want)
		}
		if buf.Len() != 0 {
			t.Errorf("y %v: wrote %d bytes despite the error", c.y, buf.Len())
		}
		// The same values on a linear axis are fine.
		if err := LossCurve(&buf, "t", Options{}, Series{Name: "loss", X: []float64{0, 1, 2, 3}, Y: c.y}); err != nil {
			t.Errorf("y %v on a linear axis: %v", c.y, err)
		}
	}
	// A non-finite value is a break in the line, not an error.
	nan := math.NaN()
	if err := LossCurve(&bytes.Buffer{}, "t", Options{LogY: true}, Series{X: []float64{0, 1, 2}, Y: []float64{3, nan, 2}}); err != nil {
		t.Errorf("NaN on a log axis: %v", err)
	}
}

func TestLossCurveCapsOutliers(t *testing.T) {
	// A fresh model's 543 then trained losses of 75..85: the axis ends
	// near 85 and a second title line says one point is above.
	s := Series{Name: "loss", X: []float64{0}, Y: []float64{543}}
	for i := 1; i < 1000; i++ {
		s.X, s.Y = append(s.X, float64(i)), append(s.Y, 75+10*float64(i%100)/99)
	}
	p, err := lossPlot("t", Options{}, []Series{s})
	if err != nil {
		t.Fatal(err)
	}
	if p.Y.Max < 85 || p.Y.Max > 90 || p.Y.Min > 75 {
		t.Errorf("y axis [%g, %g], want the 543 cut off and 75..85 shown", p.Y.Min, p.Y.Max)
	}
	if want := "t\n(y axis capped near the 99th percentile: 1 point above)"; p.Title.Text != want {
		t.Errorf("title %q, want %q", p.Title.Text, want)
	}
	// On a log axis nothing is capped.
	p, err = lossPlot("t", Options{LogY: true}, []Series{s})
	if err != nil {
		t.Fatal(err)
	}
	if p.Y.Max < 543 || p.Title.Text != "t" {
		t.Errorf("log axis: top %g, title %q; want all of the data and no note", p.Y.Max, p.Title.Text)
	}
	// The line leaves the top of the data area: its colour in the top row.
	img := lossPNG(t, "t", Options{}, s)
	at, area := geometry(t, "t", Options{}, s)
	if n := near(img, image.Rect(area.Min.X, area.Min.Y, at(3, 0).X, area.Min.Y+3), seriesColor(0), lineTol); n == 0 {
		t.Error("the first, capped, steps do not run off the top of the data area")
	}
}

func TestLossCurveGapsAndLonePoints(t *testing.T) {
	// A NaN breaks the line: no segment across the gap. (0, 3) and
	// (5, 0) frame the data so that it sits in the middle, clear of the
	// legend; frame is drawn first, in the first colour.
	frame := Series{Name: "frame", X: []float64{0, 5}, Y: []float64{0, 3}}
	s := Series{Name: "gappy", X: []float64{0, 1, 2, 3, 4, 5}, Y: []float64{1, 1, math.NaN(), 2, 2, 2}}
	lone := Series{Name: "lone", X: []float64{0.5, math.NaN(), 4}, Y: []float64{2.5, 1, 0.5}}
	img := lossPNG(t, "", Options{}, frame, s, lone)
	at, area := geometry(t, "", Options{}, frame, s, lone)
	col := seriesColor(1)
	for _, pt := range [][2]float64{{0.5, 1}, {3.5, 2}, {4.5, 2}} {
		if p := at(pt[0], pt[1]); near(img, around(p, 1), col, lineTol) == 0 {
			t.Errorf("no line at %v (pixel %v)", pt, p)
		}
	}
	gap := image.Rect(at(1.2, 0).X, area.Min.Y, at(2.8, 0).X, area.Max.Y)
	if n := near(img, gap, col, lineTol); n > 0 {
		t.Errorf("%d pixels of the line in the gap between x = 1.2 and 2.8", n)
	}
	// The lone points are small squares (2 points, 2.7 pixels, either side).
	lc := seriesColor(2)
	for _, pt := range [][2]float64{{0.5, 2.5}, {4, 0.5}} {
		p := at(pt[0], pt[1])
		if n := near(img, around(p, 1), lc, 10); n != 9 {
			t.Errorf("lone point %v, pixel %v: %d of 9 pixels around it in its colour, want a filled square", pt, p, n)
		}
		if n := near(img, around(p, 8), lc, lineTol); n > 60 {
			t.Errorf("lone point %v: %d pixels of its colour within 8 pixels, want only a small square", pt, n)
		}
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
	img := lossPNG(t, "many points", Options{}, raw, avg)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("plotting %d points took %v", 2*n, d)
	}
	at, _ := geometry(t, "many points", Options{}, raw, avg)
	// The noise spans 75..85: the raw band covers both ends, the average
	// runs through the middle.
	for _, x := range []float64{20000, 60000, 95000} {
		for _, y := range []float64{76, 84} {
			if p := at(x, y); near(img, around(p, 2), seriesColor(0), lineTol) == 0 {
				t.Errorf("raw band missing at (%g, %g), pixel %v", x, y, p)
			}
		}
		if p := at(x, 80); near(img, around(p, 2), seriesColor(1), lineTol) == 0 {
			t.Errorf("average missing at (%g, 80), pixel %v", x, p)
		}
	}
}

func TestThin(t *testing.T) {
	// 10 bins over [0, 100); 1000 points of a noisy curve.
	var pts plotter.XYs
	for i := range 1000 {
		x := float64(i) / 10
		pts = append(pts, plotter.XY{X: x, Y: math.Sin(x*7) + x/10})
	}
	got := thin(pts, axisRange{0, 100}, 10)
	if len(got) > 40 || len(got) < 20 {
		t.Fatalf("thinned to %d points, want 2..4 a bin", len(got))
	}
	if got[0] != pts[0] || got[len(got)-1] != pts[len(pts)-1] {
		t.Error("thinning lost the first or last point")
	}
	// Each bin keeps its extremes, in order.
	for b := range 10 {
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, p := range pts[b*100 : (b+1)*100] {
			lo, hi = min(lo, p.Y), max(hi, p.Y)
		}
		klo, khi := math.Inf(1), math.Inf(-1)
		for _, p := range got {
			if int(p.X/10) == b {
				klo, khi = min(klo, p.Y), max(khi, p.Y)
			}
		}
		if klo != lo || khi != hi {
			t.Errorf("bin %d: kept y in [%g, %g], the points span [%g, %g]", b, klo, khi, lo, hi)
		}
	}
	for i := 1; i < len(got); i++ {
		if got[i].X < got[i-1].X {
			t.Fatalf("thinned points out of order at %d", i)
		}
	}
}

func TestChunks(t *testing.T) {
	pts := make(plotter.XYs, 150)
	for i := range pts {
		pts[i].X = float64(i)
	}
	cs := chunks(pts, 64)
	if len(cs) != 3 || len(cs[0]) != 64 || len(cs[1]) != 64 || len(cs[2]) != 24 {
		t.Fatalf("chunks of 150 points: sizes %d, %d, ...", len(cs[0]), len(cs[1]))
	}
	for i := 1; i < len(cs); i++ {
		if cs[i][0] != cs[i-1][len(cs[i-1])-1] {
			t.Errorf("chunk %d does not start where chunk %d ends", i, i-1)
		}
	}
	if cs[2][23].X != 149 {
		t.Error("the last chunk does not end at the last point")
	}
	if cs := chunks(pts[:10], 64); len(cs) != 1 || len(cs[0]) != 10 {
		t.Errorf("10 points: %d chunks", len(cs))
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

func TestTickLabels(t *testing.T) {
	for v, want := range map[float64]string{
		250: "250", 1750: "1750", 100000: "100000", 1e6: "1000000", 0.25: "0.25",
		0.1 + 0.2: "0.3", -0.5: "-0.5", 0: "0", 1e-7: "1e-07", 1e20: "1e+20",
	} {
		if got := tickLabel(v); got != want {
			t.Errorf("tickLabel(%g) = %q, want %q", v, got, want)
		}
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
		err := LossCurve(&buf, "t", Options{}, c.series...)
		if err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: error %v, want one mentioning %q", c.name, err, c.msg)
		}
		if buf.Len() != 0 {
			t.Errorf("%s: wrote %d bytes despite the error", c.name, buf.Len())
		}
	}
	if err := LossCurve(nil, "t", Options{}, ok); err == nil {
		t.Error("LossCurve to a nil writer succeeded")
	}
	// A single point, an empty series beside a full one, and one x value
	// for every point are drawable.
	for _, ss := range [][]Series{
		{{X: []float64{3}, Y: []float64{7}}},
		{ok, {Name: "empty"}},
		{{X: []float64{2, 2, 2}, Y: []float64{1, 5, 3}}},
		{{X: []float64{4}, Y: []float64{9}, Marks: true}},
	} {
		for _, opt := range []Options{{}, {LogY: true}} {
			if err := LossCurve(&bytes.Buffer{}, "t", opt, ss...); err != nil {
				t.Errorf("%v %+v: %v", ss, opt, err)
			}
		}
	}
}

func TestLossCurveDeterministicAndFile(t *testing.T) {
	dir := t.TempDir()
	s := straight("loss", 1, 50, 100, 2, 50)
	test := Series{Name: "test", X: []float64{25, 50}, Y: []float64{60, 5}, Marks: true}
	path := filepath.Join(dir, "loss.png")
	if err := LossCurveFile(path, "file", Options{LogY: true}, s, test); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	if err := LossCurve(&want, "file", Options{LogY: true}, s, test); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Error("LossCurveFile wrote different bytes from LossCurve, or LossCurve is not deterministic")
	}
	decode(t, got)

	bad := filepath.Join(dir, "bad.png")
	if err := LossCurveFile(bad, "bad", Options{}); err == nil {
		t.Error("LossCurveFile without series succeeded")
	}
	if err := LossCurveFile(bad, "bad", Options{LogY: true}, Series{X: []float64{1}, Y: []float64{0}}); err == nil {
		t.Error("LossCurveFile of a zero on a log axis succeeded")
	}
	if _, err := os.Stat(bad); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LossCurveFile with bad arguments left a file behind (stat: %v)", err)
	}

	missing := filepath.Join(dir, "missing", "loss.png")
	err = LossCurveFile(missing, "x", Options{}, s)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("LossCurveFile(%s) = %v, want a wrapped fs.ErrNotExist naming the path", missing, err)
	}
}

// BenchmarkLossCurve is what Train draws at the end of a long run: the
// per-step loss and its moving average, n steps each.
func BenchmarkLossCurve(b *testing.B) {
	for _, n := range []int{1875, 100000} {
		b.Run(fmt.Sprintf("steps=%d", n), func(b *testing.B) {
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
			var buf bytes.Buffer
			for b.Loop() {
				buf.Reset()
				if err := LossCurve(&buf, "bench", Options{}, raw, avg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
