package batch

import "hash/maphash"

// SetIDHash replaces the hash of the duplicate-id set (to force collisions)
// until the returned function is called.
func SetIDHash(h func(id string) uint64) (restore func()) {
	old := idHash
	idHash = func(_ maphash.Seed, id string) uint64 { return h(id) }
	return func() { idHash = old }
}

// SetFingerprint replaces the fingerprint that groups duplicate requests until the returned
// function is called.
func SetFingerprint(f func(Key) uint64) (restore func()) {
	old := fingerprint
	fingerprint = f
	return func() { fingerprint = old }
}
