package training

import (
	"fmt"
	"slices"

	"github.com/gencluster/gencluster/checkpoint"
	"github.com/gencluster/gencluster/models"
	"github.com/gencluster/gencluster/optim"
)

// Tensor group prefixes in a checkpoint.
const (
	groupParam = "param/"
	groupAdamM = "adam.m/"
	groupAdamV = "adam.v/"
)

// Snapshot copies the model's parameters and the optimizer's moments into a
// checkpoint state (a copy: training may go on while it is written).
func Snapshot(job checkpoint.Job, step int64, loss float64, m models.Model, opt *optim.Adam) *checkpoint.State {
	return state(job, step, loss, m, opt, true)
}

// View is Snapshot without the copy: the state's tensors are the model's
// and the optimizer's own memory, valid until training goes on. For a
// checkpoint written before the next step (train's), it saves the copy.
func View(job checkpoint.Job, step int64, loss float64, m models.Model, opt *optim.Adam) *checkpoint.State {
	return state(job, step, loss, m, opt, false)
}

func state(job checkpoint.Job, step int64, loss float64, m models.Model, opt *optim.Adam, clone bool) *checkpoint.State {
	st := &checkpoint.State{Meta: checkpoint.Meta{Job: job, Step: step, Loss: loss}}
	if opt != nil {
		st.Meta.AdamSteps = opt.Steps
	}
	add := func(prefix string, p *models.Param, d []float32) {
		st.Meta.Tensors = append(st.Meta.Tensors, checkpoint.TensorInfo{Name: prefix + p.Name, Shape: p.CompactShape()})
		if clone {
			d = slices.Clone(d)
		}
		st.Data = append(st.Data, d)
	}
	for i, p := range m.Params() {
		add(groupParam, p, p.Data)
		if opt != nil {
			add(groupAdamM, p, opt.M[i])
			add(groupAdamV, p, opt.V[i])
		}
	}
	return st
}

// Restore loads a checkpoint's parameters into m and, when opt is not nil,
// its optimizer state into opt. It refuses a checkpoint of another model or
// with tensors of other names or shapes.
func Restore(st *checkpoint.State, m models.Model, opt *optim.Adam) error {
	if st.Meta.Job.Model != m.Name() {
		return fmt.Errorf("checkpoint holds a %q model, not %q", st.Meta.Job.Model, m.Name())
	}
	spec, err := ModelSpec(st.Meta.Job).Resolve()
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if spec.Levels != m.Levels() {
		return fmt.Errorf("checkpoint holds a %s model of %d pixel levels, not %d", spec.Name, spec.Levels, m.Levels())
	}
	load := func(name string, shape []int, dst []float32) error {
		for i, t := range st.Meta.Tensors {
			if t.Name != name {
				continue
			}
			if !slices.Equal(t.Shape, shape) || len(st.Data[i]) != len(dst) {
				return fmt.Errorf("checkpoint tensor %s has shape %v, the %s model needs %v", name, t.Shape, m.Name(), shape)
			}
			copy(dst, st.Data[i])
			return nil
		}
		return fmt.Errorf("checkpoint has no tensor %s (model/version mismatch?)", name)
	}
	for i, p := range m.Params() {
		if err := load(groupParam+p.Name, p.CompactShape(), p.Data); err != nil {
			return err
		}
		if opt == nil {
			continue
		}
		if err := load(groupAdamM+p.Name, p.CompactShape(), opt.M[i]); err != nil {
			return err
		}
		if err := load(groupAdamV+p.Name, p.CompactShape(), opt.V[i]); err != nil {
			return err
		}
	}
	if opt != nil {
		opt.Steps = st.Meta.AdamSteps
	}
	return nil
}

// ModelSpec is the model a job trains.
func ModelSpec(j checkpoint.Job) models.Spec { return models.Spec{Name: j.Model, Levels: j.Levels} }

// ParamLengths lists the lengths of m's parameters, for optim.NewAdam.
func ParamLengths(m models.Model) []int {
	var ls []int
	for _, p := range m.Params() {
		ls = append(ls, p.Len())
	}
	return ls
}
