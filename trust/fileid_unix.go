//go:build unix

package trust

import (
	"io/fs"
	"syscall"
)

// fileID returns the device and inode of a file, which change when the file
// is replaced by a rename.
func fileID(fi fs.FileInfo) (dev, ino uint64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Dev), uint64(st.Ino)
	}
	return 0, 0
}
