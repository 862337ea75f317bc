//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package batch

import (
	"syscall"
	"unsafe"
)

// allocU64 maps an anonymous private block for n uint64 values, outside the Go heap (it holds no
// pointers, so the collector need not know of it). It returns nil if the system refuses.
func allocU64(n int) ([]uint64, bool) {
	b, err := syscall.Mmap(-1, 0, n*8, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		return nil, false
	}
	return unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(b))), n)[:0], true
}

// freeU64 unmaps a block from allocU64.
func freeU64(s []uint64) {
	if cap(s) == 0 {
		return
	}
	// The error can only say that the block was not mapped: nothing to give back then.
	_ = syscall.Munmap(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s[:1]))), cap(s)*8))
}
