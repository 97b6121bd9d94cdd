package proxy

import (
	"math/bits"
	"sync"
)

// Buffers are pooled so that an idle session holds none: a relay loop
// returns its buffer before it waits for the next bytes and takes one
// again when they are there (see idleReader). Pools are kept per power
// of two, since max_command_size decides the command buffer's size and
// may change on reload.
//
// Buffers larger than maxPooled are allocated to their exact size and
// left to the garbage collector: a command buffer that grows towards a
// large max_command_size must cost what it holds, not the next power of
// two.
//
// These pools are the package's only global state; sync.Pool is safe for
// concurrent use and holds nothing a test could observe.
var bufPools [17]sync.Pool // 1 B .. 64 KiB

const maxPooled = 1 << (len(bufPools) - 1)

func poolIndex(size int) int { return bits.Len(uint(size - 1)) }

// getBuf returns a buffer of at least size bytes (up to maxPooled, its
// length is a power of two; above, it is size). The pointer goes back to
// putBuf, so that a round trip through the pool allocates nothing.
func getBuf(size int) *[]byte {
	if size <= maxPooled {
		i := poolIndex(size)
		if b, ok := bufPools[i].Get().(*[]byte); ok {
			return b
		}
		size = 1 << i
	}
	b := make([]byte, size)
	return &b
}

// putBuf returns a buffer from getBuf; nil is ignored.
func putBuf(b *[]byte) {
	if b == nil {
		return
	}
	i := poolIndex(cap(*b))
	if i >= len(bufPools) || cap(*b) != 1<<i {
		return
	}
	*b = (*b)[:cap(*b)]
	bufPools[i].Put(b)
}
