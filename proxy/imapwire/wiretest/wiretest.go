// Package wiretest holds test streams and reference framings for the wire
// package's tests and for the proxy's copy loops, which run the same cases
// through their own buffers: client command streams with what the framer
// must forward and answer, upstream response streams, and small
// independent reference implementations of where literals and responses
// end.
package wiretest

import (
	"errors"
	"io"
	"strings"
)

// Rep is strings.Repeat: Rep("a", 3) == "aaa".
var Rep = strings.Repeat

// ChunkReader returns Data in reads whose sizes cycle through Sizes (0 or
// less: all that fits), then io.EOF. Before, when set, runs before read i
// returns its bytes.
type ChunkReader struct {
	Data   []byte
	Sizes  []int
	Before func(i int)
	i      int
	left   int // bytes of the current chunk not yet read
}

// Read returns the input in chunks of the given sizes, as a socket
// would: a short read leaves the rest of its chunk for the next one, and
// Before runs as each chunk arrives.
func (r *ChunkReader) Read(p []byte) (int, error) {
	if len(r.Data) == 0 {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, errors.New("ChunkReader: Read with an empty buffer")
	}
	if r.left == 0 {
		if r.Before != nil {
			r.Before(r.i)
		}
		n := len(r.Data)
		if len(r.Sizes) > 0 {
			if s := r.Sizes[r.i%len(r.Sizes)]; s > 0 {
				n = s
			}
		}
		r.left = min(n, len(r.Data))
		r.i++
	}
	n := min(len(p), r.left)
	copy(p, r.Data[:n])
	r.Data = r.Data[n:]
	r.left -= n
	return n, nil
}

// RepeatReader serves Data N times, in reads of at most Chunk bytes (0:
// as much as fits), then io.EOF: the steady stream of a benchmark.
type RepeatReader struct {
	Data  []byte
	N     int
	Chunk int
	off   int
}

func (r *RepeatReader) Read(p []byte) (int, error) {
	if r.N == 0 {
		return 0, io.EOF
	}
	if r.Chunk > 0 && len(p) > r.Chunk {
		p = p[:r.Chunk]
	}
	total := 0
	for len(p) > 0 && r.N > 0 {
		k := copy(p, r.Data[r.off:])
		p = p[k:]
		total += k
		r.off += k
		if r.off == len(r.Data) {
			r.off = 0
			r.N--
		}
	}
	return total, nil
}

// Chunkings are the read sizes a case of n bytes is run with; big cases
// get a few only.
func Chunkings(n int, big bool) [][]int {
	if big {
		return [][]int{nil, {4096}, {100000}, {1<<20 + 3}, {1, 70000}}
	}
	cs := [][]int{nil, {1}, {2}, {3}, {5}, {7}, {13}, {64}, {1000}, {1023}, {1025}, {1, 2, 1500}}
	if n <= 3000 {
		for p := 1; p < n; p++ {
			cs = append(cs, []int{p, 1 << 30})
		}
	}
	return cs
}

// TooBig1024 is the end of the answer to an oversize command with
// max_command_size 1024, after its tag.
const TooBig1024 = " BAD [TOOBIG] Command too long (max_command_size=1024)"
