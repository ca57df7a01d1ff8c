package training

import (
	"context"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/gencluster/gencluster/dataset"
	"github.com/gencluster/gencluster/models"
)

// probeSet is n 28x2 images of class i%10: pixel i%10 bright, the others
// dim noise.
func probeSet(rng *rand.Rand, n int) (*dataset.Images, []byte) {
	pix := make([]byte, n*56)
	labels := make([]byte, n)
	for i := 0; i < n; i++ {
		for j := 0; j < 56; j++ {
			pix[i*56+j] = byte(rng.IntN(60))
		}
		labels[i] = byte(i % 10)
		pix[i*56+i%10] = 200 + byte(rng.IntN(56))
	}
	set, _ := dataset.FromPixels(n, 28, 2, pix, "probe")
	return set, labels
}

// TestProbe: on codes that carry the class (an autoencoder whose encoder
// passes pixels 0..9 through), the probe classifies every class, 0
// included, nearly perfectly; on a model without codes it is an error.
func TestProbe(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	ae := models.NewAE(56, 56, 10, nil)
	for _, p := range ae.Params() {
		clear(p.Data)
	}
	ps := ae.Params() // e1.weight, e1.bias, e2.weight, e2.bias, ...
	for k := 0; k < 56; k++ {
		ps[0].Data[k*56+k] = 1 // e1: identity (then ReLU)
	}
	for k := 0; k < 10; k++ {
		ps[2].Data[k*56+k] = 1 // e2: pixels 0..9
	}
	train, trainLabels := probeSet(rng, 500)
	test, testLabels := probeSet(rng, 200)
	r, err := Probe(context.Background(), ae, train, test, trainLabels, testLabels, 3)
	if err != nil {
		t.Fatal(err)
	}
	if r.Accuracy < 0.97 || r.Train != 500 || r.Test != 200 || !(r.TrainLoss < 2.2) { // below chance (ln 10)
		t.Fatalf("probe on separable codes: %+v", r)
	}
	// The same seed fits the same probe.
	if again, _ := Probe(context.Background(), ae, train, test, trainLabels, testLabels, 3); again.Accuracy != r.Accuracy || again.TrainLoss != r.TrainLoss {
		t.Errorf("probe not reproducible: %+v then %+v", r, again)
	}
	vae := models.NewVAE(56, 8, 2, nil)
	if _, err := Probe(context.Background(), vae, train, test, trainLabels, testLabels, 3); err == nil || !strings.Contains(err.Error(), "no codes") {
		t.Errorf("probe of a VAE: %v", err)
	}
	if _, err := Probe(context.Background(), ae, train, test, trainLabels[:10], testLabels, 3); err == nil {
		t.Error("probe with too few labels accepted")
	}
	bad := append([]byte(nil), testLabels...)
	bad[3] = 12
	if _, err := Probe(context.Background(), ae, train, test, trainLabels, bad, 3); err == nil || !strings.Contains(err.Error(), "12") {
		t.Errorf("label 12: %v", err)
	}
}
