package dataset

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// release tells the kernel that the whole pages of data, a string embedded
// in the binary's read-only data, are not needed for now: they leave the
// resident set, and a later read faults them in again from the executable
// file (the mapping is the file's, so their contents never change).
func release(data string) {
	if len(data) == 0 {
		return
	}
	page := uintptr(os.Getpagesize())
	p := uintptr(unsafe.Pointer(unsafe.StringData(data)))
	start, end := (p+page-1)&^(page-1), (p+uintptr(len(data)))&^(page-1)
	if end <= start {
		return
	}
	b := unsafe.Slice((*byte)(unsafe.Add(unsafe.Pointer(unsafe.StringData(data)), start-p)), end-start)
	_ = unix.Madvise(b, unix.MADV_DONTNEED) // advice: nothing to do if refused
}
