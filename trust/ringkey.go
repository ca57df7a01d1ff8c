package trust

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
)

// RingKey is the key a worker signs its ring hello with in one generation
// of one job: HMAC-SHA256 keyed by the SHA-256 of the secret the
// coordinators issued to it. The worker computes it from its secret; the
// coordinators, who keep only the hash, give it to the worker's ring
// successor (Assignment.prev_ring_key), which can then tell its real
// predecessor from anyone else who reaches its ring port.
func RingKey(secretSHA256 []byte, job string, generation uint64) []byte {
	m := hmac.New(sha256.New, secretSHA256)
	m.Write([]byte("gencluster ring key\x00"))
	m.Write([]byte(job))
	m.Write([]byte{0})
	m.Write(binary.BigEndian.AppendUint64(nil, generation))
	return m.Sum(nil)
}

// SecretHash is the SHA-256 of a worker secret: what the coordinators
// keep, and what RingKey is keyed with.
func SecretHash(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}
