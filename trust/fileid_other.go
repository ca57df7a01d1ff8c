//go:build !unix

package trust

import "io/fs"

// fileID is not available on this platform; modification time and size
// alone detect changes.
func fileID(fs.FileInfo) (dev, ino uint64) { return 0, 0 }
