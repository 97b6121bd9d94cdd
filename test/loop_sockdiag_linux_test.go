package test

import (
	endian "encoding/binary"
	"fmt"
	"net"
	"syscall"
)

// tcpQueues is what the kernel says of one TCP socket (sock_diag(7),
// struct inet_diag_msg): its state, its queues and its timer.
type tcpQueues struct {
	State   int   // 1 ESTABLISHED, 8 CLOSE_WAIT ... (the TCP_* states)
	TxQueue int64 // bytes sent and not yet acknowledged, or not yet sent
	RxQueue int64 // bytes received and not yet read by the application
	Timer   int   // 0 none, 1 retransmit, 2 keepalive, 3 TIME_WAIT, 4 zero window probe
}

// tcpEstablished is the state TCP_ESTABLISHED.
const tcpEstablished = 1

// socketQueues returns the state and queues of the IPv4 TCP socket whose
// local address is local and whose peer is remote, and whether there is
// one, asking the kernel for that one socket over NETLINK_SOCK_DIAG (as
// ss(8) does; /proc/net/tcp would list every socket of the machine's
// tests, tens of thousands while the park test runs).
func socketQueues(local, remote net.Addr) (q tcpQueues, ok bool, err error) {
	l, r := local.(*net.TCPAddr), remote.(*net.TCPAddr)
	if l == nil || r == nil || l.IP.To4() == nil || r.IP.To4() == nil {
		return q, false, fmt.Errorf("socketQueues: %v, %v: not IPv4 TCP addresses", local, remote)
	}
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, netlinkSockDiag)
	if err != nil {
		return q, false, err
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return q, false, err
	}
	// struct nlmsghdr, then struct inet_diag_req_v2 (sock_diag(7)).
	req := make([]byte, 16+56)
	ne := endian.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], sockDiagByFamily)
	ne.PutUint16(req[6:], syscall.NLM_F_REQUEST)
	d := req[16:]
	d[0], d[1] = syscall.AF_INET, syscall.IPPROTO_TCP
	ne.PutUint32(d[4:], 0xffffffff) // every state
	id := d[8:]                     // struct inet_diag_sockid
	endian.BigEndian.PutUint16(id[0:], uint16(l.Port))
	endian.BigEndian.PutUint16(id[2:], uint16(r.Port))
	copy(id[4:], l.IP.To4())
	copy(id[20:], r.IP.To4())
	ne.PutUint32(id[40:], 0xffffffff) // INET_DIAG_NOCOOKIE
	ne.PutUint32(id[44:], 0xffffffff)
	if err := syscall.Sendto(fd, req, 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return q, false, err
	}
	buf := make([]byte, 8192)
	n, _, err := syscall.Recvfrom(fd, buf, 0)
	if err != nil {
		return q, false, err
	}
	msgs, err := syscall.ParseNetlinkMessage(buf[:n])
	if err != nil || len(msgs) == 0 {
		return q, false, fmt.Errorf("sock_diag answer: %v (%d messages)", err, len(msgs))
	}
	m := msgs[0]
	switch m.Header.Type {
	case syscall.NLMSG_ERROR:
		if len(m.Data) >= 4 {
			if e := syscall.Errno(-int32(ne.Uint32(m.Data))); e == syscall.ENOENT {
				return q, false, nil
			} else if e != 0 {
				return q, false, fmt.Errorf("sock_diag: %w", e)
			}
		}
		return q, false, nil
	case sockDiagByFamily:
	default:
		return q, false, fmt.Errorf("sock_diag: answer of type %d", m.Header.Type)
	}
	// struct inet_diag_msg: family, state, timer, retrans, the socket's
	// id (48 bytes), expires, rqueue, wqueue.
	if len(m.Data) < 64 {
		return q, false, fmt.Errorf("sock_diag: %d-byte answer", len(m.Data))
	}
	q.State, q.Timer = int(m.Data[1]), int(m.Data[2])
	q.RxQueue, q.TxQueue = int64(ne.Uint32(m.Data[56:])), int64(ne.Uint32(m.Data[60:]))
	return q, true, nil
}

// Constants of sock_diag(7) the syscall package lacks.
const (
	netlinkSockDiag  = 4  // NETLINK_SOCK_DIAG (NETLINK_INET_DIAG)
	sockDiagByFamily = 20 // SOCK_DIAG_BY_FAMILY
)
