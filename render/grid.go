package render

import (
	"fmt"
	"image"
	"image/png"
	"io"
	"math"
)

// padGray is the gray level of the padding between grid cells and of
// unused cells.
const padGray = 128

// maxGridPixels bounds the size of a grid image, so that absurd arguments
// give an error rather than an attempt to allocate terabytes.
const maxGridPixels = 1 << 28

// Grid writes n images of rows x cols pixels as a grayscale PNG grid to w.
// pix holds n*rows*cols values in [0, 1], image after image, each row-major;
// values beyond n*rows*cols are ignored. Values outside [0, 1] are clamped
// and NaN is drawn as 0. The grid has ceil(sqrt(n)) columns and pad
// pixels of mid grey between cells.
func Grid(w io.Writer, pix []float32, n, rows, cols, pad int) error {
	return GridScaled(w, pix, n, rows, cols, pad, 1)
}

// GridScaled is Grid with every image pixel drawn as a scale x scale block.
// pad is in output pixels and is not scaled.
func GridScaled(w io.Writer, pix []float32, n, rows, cols, pad, scale int) error {
	if w == nil {
		return errNilWriter
	}
	img, err := gridImage(pix, n, rows, cols, pad, scale)
	if err != nil {
		return err
	}
	if err := png.Encode(w, img); err != nil {
		return fmt.Errorf("render: grid: %w", err)
	}
	return nil
}

// GridFile writes the PNG grid of Grid to path.
func GridFile(path string, pix []float32, n, rows, cols, pad int) error {
	return writeFile(path, func(w io.Writer) error {
		return Grid(w, pix, n, rows, cols, pad)
	})
}

// GridScaledFile writes the PNG grid of GridScaled to path.
func GridScaledFile(path string, pix []float32, n, rows, cols, pad, scale int) error {
	return writeFile(path, func(w io.Writer) error {
		return GridScaled(w, pix, n, rows, cols, pad, scale)
	})
}

// gridColumns returns ceil(sqrt(n)) for n >= 1, computed exactly.
func gridColumns(n int) int {
	c := int(math.Sqrt(float64(n)))
	for c*c < n {
		c++
	}
	for c > 1 && (c-1)*(c-1) >= n {
		c--
	}
	return c
}

// grayLevel maps a value to a gray level: clamped to [0, 1], NaN as 0.
func grayLevel(v float32) uint8 {
	switch {
	case !(v > 0): // also NaN
		return 0
	case v >= 1:
		return 255
	}
	return uint8(v*255 + 0.5)
}

func gridImage(pix []float32, n, rows, cols, pad, scale int) (*image.Gray, error) {
	switch {
	case n < 1:
		return nil, fmt.Errorf("render: grid: n = %d images, want at least 1", n)
	case rows < 1 || cols < 1:
		return nil, fmt.Errorf("render: grid: image size %dx%d, want rows and cols at least 1", rows, cols)
	case pad < 0:
		return nil, fmt.Errorf("render: grid: pad = %d, want at least 0", pad)
	case scale < 1:
		return nil, fmt.Errorf("render: grid: scale = %d, want at least 1", scale)
	}
	// Check sizes before multiplying, so that nothing overflows.
	if rows > maxGridPixels/cols || n > maxGridPixels/(rows*cols) {
		return nil, fmt.Errorf("render: grid: %d images of %dx%d pixels is too large", n, rows, cols)
	}
	size := rows * cols
	if len(pix) < n*size {
		return nil, fmt.Errorf("render: grid: len(pix) = %d, want at least n*rows*cols = %d*%d*%d = %d",
			len(pix), n, rows, cols, n*size)
	}
	gc := gridColumns(n)
	gr := (n + gc - 1) / gc
	cellW, cellH := cols*scale, rows*scale
	width := float64(gc)*float64(cellW) + float64(gc-1)*float64(pad)
	height := float64(gr)*float64(cellH) + float64(gr-1)*float64(pad)
	if width*height > maxGridPixels {
		return nil, fmt.Errorf("render: grid: image would be %.0fx%.0f pixels, too large", width, height)
	}
	img := image.NewGray(image.Rect(0, 0, int(width), int(height)))
	for i := range img.Pix {
		img.Pix[i] = padGray
	}
	for k := 0; k < n; k++ {
		x0 := (k % gc) * (cellW + pad)
		y0 := (k / gc) * (cellH + pad)
		src := pix[k*size : (k+1)*size]
		for r := 0; r < rows; r++ {
			for sy := 0; sy < scale; sy++ {
				off := img.PixOffset(x0, y0+r*scale+sy)
				line := img.Pix[off : off+cellW]
				for c, v := range src[r*cols : (r+1)*cols] {
					g := grayLevel(v)
					for sx := 0; sx < scale; sx++ {
						line[c*scale+sx] = g
					}
				}
			}
		}
	}
	return img, nil
}
