package render

import (
	"image"
	"image/color"
	"math"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// face is the font of all text: 7 pixels wide, 13 high, ascent 11.
var face = basicfont.Face7x13

const (
	fontAscent = 11
	fontHeight = 13
)

// canvas is an RGBA image with the few drawing primitives the plot needs.
type canvas struct {
	img *image.RGBA
}

func newCanvas(w, h int, bg color.RGBA) *canvas {
	c := &canvas{img: image.NewRGBA(image.Rect(0, 0, w, h))}
	c.fill(c.img.Rect, bg)
	return c
}

// set colours the pixel (x, y) if it is on the canvas.
func (c *canvas) set(x, y int, col color.RGBA) {
	if !(image.Point{x, y}.In(c.img.Rect)) {
		return
	}
	i := c.img.PixOffset(x, y)
	p := c.img.Pix[i : i+4 : i+4]
	p[0], p[1], p[2], p[3] = col.R, col.G, col.B, col.A
}

// at returns the colour of the pixel (x, y).
func (c *canvas) at(x, y int) color.RGBA {
	return c.img.RGBAAt(x, y)
}

// fill colours the rectangle r (clipped to the canvas).
func (c *canvas) fill(r image.Rectangle, col color.RGBA) {
	r = r.Intersect(c.img.Rect)
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			c.set(x, y, col)
		}
	}
}

// outline draws the one-pixel border just inside r.
func (c *canvas) outline(r image.Rectangle, col color.RGBA) {
	c.fill(image.Rect(r.Min.X, r.Min.Y, r.Max.X, r.Min.Y+1), col)
	c.fill(image.Rect(r.Min.X, r.Max.Y-1, r.Max.X, r.Max.Y), col)
	c.fill(image.Rect(r.Min.X, r.Min.Y, r.Min.X+1, r.Max.Y), col)
	c.fill(image.Rect(r.Max.X-1, r.Min.Y, r.Max.X, r.Max.Y), col)
}

// textWidth is the width in pixels of s in the plot font.
func textWidth(s string) int {
	return font.MeasureString(face, s).Ceil()
}

// text draws s with its left end at x and its baseline at y.
func (c *canvas) text(x, y int, s string, col color.RGBA) {
	d := font.Drawer{
		Dst:  c.img,
		Src:  image.NewUniform(col),
		Face: face,
		Dot:  fixed.P(x, y),
	}
	d.DrawString(s)
}

// textUp draws s rotated a quarter turn anticlockwise, so that it reads
// from bottom to top. (x, y) is the bottom left corner of the rotated text:
// the tops of the letters face left and the text occupies x..x+fontHeight-1.
func (c *canvas) textUp(x, y int, s string, col color.RGBA) {
	w := textWidth(s)
	if w <= 0 {
		return
	}
	mask := image.NewAlpha(image.Rect(0, 0, w, fontHeight))
	d := font.Drawer{Dst: mask, Src: image.Opaque, Face: face, Dot: fixed.P(0, fontAscent)}
	d.DrawString(s)
	for my := 0; my < fontHeight; my++ {
		for mx := 0; mx < w; mx++ {
			if mask.AlphaAt(mx, my).A >= 0x80 {
				c.set(x+my, y-mx, col)
			}
		}
	}
}

// pen draws lines of one colour and width, clipped to a rectangle.
type pen struct {
	c     *canvas
	clip  image.Rectangle
	col   color.RGBA
	width int
}

// dot draws one pen-sized dot with its top left corner at (x, y).
func (p *pen) dot(x, y int) {
	for dy := 0; dy < p.width; dy++ {
		for dx := 0; dx < p.width; dx++ {
			if (image.Point{x + dx, y + dy}).In(p.clip) {
				p.c.set(x+dx, y+dy, p.col)
			}
		}
	}
}

// line draws the segment from (x0, y0) to (x1, y1), in pixel coordinates
// that may lie far outside the clip rectangle. The segment is first cut to
// the clip rectangle (Liang-Barsky), then drawn with Bresenham's algorithm,
// so a line is continuous and its cost is bounded by the clip size.
func (p *pen) line(x0, y0, x1, y1 float64) {
	minX, minY := float64(p.clip.Min.X), float64(p.clip.Min.Y)
	maxX, maxY := float64(p.clip.Max.X-1), float64(p.clip.Max.Y-1)
	dx, dy := x1-x0, y1-y0
	t0, t1 := 0.0, 1.0
	// Each edge: the segment is inside where q - p*t >= 0.
	for _, e := range [4][2]float64{
		{-dx, x0 - minX},
		{dx, maxX - x0},
		{-dy, y0 - minY},
		{dy, maxY - y0},
	} {
		pp, q := e[0], e[1]
		if pp == 0 {
			if q < 0 {
				return // parallel to this edge and outside it
			}
			continue
		}
		t := q / pp
		if pp < 0 {
			if t > t1 {
				return
			}
			t0 = math.Max(t0, t)
		} else {
			if t < t0 {
				return
			}
			t1 = math.Min(t1, t)
		}
	}
	ax, ay := round(x0+t0*dx), round(y0+t0*dy)
	bx, by := round(x0+t1*dx), round(y0+t1*dy)
	p.bresenham(ax, ay, bx, by)
}

func round(v float64) int { return int(math.Floor(v + 0.5)) }

// bresenham draws the integer segment from (x0, y0) to (x1, y1), both ends
// included.
func (p *pen) bresenham(x0, y0, x1, y1 int) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := 1, 1
	if x0 > x1 {
		sx = -1
	}
	if y0 > y1 {
		sy = -1
	}
	e := dx + dy
	for {
		p.dot(x0, y0)
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * e
		if e2 >= dy {
			e += dy
			x0 += sx
		}
		if e2 <= dx {
			e += dx
			y0 += sy
		}
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}
