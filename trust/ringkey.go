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
	return ringKey("gencluster ring key\x00", secretSHA256, job, generation)
}

// RingAcceptKey is the key a worker signs its answer to its predecessor's
// hello with in one generation of one job, derived like [RingKey] but
// under another label, so that knowing a worker's accept key (its
// predecessor is given it: Assignment.next_accept_key) does not let anyone
// sign that worker's hellos. With it the sender knows it reached its
// assigned successor and no one in between before it sends any gradient.
func RingAcceptKey(secretSHA256 []byte, job string, generation uint64) []byte {
	return ringKey("gencluster ring accept key\x00", secretSHA256, job, generation)
}

func ringKey(label string, secretSHA256 []byte, job string, generation uint64) []byte {
	m := hmac.New(sha256.New, secretSHA256)
	m.Write([]byte(label))
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
