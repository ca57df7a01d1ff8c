// Package render draws the PNG outputs of a training run: a grid of
// grayscale sample images (Grid, GridFile) and a line plot of the training
// loss (LossCurve, LossCurveFile).
//
// Everything is drawn with the standard library image packages and the
// fixed 7x13 bitmap font of golang.org/x/image/font/basicfont, so output is
// deterministic: the same input always gives the same bytes.
//
// # Sample grids
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
// LossCurve draws an 800x500 line plot on a white background with a title,
// axes with tick marks at round steps (1, 2 or 5 times a power of ten),
// light grid lines, axis labels "step" and "loss (nats/image)" and a legend.
// Series take colours from a fixed ten-colour palette in order (cycling
// after ten) and are drawn in order, 2 pixels wide, without anti-aliasing;
// the legend goes in the corner of the plot that hides the least data.
// Points with a non-finite X or Y break the line, and a point joined to no
// other is drawn as a small square. Dense series are drawn column by column:
// all consecutive points that fall into one pixel column become one vertical
// stroke from their lowest to their highest value, joined to the
// neighbouring columns, which looks the same as drawing every segment but
// costs O(points + pixels); 100,000 points take a few tens of milliseconds.
//
// The x axis spans the data exactly. The y axis starts a little (3% of the
// range) below the smallest loss and, normally, ends as far above the
// largest. A freshly initialised model's first losses can be many times the
// trained ones (about 543 against 80 nats per image on MNIST), which would
// squash the interesting part of the curve into a thin band at the bottom.
// So the top of the y axis is capped at the 99th percentile of all plotted
// Y values plus 10% of the range below it, but only when that cap is less
// than half of the uncapped range, that is, when the few largest values
// would otherwise take over half the height. The percentile is the
// nearest-rank one, so with fewer than 100 points it is the maximum and
// nothing is capped. The bottom is never cut. Lines running above the cap
// leave the top of the plot, and a note under the title says how many
// points lie above it.
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
