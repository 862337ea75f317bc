//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package batch

// allocU64 leaves the block to the Go heap on systems without anonymous mappings.
func allocU64(int) ([]uint64, bool) { return nil, false }

func freeU64([]uint64) {}
