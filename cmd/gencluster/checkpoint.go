package main

import (
	"fmt"

	"github.com/gencluster/gencluster/checkpoint"
	"github.com/gencluster/gencluster/kernels"
	"github.com/gencluster/gencluster/models"
	"github.com/gencluster/gencluster/training"
)

// loadModel reads the checkpoint at path (a file, or a directory whose
// newest good checkpoint is used) and builds its model on pool.
func (a *app) loadModel(path string, pool *kernels.Pool) (models.Model, *checkpoint.State, string, error) {
	if path == "" {
		return nil, nil, "", fmt.Errorf("--checkpoint PATH is required")
	}
	st, file, err := checkpoint.Load(path, func(f string, err error) {
		a.log.Warn("skipping bad checkpoint", "file", f, "err", err)
	})
	if err != nil {
		return nil, nil, "", err
	}
	m, err := models.New(training.ModelSpec(st.Meta.Job), pool)
	if err != nil {
		return nil, nil, "", fmt.Errorf("checkpoint %s: %w", file, err)
	}
	if err := training.Restore(st, m, nil); err != nil {
		return nil, nil, "", fmt.Errorf("checkpoint %s: %w", file, err)
	}
	return m, st, file, nil
}
