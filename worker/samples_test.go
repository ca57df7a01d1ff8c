package worker

import (
	"bytes"
	"image"
	"image/png"
	"math/rand/v2"
	"strings"
	"testing"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
	"github.com/gencluster/gencluster/checkpoint"
	"github.com/gencluster/gencluster/dataset"
	"github.com/gencluster/gencluster/kernels"
	"github.com/gencluster/gencluster/models"
	"github.com/gencluster/gencluster/optim"
	"github.com/gencluster/gencluster/training"
)

// drawSamples draws the job's grid from the checkpoint's state: a PNG of
// spec.samples images (4x4 for 16), the same for the same state and step,
// another for another step, and an error (not a panic) for a state of
// another model.
func TestDrawSamples(t *testing.T) {
	pool := kernels.NewPool(1)
	defer pool.Close()
	m, err := models.New(models.Spec{Name: "vae"}, pool)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(rand.New(rand.NewPCG(1, 2)))
	opt := optim.NewAdam(optim.DefaultAdam(), training.ParamLengths(m))
	st := training.Snapshot(checkpoint.Job{Model: "vae", Dataset: "mnist", Batch: 8, TotalSteps: 10, Seed: 3, LR: 1e-3}, 5, 1, m, opt)
	spec := &pb.JobSpec{Model: "vae", Seed: 3, Samples: 16}
	b, err := drawSamples(spec, nil, &snapshot{job: "j", step: 5, st: st})
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	// 4 columns of 28-pixel images scaled 2x, 2-pixel gaps.
	if w, h := img.Bounds().Dx(), img.Bounds().Dy(); w != h || w < 4*56 || w > 4*56+5*2*2 {
		t.Fatalf("grid of 16 is %dx%d, want a 4x4 grid of 56-pixel images", w, h)
	}
	if blank(img) {
		t.Fatal("the grid is blank")
	}
	again, _ := drawSamples(spec, nil, &snapshot{job: "j", step: 5, st: st})
	other, _ := drawSamples(spec, nil, &snapshot{job: "j", step: 6, st: st})
	if !bytes.Equal(b, again) || bytes.Equal(b, other) {
		t.Fatal("the grid is not a function of the state and the step")
	}
	if len(b) > 64<<10 {
		t.Fatalf("grid of %d bytes is over the coordinators' limit", len(b))
	}
	if _, err := drawSamples(&pb.JobSpec{Model: "pixelcnn", Samples: 1}, nil, &snapshot{job: "j", step: 5, st: st}); err == nil {
		t.Fatal("a vae state drew pixelcnn samples")
	}
}

func blank(img image.Image) bool {
	first := img.At(img.Bounds().Min.X, img.Bounds().Min.Y)
	for y := img.Bounds().Min.Y; y < img.Bounds().Max.Y; y++ {
		for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x++ {
			if img.At(x, y) != first {
				return false
			}
		}
	}
	return true
}

// An autoencoder's grid shows the first images of the job's data set, each
// beside its reconstruction; without the data it is an error.
func TestDrawSamplesAutoencoder(t *testing.T) {
	m, err := models.New(models.Spec{Name: "ae"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(rand.New(rand.NewPCG(1, 2)))
	st := training.Snapshot(checkpoint.Job{Model: "ae", Dataset: "mnist", Batch: 8, TotalSteps: 10, Seed: 3, LR: 1e-3}, 5, 1, m, optim.NewAdam(optim.DefaultAdam(), training.ParamLengths(m)))
	pix := make([]byte, 9*784)
	for i := range pix {
		pix[i] = byte(i * 7)
	}
	data, err := dataset.FromPixels(9, 28, 28, pix, "test")
	if err != nil {
		t.Fatal(err)
	}
	spec := &pb.JobSpec{Model: "ae", Seed: 3, Samples: 9}
	b, err := drawSamples(spec, data, &snapshot{job: "j", step: 5, st: st})
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	// 3x3 cells of 28 x 57 pixels (image, a grey column, reconstruction), scaled 2x, 2-pixel gaps.
	if w, h := img.Bounds().Dx(), img.Bounds().Dy(); w != 3*2*57+2*2 || h != 3*2*28+2*2 {
		t.Fatalf("grid of 9 pairs is %dx%d, want %dx%d", w, h, 3*2*57+2*2, 3*2*28+2*2)
	}
	if _, err := drawSamples(spec, nil, &snapshot{job: "j", step: 5, st: st}); err == nil || !strings.Contains(err.Error(), "reconstructions") {
		t.Fatalf("no data: %v", err)
	}
}
