package render

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"slices"
	"strconv"
)

// Series is one line of a plot.
type Series struct {
	Name string
	X, Y []float64
}

// Size of a loss plot in pixels.
const (
	PlotWidth  = 800
	PlotHeight = 500
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
	gridColor = color.RGBA{230, 230, 230, 255}
	noteColor = color.RGBA{110, 110, 110, 255}
	boxColor  = color.RGBA{170, 170, 170, 255}
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

// LossCurve writes a PlotWidth x PlotHeight line plot of the series as a
// PNG to w; see the package comment for what it shows and how the y range
// is chosen. At least one series must have a point with finite X and Y,
// and every series must have as many X as Y values.
func LossCurve(w io.Writer, title string, series ...Series) error {
	if w == nil {
		return errNilWriter
	}
	img, err := lossImage(title, series)
	if err != nil {
		return err
	}
	if err := png.Encode(w, img); err != nil {
		return fmt.Errorf("render: loss curve: %w", err)
	}
	return nil
}

// LossCurveFile writes the PNG plot of LossCurve to path.
func LossCurveFile(path, title string, series ...Series) error {
	return writeFile(path, func(w io.Writer) error {
		return LossCurve(w, title, series...)
	})
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// axisRange is the data range an axis shows.
type axisRange struct{ lo, hi float64 }

// dataRanges checks the series and returns the ranges the axes show, and
// how many points lie above the top of the y axis when it is capped. The y
// range has a 3% margin below, and above unless it is capped.
func dataRanges(series []Series) (x, y axisRange, above int, err error) {
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
	for _, s := range series {
		for i, xv := range s.X {
			yv := s.Y[i]
			if !finite(xv) || !finite(yv) {
				continue
			}
			x.lo, x.hi = math.Min(x.lo, xv), math.Max(x.hi, xv)
			ys = append(ys, yv)
		}
	}
	if len(ys) == 0 {
		return x, y, 0, fmt.Errorf("render: loss curve: no point has a finite X and Y")
	}
	y, above = yRange(ys)
	x = x.widen(0, 0)
	if above > 0 {
		y = y.widen(0.03, 0) // the cap is the top
	} else {
		y = y.widen(0.03, 0.03)
	}
	if !finite(x.hi-x.lo) || !finite(y.hi-y.lo) {
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

// niceStep returns the smallest step of the form 1, 2 or 5 times a power
// of ten that is at least raw (raw > 0).
func niceStep(raw float64) float64 {
	base := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if s := m * base; s >= raw*(1-1e-9) {
			return s
		}
	}
	return 10 * base
}

// ticks returns the multiples of a nice step within r, about target of
// them (at least one step's worth), and the step.
func ticks(r axisRange, target int) ([]float64, float64) {
	step := niceStep((r.hi - r.lo) / float64(max(target, 1)))
	first := math.Ceil(r.lo/step - 1e-9)
	var vs []float64
	for i := 0.0; i <= 1000; i++ { // bounded, whatever rounding does
		v := (first + i) * step
		if v > r.hi+step*1e-9 {
			break
		}
		if math.Abs(v) < step*1e-9 {
			v = 0 // no "-0"
		}
		vs = append(vs, v)
	}
	return vs, step
}

// tickLabel formats a tick value with just enough decimals for step.
func tickLabel(v, step float64) string {
	dec := 0
	if step < 1 {
		dec = int(math.Ceil(-math.Log10(step) - 1e-9))
	}
	if math.Abs(v) >= 1e7 || dec > 6 {
		return strconv.FormatFloat(v, 'g', 4, 64)
	}
	return strconv.FormatFloat(v, 'f', dec, 64)
}

func tickLabels(vs []float64, step float64) ([]string, int) {
	ls := make([]string, len(vs))
	w := 0
	for i, v := range vs {
		ls[i] = tickLabel(v, step)
		w = max(w, textWidth(ls[i]))
	}
	return ls, w
}

// Layout of a loss plot, in pixels.
const (
	titleBaseline = 22
	noteBaseline  = 38
	plotTop       = 46
	plotBottom    = PlotHeight - 48 // one past the last row of the data area
	plotRight     = PlotWidth - 24  // one past the last column
	tickLen       = 5
	lineWidth     = 2
)

// mapper converts data coordinates to pixel coordinates in area.
type mapper struct {
	area image.Rectangle
	x, y axisRange
}

func (m mapper) px(x float64) float64 {
	return float64(m.area.Min.X) + (x-m.x.lo)/(m.x.hi-m.x.lo)*float64(m.area.Dx()-1)
}

func (m mapper) py(y float64) float64 {
	v := float64(m.area.Max.Y-1) - (y-m.y.lo)/(m.y.hi-m.y.lo)*float64(m.area.Dy()-1)
	// Keep far-away points finite; the clipped line barely changes.
	return math.Max(-1e9, math.Min(1e9, v))
}

func lossImage(title string, series []Series) (*image.RGBA, error) {
	xr, yr, above, err := dataRanges(series)
	if err != nil {
		return nil, err
	}

	// Y ticks first: their labels' width decides the left margin.
	yTicks, yStep := ticks(yr, (plotBottom-plotTop)/60)
	yLabels, yLabelW := tickLabels(yTicks, yStep)
	left := 10 + fontHeight + 10 + yLabelW + 4 + tickLen
	area := image.Rect(left, plotTop, plotRight, plotBottom)
	m := mapper{area: area, x: xr, y: yr}

	// X ticks: as many as fit without their labels touching.
	var xTicks []float64
	var xLabels []string
	for target := area.Dx() / 80; ; target-- {
		var step float64
		var w int
		xTicks, step = ticks(xr, target)
		xLabels, w = tickLabels(xTicks, step)
		if target <= 2 || len(xTicks) < 2 || m.px(xTicks[1])-m.px(xTicks[0]) >= float64(w+12) {
			break
		}
	}

	c := newCanvas(PlotWidth, PlotHeight, white)

	// Grid lines.
	for _, v := range xTicks {
		x := round(m.px(v))
		c.fill(image.Rect(x, area.Min.Y, x+1, area.Max.Y), gridColor)
	}
	for _, v := range yTicks {
		y := round(m.py(v))
		c.fill(image.Rect(area.Min.X, y, area.Max.X, y+1), gridColor)
	}

	// Data.
	for i, s := range series {
		p := &pen{c: c, clip: area, col: seriesColor(i), width: lineWidth}
		drawSeries(p, m, s)
	}

	drawLegend(c, area, series)

	// Frame, just outside the data area, and ticks.
	c.outline(area.Inset(-1), black)
	for i, v := range xTicks {
		x := round(m.px(v))
		c.fill(image.Rect(x, area.Max.Y+1, x+1, area.Max.Y+1+tickLen), black)
		l := xLabels[i]
		c.text(x-textWidth(l)/2, area.Max.Y+1+tickLen+2+fontAscent, l, black)
	}
	for i, v := range yTicks {
		y := round(m.py(v))
		c.fill(image.Rect(area.Min.X-1-tickLen, y, area.Min.X-1, y+1), black)
		l := yLabels[i]
		c.text(area.Min.X-1-tickLen-4-textWidth(l), y+fontAscent/2, l, black)
	}

	// Axis labels, title and the note about the capped y axis.
	c.text(area.Min.X+(area.Dx()-textWidth(xLabel))/2, PlotHeight-8, xLabel, black)
	c.textUp(10, area.Min.Y+(area.Dy()+textWidth(yLabel))/2, yLabel, black)
	c.text((PlotWidth-textWidth(title))/2, titleBaseline, title, black)
	if above > 0 {
		pts := "points"
		if above == 1 {
			pts = "point"
		}
		note := fmt.Sprintf("y axis capped near the %gth percentile: %d %s above", capQuantile*100, above, pts)
		c.text(area.Max.X-textWidth(note), noteBaseline, note, noteColor)
	}
	return c.img, nil
}

// drawSeries draws s as a polyline, one pixel column at a time: all
// consecutive points in one column become one vertical stroke from their
// lowest to their highest value, joined from the previous column's last
// point to the next column's first. A point with a non-finite coordinate
// breaks the line; a point on its own is drawn as a small square.
func drawSeries(p *pen, m mapper, s Series) {
	var (
		active       bool
		joined       bool    // the current run is joined to the previous one
		col          int     // pixel column of the current run
		lastX, lastY float64 // the run's last point
		lo, hi       float64 // the run's y extent
	)
	// flush draws the current run; joinNext says whether a line to the
	// next point follows. A run that is joined to nothing and is a single
	// pixel high is an isolated point, and is drawn as a square marker so
	// that it can be seen.
	flush := func(joinNext bool) {
		if !active {
			return
		}
		if !joined && !joinNext && hi-lo < 1 {
			const r = 2
			x, y := float64(col), (lo+hi)/2
			for d := -r; d <= r; d++ {
				p.line(x-r, y+float64(d), x+r, y+float64(d))
			}
			return
		}
		p.line(float64(col), lo, float64(col), hi)
	}
	for i, xv := range s.X {
		yv := s.Y[i]
		if !finite(xv) || !finite(yv) {
			flush(false)
			active = false
			continue
		}
		x, y := m.px(xv), m.py(yv)
		cx := round(x)
		if active && cx == col {
			lastX, lastY = x, y
			lo, hi = math.Min(lo, y), math.Max(hi, y)
			continue
		}
		if active {
			flush(true)
			p.line(lastX, lastY, x, y)
		}
		joined = active
		active, col = true, cx
		lastX, lastY, lo, hi = x, y, y, y
	}
	flush(false)
}

// drawLegend draws a box with a colour swatch and the name of every series
// in the corner of area that hides the fewest data pixels.
func drawLegend(c *canvas, area image.Rectangle, series []Series) {
	const (
		margin  = 8
		padding = 6
		swatch  = 24
		rowH    = 16
	)
	names := make([]string, len(series))
	nameW := 0
	for i, s := range series {
		names[i] = s.Name
		if names[i] == "" {
			names[i] = fmt.Sprintf("series %d", i+1)
		}
		nameW = max(nameW, textWidth(names[i]))
	}
	size := image.Pt(padding+swatch+padding+nameW+padding, padding+len(series)*rowH+padding-(rowH-fontHeight))
	corners := []image.Point{
		{area.Max.X - margin - size.X, area.Min.Y + margin}, // top right
		{area.Min.X + margin, area.Min.Y + margin},          // top left
		{area.Max.X - margin - size.X, area.Max.Y - margin - size.Y},
		{area.Min.X + margin, area.Max.Y - margin - size.Y},
	}
	best, bestCount := 0, -1
	for i, pt := range corners {
		r := image.Rectangle{pt, pt.Add(size)}.Intersect(area)
		n := 0
		for y := r.Min.Y; y < r.Max.Y; y++ {
			for x := r.Min.X; x < r.Max.X; x++ {
				if col := c.at(x, y); col != white && col != gridColor {
					n++
				}
			}
		}
		if bestCount < 0 || n < bestCount {
			best, bestCount = i, n
		}
	}
	box := image.Rectangle{corners[best], corners[best].Add(size)}
	c.fill(box, white)
	c.outline(box, boxColor)
	for i, name := range names {
		top := box.Min.Y + padding + i*rowH
		mid := top + fontHeight/2
		c.fill(image.Rect(box.Min.X+padding, mid-1, box.Min.X+padding+swatch, mid+2), seriesColor(i))
		c.text(box.Min.X+padding+swatch+padding, top+fontAscent, name, black)
	}
}
