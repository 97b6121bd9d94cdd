//go:build !linux

package test

import (
	"errors"
	"net"
)

// tcpQueues: see loop_sockdiag_linux_test.go.
type tcpQueues struct {
	State            int
	TxQueue, RxQueue int64
	Timer            int
}

const tcpEstablished = 1

// socketQueues needs Linux's sock_diag.
func socketQueues(local, remote net.Addr) (tcpQueues, bool, error) {
	return tcpQueues{}, false, errors.New("socket queues are read through Linux's sock_diag only")
}
