//go:build !linux

package dataset

// release does nothing where madvise(2) is not at hand: the built-in
// files' pages stay resident once read.
func release(string) {}
