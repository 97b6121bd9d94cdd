//go:build !linux

package proxy

// parker is Linux-only (epoll); elsewhere idle directions keep their
// goroutines.
type parker struct{}

func getParker() *parker { return nil }

func (p *parker) park(fd int, d *direction) bool   { return false }
func (p *parker) unpark(fd int, d *direction) bool { return false }
