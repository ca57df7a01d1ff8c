package worker

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The worker's data dir holds who the worker is: its id (worker-id), the
// secret the coordinators issued to that id at its first join
// (worker-secret, mode 0600), and a lock file that one process at a time
// holds (lock); and the local store of its job's newest checkpoints
// (checkpoints/<job>/, package ckptstore).

// ErrDataDirInUse is returned by New when another process (or another
// Worker in this one) holds the data dir.
var ErrDataDirInUse = errors.New("worker: data directory in use by another worker process")

const (
	idFile         = "worker-id"
	secretFile     = "worker-secret"
	lockFile       = "lock"
	checkpointsDir = "checkpoints" // the local checkpoint store
)

// loadID reads the worker id kept in dir, creating one the first time, so a
// restarted worker comes back as itself.
func loadID(dir string) (string, error) {
	path := filepath.Join(dir, idFile)
	b, err := os.ReadFile(path)
	if err == nil {
		id := strings.TrimSpace(string(b))
		if id == "" || len(id) > 128 {
			return "", fmt.Errorf("worker: %s holds no valid worker id", path)
		}
		return id, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("worker: read id: %w", err)
	}
	return newID(dir)
}

// newID gives the data dir a fresh worker id (and forgets any secret).
func newID(dir string) (string, error) {
	id := "w-" + strings.ToLower(rand.Text()[:10])
	if err := os.Remove(filepath.Join(dir, secretFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("worker: forget the old secret: %w", err)
	}
	if err := writeFileSync(filepath.Join(dir, idFile), []byte(id+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("worker: write id: %w", err)
	}
	return id, nil
}

// loadSecret reads the id's secret; "" if the worker has none yet.
func loadSecret(dir string) (string, error) {
	path := filepath.Join(dir, secretFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("worker: read secret: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" || len(s) > 1024 {
		return "", fmt.Errorf("worker: %s holds no valid secret (remove it and %s to join as a new worker)", path, idFile)
	}
	return s, nil
}

// saveSecret keeps the secret issued at the first join, readable by this
// user only, durably before the worker acts on the join.
func saveSecret(dir, secret string) error {
	if err := writeFileSync(filepath.Join(dir, secretFile), []byte(secret+"\n"), 0o600); err != nil {
		return fmt.Errorf("worker: keep the secret: %w", err)
	}
	return nil
}

// writeFileSync writes a file atomically and durably: a temp file, fsync,
// rename, directory fsync.
func writeFileSync(path string, b []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
