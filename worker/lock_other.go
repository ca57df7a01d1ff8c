//go:build !unix

package worker

import (
	"fmt"
	"os"
	"path/filepath"
)

// lockDir creates DIR/lock exclusively where flock is not available; a
// crashed worker leaves it behind, and the error says to remove it.
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%w: %s exists (remove it if no worker runs): %v", ErrDataDirInUse, path, err)
	}
	return f, nil
}

// unlockDir releases the lock (removes the file).
func unlockDir(f *os.File) error {
	f.Close()
	return os.Remove(f.Name())
}
