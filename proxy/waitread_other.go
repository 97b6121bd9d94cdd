//go:build !unix

package proxy

// waitReadable is a no-op where peeking a socket is not available: the
// relay then holds its buffer while it waits.
func waitReadable(src any) error { return nil }
