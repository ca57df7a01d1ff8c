package worker

import "testing"

// computeWindow's median over the last 16 steps, without allocating in the
// training step.
func TestComputeWindow(t *testing.T) {
	var c computeWindow
	if got := c.add(3); got != 3 {
		t.Errorf("median of [3] = %v", got)
	}
	if got := c.add(1); got != 2 {
		t.Errorf("median of [3 1] = %v", got)
	}
	for range 20 { // the window now holds sixteen 10s
		c.add(10)
	}
	if got := c.add(100); got != 10 {
		t.Errorf("one slow step moved the median to %v", got)
	}
	if n := testing.AllocsPerRun(100, func() { c.add(5) }); n != 0 {
		t.Errorf("add allocates %v times a step", n)
	}
}
