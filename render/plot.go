package render

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Series is one curve of a loss plot.
type Series struct {
	Name string
	X, Y []float64
	// Marks draws every point as a round mark, joined to its neighbours by
	// a thin line: for sparse series such as the test loss, evaluated at a
	// few steps. Otherwise the points are joined by a line only.
	Marks bool
}

// Options change how a loss plot is drawn.
type Options struct {
	// LogY puts the y axis on a log scale (base 10). Every plotted Y value
	// (finite X and Y) must then be positive; the outlier cap of the
	// linear axis is not applied.
	LogY bool
}

// Size of a loss plot in pixels, and the resolution it is drawn at.
const (
	PlotWidth  = 800
	PlotHeight = 500
	plotDPI    = 96
)

// Axis labels of a loss plot.
const (
	xLabel = "step"
	yLabel = "loss (nats/image)"
)

// The y axis cap (see the package comment): the top is at most the
// capQuantile quantile plus capMargin times the range below it, applied
// only when that is less than capMinGain of the uncapped range.
const (
	capQuantile = 0.99
	capMargin   = 0.10
	capMinGain  = 0.5
)

var (
	white     = color.RGBA{255, 255, 255, 255}
	black     = color.RGBA{0, 0, 0, 255}
	gridColor = color.RGBA{225, 225, 225, 255}
)

// palette holds the series colours, in order: blue, orange, green, red,
// purple, brown, pink, grey, olive, cyan. None of them is the background,
// grid, text or axis colour.
var palette = []color.RGBA{
	{31, 119, 180, 255},
	{255, 127, 14, 255},
	{44, 160, 44, 255},
	{214, 39, 40, 255},
	{148, 103, 189, 255},
	{140, 86, 75, 255},
	{227, 119, 194, 255},
	{127, 127, 127, 255},
	{188, 189, 34, 255},
	{23, 190, 207, 255},
}

// seriesColor returns the colour of the i'th series.
func seriesColor(i int) color.RGBA { return palette[i%len(palette)] }

// Line widths and mark sizes, in points (at plotDPI a point is 4/3 pixel).
const (
	lineWidth     = 1.5 // a series drawn as a line
	markLineWidth = 1   // the line joining a Marks series' points
	markRadius    = 3.5 // a Marks series' points
	dotRadius     = 2   // a point of a line series joined to no other
)

// LossCurve writes a PlotWidth x PlotHeight plot of the series as a PNG to
// w; see the package comment for what it shows and how the y range is
// chosen. At least one series must have a point with finite X and Y, and
// every series must have as many X as Y values. Nothing is written when
// the arguments are bad.
func LossCurve(w io.Writer, title string, opt Options, series ...Series) error {
	if w == nil {
		return errNilWriter
	}
	p, err := lossPlot(title, opt, series)
	if err != nil {
		return err
	}
	c, err := drawPlot(p)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: c}).WriteTo(w); err != nil {
		return fmt.Errorf("render: loss curve: %w", err)
	}
	return nil
}

// LossCurveFile writes the PNG plot of LossCurve to path.
func LossCurveFile(path, title string, opt Options, series ...Series) error {
	return writeFile(path, func(w io.Writer) error {
		return LossCurve(w, title, opt, series...)
	})
}

// drawPlot draws p on a new canvas. gonum/plot panics on some inputs (a
// log axis given a non-positive value, a degenerate range); lossPlot
// checks for those first, and anything it missed becomes an error here
// rather than a crash.
func drawPlot(p *plot.Plot) (c *vgimg.Canvas, err error) {
	defer func() {
		if r := recover(); r != nil {
			c, err = nil, fmt.Errorf("render: loss curve: plot: %v", r)
		}
	}()
	c = newCanvas()
	p.Draw(draw.New(c))
	return c, nil
}

// newCanvas is the blank PlotWidth x PlotHeight image a plot is drawn on.
func newCanvas() *vgimg.Canvas {
	return vgimg.NewWith(
		vgimg.UseWH(PlotWidth*vg.Inch/plotDPI, PlotHeight*vg.Inch/plotDPI),
		vgimg.UseDPI(plotDPI),
		vgimg.UseBackgroundColor(white),
	)
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// sans is the plot's font (Liberation Sans, embedded in gonum/plot).
func sans(size vg.Length) font.Font {
	return font.Font{Typeface: "Liberation", Variant: "Sans", Size: size}
}

// lossPlot checks the series and builds the plot.
func lossPlot(title string, opt Options, series []Series) (*plot.Plot, error) {
	xr, yr, above, err := dataRanges(series, opt.LogY)
	if err != nil {
		return nil, err
	}
	p := plot.New()
	p.BackgroundColor = white
	if above > 0 {
		pts := "points"
		if above == 1 {
			pts = "point"
		}
		title += fmt.Sprintf("\n(y axis capped near the %gth percentile: %d %s above)", capQuantile*100, above, pts)
	}
	p.Title.Text = title
	p.Title.TextStyle.Font = sans(14)
	p.Title.Padding = vg.Points(6)
	p.X.Label.Text, p.Y.Label.Text = xLabel, yLabel
	for _, a := range []*plot.Axis{&p.X, &p.Y} {
		a.Label.TextStyle.Font = sans(12)
		a.Tick.Label.Font = sans(10)
	}
	p.X.Tick.Marker = plainTicks{}
	p.Y.Tick.Marker = plainTicks{}
	if opt.LogY {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = logTicks{}
	}
	p.Legend.Top = true
	p.Legend.TextStyle.Font = sans(11)
	p.Legend.XOffs, p.Legend.YOffs = -vg.Points(8), -vg.Points(6)

	grid := plotter.NewGrid()
	grid.Vertical = draw.LineStyle{Color: gridColor, Width: vg.Points(0.75)}
	grid.Horizontal = grid.Vertical
	p.Add(grid)
	for i, s := range series {
		thumbs, err := addSeries(p, s, seriesColor(i), xr)
		if err != nil {
			return nil, fmt.Errorf("render: loss curve: series %d (%q): %w", i, s.Name, err)
		}
		name := s.Name
		if name == "" {
			name = fmt.Sprintf("series %d", i+1)
		}
		p.Legend.Add(name, thumbs...)
	}
	// Last: Add widens the axes to every plotter's data.
	p.X.Min, p.X.Max = xr.lo, xr.hi
	p.Y.Min, p.Y.Max = yr.lo, yr.hi
	return p, nil
}

// addSeries adds s to p, drawn in col, and returns its legend thumbnails.
// Non-finite points break the line into pieces; a piece of one point of a
// line series is drawn as a small dot, so that it can be seen. Long pieces
// of a line series are thinned to what their pixel columns show (thin),
// xr being the x axis range.
func addSeries(p *plot.Plot, s Series, col color.RGBA, xr axisRange) ([]plot.Thumbnailer, error) {
	style := draw.LineStyle{Color: col, Width: vg.Points(lineWidth)}
	if s.Marks {
		style.Width = vg.Points(markLineWidth)
	}
	var all plotter.XYs // the finite points, for the marks
	var lone plotter.XYs
	for _, piece := range pieces(s) {
		all = append(all, piece...)
		if len(piece) == 1 && !s.Marks {
			lone = append(lone, piece...)
			continue
		}
		if !s.Marks && len(piece) > thinAbove {
			piece = thin(piece, xr, PlotWidth)
		}
		for _, c := range chunks(piece, strokePoints) {
			l, err := plotter.NewLine(c)
			if err != nil {
				return nil, err
			}
			l.LineStyle = style
			p.Add(l)
		}
	}
	thumb := &plotter.Line{LineStyle: style}
	if len(lone) > 0 {
		dots, err := plotter.NewScatter(lone)
		if err != nil {
			return nil, err
		}
		dots.GlyphStyle = draw.GlyphStyle{Color: col, Radius: vg.Points(dotRadius), Shape: draw.BoxGlyph{}}
		p.Add(dots)
	}
	if !s.Marks {
		return []plot.Thumbnailer{thumb}, nil
	}
	marks, err := plotter.NewScatter(all)
	if err != nil {
		return nil, err
	}
	marks.GlyphStyle = draw.GlyphStyle{Color: col, Radius: vg.Points(markRadius), Shape: draw.CircleGlyph{}}
	p.Add(marks)
	return []plot.Thumbnailer{thumb, marks}, nil
}

// pieces splits s at its points with a non-finite coordinate.
func pieces(s Series) []plotter.XYs {
	var ps []plotter.XYs
	var cur plotter.XYs
	for i, x := range s.X {
		y := s.Y[i]
		if !finite(x) || !finite(y) {
			if len(cur) > 0 {
				ps = append(ps, cur)
			}
			cur = nil
			continue
		}
		cur = append(cur, plotter.XY{X: x, Y: y})
	}
	if len(cur) > 0 {
		ps = append(ps, cur)
	}
	return ps
}

// thinAbove is the number of points above which a line is thinned: four
// points for every pixel column of the image.
var thinAbove = 4 * PlotWidth

// thin returns the points of a line that a plot bins columns wide can
// show: of every run of consecutive points that fall into one of bins
// equal slices of the x range r, the first, the lowest, the highest and
// the last, in their order. The line through those covers the same pixels
// as the line through all of them (each column's vertical extent and the
// joins to its neighbours), and a loss curve of 100,000 steps draws in
// the time of a few thousand (BenchmarkLossCurve: 0.66 s unthinned, 0.14 s
// thinned, for 2 x 100,000 points).
func thin(pts plotter.XYs, r axisRange, bins int) plotter.XYs {
	scale := float64(bins) / (r.hi - r.lo)
	bin := func(x float64) int { return min(bins-1, max(0, int((x-r.lo)*scale))) }
	out := make(plotter.XYs, 0, 4*bins)
	for i := 0; i < len(pts); {
		b := bin(pts[i].X)
		j, lo, hi := i+1, i, i
		for j < len(pts) && bin(pts[j].X) == b {
			if pts[j].Y < pts[lo].Y {
				lo = j
			}
			if pts[j].Y > pts[hi].Y {
				hi = j
			}
			j++
		}
		keep := [4]int{i, lo, hi, j - 1}
		slices.Sort(keep[:])
		for k, idx := range keep {
			if k == 0 || idx != keep[k-1] {
				out = append(out, pts[idx])
			}
		}
		i = j
	}
	return out
}

// strokePoints is the most points one stroke of a line joins. gonum/plot
// strokes a line as one path, and its rasteriser (golang/freetype's) keeps
// each pixel row's cells in a list it searches linearly, so the time grows
// with the square of the cells one path puts in a row: a noisy loss curve
// of 3,000 points (100,000 thinned) in one stroke took 30 s, in strokes of
// 64 points 0.14 s.
var strokePoints = 64

// chunks splits a line into pieces of at most n points, each starting at
// the previous one's last point, so that together they draw the same line.
func chunks(pts plotter.XYs, n int) []plotter.XYs {
	var cs []plotter.XYs
	for len(pts) > n {
		cs = append(cs, pts[:n])
		pts = pts[n-1:]
	}
	return append(cs, pts)
}

// axisRange is the data range an axis shows.
type axisRange struct{ lo, hi float64 }

// dataRanges checks the series and returns the ranges the axes show, and
// how many points lie above the top of the y axis when it is capped. The
// linear y range has a 3% margin below, and above unless it is capped; the
// log one 3% of its decades either side.
func dataRanges(series []Series, logY bool) (x, y axisRange, above int, err error) {
	if len(series) == 0 {
		return x, y, 0, fmt.Errorf("render: loss curve: no series")
	}
	total := 0
	for i, s := range series {
		if len(s.X) != len(s.Y) {
			return x, y, 0, fmt.Errorf("render: loss curve: series %d (%q) has %d X values but %d Y values",
				i, s.Name, len(s.X), len(s.Y))
		}
		total += len(s.X)
	}
	if total == 0 {
		return x, y, 0, fmt.Errorf("render: loss curve: all %d series are empty", len(series))
	}
	ys := make([]float64, 0, total)
	x = axisRange{math.Inf(1), math.Inf(-1)}
	for i, s := range series {
		for j, xv := range s.X {
			yv := s.Y[j]
			if !finite(xv) || !finite(yv) {
				continue
			}
			if logY && yv <= 0 {
				return x, y, 0, fmt.Errorf("render: loss curve: a log-scale y axis needs positive values, but series %d (%q) has y = %g at x = %g",
					i, s.Name, yv, xv)
			}
			x.lo, x.hi = math.Min(x.lo, xv), math.Max(x.hi, xv)
			ys = append(ys, yv)
		}
	}
	if len(ys) == 0 {
		return x, y, 0, fmt.Errorf("render: loss curve: no point has a finite X and Y")
	}
	x = x.widen(0, 0)
	if logY {
		slices.Sort(ys)
		y = logRange(ys[0], ys[len(ys)-1])
	} else {
		y, above = yRange(ys)
		if above > 0 {
			y = y.widen(0.03, 0) // the cap is the top
		} else {
			y = y.widen(0.03, 0.03)
		}
	}
	if !finite(x.hi-x.lo) || !finite(y.hi-y.lo) || (logY && !(y.lo > 0)) {
		return x, y, 0, fmt.Errorf("render: loss curve: data range [%g, %g] x [%g, %g] is too wide to plot",
			x.lo, x.hi, y.lo, y.hi)
	}
	return x, y, above, nil
}

// yRange returns the y range of the values ys (all finite, at least one),
// capped at a high quantile as the package comment describes, and the
// number of values above the cap. ys is sorted in place.
func yRange(ys []float64) (axisRange, int) {
	slices.Sort(ys)
	lo, hi := ys[0], ys[len(ys)-1]
	// Nearest-rank quantile: the smallest value with at least capQuantile
	// of the values at or below it.
	k := int(math.Ceil(capQuantile*float64(len(ys)))) - 1
	k = max(0, min(k, len(ys)-1))
	top := ys[k] + capMargin*(ys[k]-lo)
	if top-lo >= capMinGain*(hi-lo) {
		return axisRange{lo, hi}, 0
	}
	above := len(ys) - 1
	for above >= 0 && ys[above] > top {
		above--
	}
	return axisRange{lo, top}, len(ys) - 1 - above
}

// widen turns an empty or one-value range into a usable one, and adds
// fracLo and fracHi of the span below and above.
func (r axisRange) widen(fracLo, fracHi float64) axisRange {
	if r.hi <= r.lo {
		d := math.Max(math.Abs(r.lo)*0.1, 1)
		return axisRange{r.lo - d, r.hi + d}
	}
	span := r.hi - r.lo
	return axisRange{r.lo - fracLo*span, r.hi + fracHi*span}
}

// logRange is the log axis range of positive values lo..hi: 3% of the
// decades either side, or a factor of two either side of a single value.
func logRange(lo, hi float64) axisRange {
	if hi <= lo {
		return axisRange{lo / 2, hi * 2}
	}
	f := math.Pow(hi/lo, 0.03)
	return axisRange{lo / f, hi * f}
}

// plainTicks are gonum's default ticks (plot.DefaultTicks) with labels of
// as few digits as their values need: "250", not "250.00".
type plainTicks struct{}

func (plainTicks) Ticks(lo, hi float64) []plot.Tick {
	ts := plot.DefaultTicks{}.Ticks(lo, hi)
	for i, t := range ts {
		if t.Label != "" {
			ts[i].Label = tickLabel(t.Value)
		}
	}
	return ts
}

// tickLabel formats v in at most six significant digits, without an
// exponent below 1e15.
func tickLabel(v float64) string {
	s := strconv.FormatFloat(v, 'g', 6, 64)
	if strings.ContainsRune(s, 'e') && math.Abs(v) >= 1 && math.Abs(v) < 1e15 {
		s = strconv.FormatFloat(v, 'f', 0, 64)
	}
	return s
}

// logTicks marks a log axis: labels at 1, 2 and 5 times powers of ten (at
// every integer times a power of ten when that gives fewer than three
// labels in the range), unlabelled ticks at the other integers times
// powers of ten. gonum's plot.LogTicks labels powers of ten only, which
// leaves a loss curve spanning less than a decade (543 down to 80 nats)
// with one label or none.
type logTicks struct{}

func (logTicks) Ticks(lo, hi float64) []plot.Tick {
	if !(lo > 0) || !(hi > lo) {
		return nil
	}
	var vs []float64
	var ms []int
	for k := math.Floor(math.Log10(lo)); k <= math.Ceil(math.Log10(hi)); k++ {
		for m := 1; m <= 9; m++ {
			v := float64(m) * math.Pow(10, k)
			if k < 0 {
				v = float64(m) / math.Pow(10, -k) // 0.3, not 0.30000000000000004
			}
			if v >= lo*(1-1e-12) && v <= hi*(1+1e-12) {
				vs, ms = append(vs, min(max(v, lo), hi)), append(ms, m)
			}
		}
	}
	major := func(m int) bool { return m == 1 || m == 2 || m == 5 }
	if n := len(slices.DeleteFunc(slices.Clone(ms), func(m int) bool { return !major(m) })); n < 3 {
		major = func(int) bool { return true }
	}
	ticks := make([]plot.Tick, len(vs))
	for i, v := range vs {
		ticks[i].Value = v
		if major(ms[i]) {
			ticks[i].Label = tickLabel(v)
		}
	}
	return ticks
}
