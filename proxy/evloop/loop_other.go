//go:build !linux

package evloop

import "errors"

// Loop is not available on this system.
type Loop struct{}

// Handler is what a registered socket's events are handed to.
type Handler interface{ Event(events uint32) }

// The event bits (Linux's values; never delivered here).
const (
	In    = 0x1
	Out   = 0x4
	RDHup = 0x2000
	Err   = 0x8
	Hup   = 0x10
)

// ErrClosed is returned by Add after Close.
var ErrClosed = errors.New("evloop: loop closed")

var errUnsupported = errors.New("evloop: event loops need Linux")

// Supported reports whether event loops work here: not on this system.
func Supported() bool { return false }

// New fails here.
func New() (*Loop, error) { return nil, errUnsupported }

func (l *Loop) Add(fd int, h Handler) (int32, error) { return -1, errUnsupported }
func (l *Loop) Remove(fd int, id int32)              {}
func (l *Loop) Post(f func()) bool                   { return false }
func (l *Loop) Close()                               {}
