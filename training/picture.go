package training

import (
	"fmt"
	"math/rand/v2"

	"github.com/gencluster/gencluster/dataset"
	"github.com/gencluster/gencluster/models"
)

// Picture is the pixels of a grid of N images of Rows x Cols, image after
// image, as render.Grid takes them.
type Picture struct {
	Pix           []float32
	N, Rows, Cols int
}

// Draw draws n images from m with the random numbers of rng. A generative
// model samples them; a model that reconstructs images
// (models.Reconstructor: the autoencoder) instead shows the first n
// images of set each beside its reconstruction, in cells of Rows x
// (2*Cols+1): the image, a mid-grey column, the reconstruction. progress,
// if not nil, is called as drawing goes: after each pixel position for a
// model that draws all images a pixel at a time (models.ProgressSampler,
// total = rows*cols), else once, with total 1, when all are drawn.
func Draw(m models.Model, n int, rng *rand.Rand, set *dataset.Images, progress func(done, total int)) (*Picture, error) {
	rows, cols := m.Rows(), m.Cols()
	if n < 1 {
		return nil, fmt.Errorf("draw: %d images", n)
	}
	if r, ok := m.(models.Reconstructor); ok {
		return reconstructions(m, r, n, set, progress)
	}
	pix := make([]float32, n*rows*cols)
	if ps, ok := m.(models.ProgressSampler); ok && progress != nil {
		ps.SampleProgress(pix, n, rng, progress)
	} else {
		m.Sample(pix, n, rng)
		if progress != nil {
			progress(1, 1)
		}
	}
	return &Picture{Pix: pix, N: n, Rows: rows, Cols: cols}, nil
}

// reconstructions is Draw for an autoencoder: the first n images of set
// (all of them if it has fewer), each beside r's reconstruction of it.
func reconstructions(m models.Model, r models.Reconstructor, n int, set *dataset.Images, progress func(done, total int)) (*Picture, error) {
	rows, cols := m.Rows(), m.Cols()
	if set == nil {
		return nil, fmt.Errorf("the %s model draws reconstructions of images, and no data set was given", m.Name())
	}
	if err := dataset.CheckShape(set, rows, cols); err != nil {
		return nil, err
	}
	n = min(n, set.N)
	dim := rows * cols
	x := make([]float32, n*dim)
	for i := 0; i < n; i++ {
		set.Pixels(i, x[i*dim:(i+1)*dim], models.GreyInput(m))
	}
	rec := make([]float32, n*dim)
	r.Reconstruct(rec, x, n)
	w := 2*cols + 1
	pix := make([]float32, n*rows*w)
	for i := 0; i < n; i++ {
		for y := 0; y < rows; y++ {
			line := pix[(i*rows+y)*w : (i*rows+y+1)*w]
			copy(line[:cols], x[i*dim+y*cols:i*dim+(y+1)*cols])
			line[cols] = 0.5
			copy(line[cols+1:], rec[i*dim+y*cols:i*dim+(y+1)*cols])
		}
	}
	if progress != nil {
		progress(1, 1)
	}
	return &Picture{Pix: pix, N: n, Rows: rows, Cols: w}, nil
}

// PictureImages is the set an autoencoder's pictures reconstruct: the
// test split of the data set named by spec, or its training split when it
// has no test split.
func PictureImages(spec string, m models.Model) (*dataset.Images, error) {
	set, err := dataset.Open(spec, dataset.Test)
	if err != nil {
		set, err = dataset.Open(spec, dataset.Train)
	}
	if err != nil {
		return nil, fmt.Errorf("images to reconstruct: %w", err)
	}
	if err := dataset.CheckShape(set, m.Rows(), m.Cols()); err != nil {
		return nil, err
	}
	return set, nil
}
