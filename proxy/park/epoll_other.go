//go:build !linux

package park

// New returns Nop: only Linux has a parker (epoll); elsewhere idle
// directions keep their goroutines.
func New() Parker { return Nop{} }
