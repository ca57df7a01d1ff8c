// Package render draws the PNG outputs of a training run: a grid of
// grayscale sample images (Grid, GridFile) and a plot of the loss
// (LossCurve, LossCurveFile).
//
// # Sample grids
//
// Grids are drawn by hand on an image.Gray (the standard library's image
// and image/png): a grid is nothing but copied and scaled pixels, so the
// output is exact and deterministic, which its tests check pixel by pixel.
//
// Grid lays n images of rows x cols pixels out left to right, top to bottom,
// in a grid of ceil(sqrt(n)) columns and as many rows as needed. Cells are
// separated by pad pixels of mid grey (128); there is no border around the
// outside. Unused cells of the last row are mid grey too. A value v becomes
// the gray level round(255*v) after clamping to [0, 1]; NaN is drawn as 0
// (black). GridScaled also enlarges every image pixel to a scale x scale
// block, which makes 28x28 samples easier to look at.
//
// # Loss plots
//
// Loss plots are drawn with gonum.org/v1/plot (rasterised by its vgimg
// backend, text in the Liberation Sans font it embeds, so no system fonts
// are needed and the binary stays static). LossCurve draws a PlotWidth x
// PlotHeight (800x500) plot on a white background: a title, axes labelled
// "step" and "loss (nats/image)" with light grid lines at the major ticks,
// and a legend in the top right corner. Series take colours from a fixed
// ten-colour palette in order (cycling after ten) and are drawn in order:
// as a line, or, with Series.Marks, as round marks joined by a thin line
// (the test loss, known at a few steps). Points with a non-finite X or Y
// break the line, and a point of a line joined to no other is drawn as a
// small square. The same input gives the same bytes.
//
// The x axis spans the data exactly. The linear y axis starts a little (3%
// of the range) below the smallest loss and, normally, ends as far above
// the largest. A freshly initialised model's first losses can be many
// times the trained ones (about 543 against 80 nats per image on MNIST),
// which would squash the interesting part of the curve into a thin band
// at the bottom. So the top of the y axis is capped at the 99th percentile
// of all plotted Y values plus 10% of the range below it, but only when
// that cap is less than half of the uncapped range, that is, when the few
// largest values would otherwise take over half the height. The percentile
// is the nearest-rank one, so with fewer than 100 points it is the maximum
// and nothing is capped. The bottom is never cut. Lines running above the
// cap leave the top of the plot, and a second title line says how many
// points lie above it.
//
// With Options.LogY the y axis is logarithmic instead, spans all the data
// (3% of its decades either side, no cap) and is labelled at 1, 2 and 5
// times powers of ten. A log axis cannot show zero or negative values:
// LossCurve returns an error naming the first such point.
package render

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
)

// writeFile renders into memory with draw and writes the result to path, so
// that bad arguments never leave a file behind. The file is created (or
// truncated), written and closed, and the close error is returned; if
// writing fails, the partial file is removed.
func writeFile(path string, draw func(io.Writer) error) error {
	var buf bytes.Buffer
	if err := draw(&buf); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("render: create %s: %w", path, err)
	}
	if _, err := f.Write(buf.Bytes()); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("render: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("render: close %s: %w", path, err)
	}
	return nil
}

// errNilWriter is returned by the io.Writer variants when w is nil.
var errNilWriter = errors.New("render: nil io.Writer")
