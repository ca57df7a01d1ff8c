package main

import (
	"encoding/json"
	"testing"

	"github.com/gencluster/gencluster/training"
)

// bench peak --json lists every peak loop (the pure-Go one last) and
// every matrix product of both models' training steps, each with a
// positive rate and its fraction of the first loop's peak; bench compute
// --json reports the step's useful GFLOP/s against the peak it measured.
func TestBenchPeakAndComputeFLOPs(t *testing.T) {
	out, errs, code := gencluster(t, "bench", "peak", "--threads", "1", "--time", "30ms", "--runs", "1", "--json")
	if code != 0 {
		t.Fatalf("bench peak: exit %d: %s", code, errs)
	}
	var p peakJSON
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatal(err)
	}
	if len(p.Peaks) == 0 || p.Peaks[len(p.Peaks)-1].Kernel != "go" {
		t.Fatalf("peaks %+v: want the pure-Go loop last", p.Peaks)
	}
	for _, k := range p.Peaks {
		if !(k.GFLOPS > 0) || k.Threads != 1 {
			t.Errorf("peak %+v", k)
		}
	}
	// PixelCNN: 9 layers, 3 products each but the first's input gradient;
	// VAE: 5 layers likewise.
	if len(p.GEMMs) != 9*3-1+5*3-1 {
		t.Fatalf("%d products, want %d", len(p.GEMMs), 9*3-1+5*3-1)
	}
	for _, g := range p.GEMMs {
		if !(g.GFLOPS > 0) || g.FractionOfPeak != g.GFLOPS/p.Peaks[0].GFLOPS || g.M*g.N*g.K == 0 {
			t.Errorf("product %+v", g)
		}
	}
	if _, _, code := gencluster(t, "bench", "peak", "--threads", "0"); code == 0 {
		t.Error("bench peak --threads 0 accepted")
	}

	out, errs, code = gencluster(t, "bench", "compute", "--model", "vae", "--batch", "16", "--steps", "3", "--warmup", "1", "--json")
	if code != 0 {
		t.Fatalf("bench compute: exit %d: %s", code, errs)
	}
	var c training.ComputeBench
	if err := json.Unmarshal([]byte(out), &c); err != nil {
		t.Fatal(err)
	}
	if !(c.GFLOPS > 0) || !(c.PeakGFLOPS > 0) || c.PeakKernel == "" || c.FractionOfPeak != c.GFLOPS/c.PeakGFLOPS {
		t.Fatalf("bench compute: %+v", c)
	}
}
