//go:build !unix

package proxy

import "errors"

// idleReader is not available where syscall.RawConn reads are not: the
// relay then holds its buffer while it waits.
type idleReader struct{ fd int }

func newIdleReader(src any, size int) *idleReader { return nil }

func (r *idleReader) read() (*[]byte, int, error) { return nil, 0, errors.ErrUnsupported }

func (r *idleReader) evict() bool { return false }

func (r *idleReader) waiting() bool { return false }

// isGone is not known here: a reset is taken for the reader's.
func isGone(src any) bool { return true }
