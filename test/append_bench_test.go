package test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/imapguard/imapguard/cmd/imapd/server"
	"github.com/imapguard/imapguard/test/proxytest"
)

// BenchmarkAppend measures one APPEND of a 4 KiB message at a time, the
// client waiting for each answer, against the bundled upstream directly
// and through the proxy, with a synchronizing literal ({N}: the client
// waits for "+") and a non-synchronizing one ({N+}: the proxy converts
// it and waits for the upstream's "+" itself). Every APPEND follows
// another command, so through the proxy it also waits for the probe (a
// NOOP under a random tag, proxy/README.md) that makes sure the "+" is
// this command's:
//
//	go test -run '^$' -bench Append -benchmem ./test
func BenchmarkAppend(b *testing.B) {
	up := server.Start(b, server.Options{Users: []server.User{{Username: "alice", Password: "secret"}}, InsecureAuth: true})
	p := proxytest.Start(b, proxytest.Config{Upstream: up})
	msg := "Subject: bench\r\n\r\n" + strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n", 64)
	for _, target := range []struct{ name, addr string }{{"direct", up}, {"imapguard", p.Addr}} {
		for _, sync := range []bool{true, false} {
			name := target.name + "/sync"
			if !sync {
				name = target.name + "/literal+"
			}
			b.Run(name, func(b *testing.B) {
				c, err := proxytest.DialClient("", target.addr)
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				if _, err := c.Line(); err != nil {
					b.Fatal(err)
				}
				if _, st, err := c.Cmd("l", "LOGIN alice secret"); err != nil || !strings.HasPrefix(st, "l OK") {
					b.Fatalf("LOGIN: %q %v", st, err)
				}
				b.SetBytes(int64(len(msg)))
				for b.Loop() {
					if err := benchAppend(c, msg, sync); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				c.Cmd("z", "LOGOUT")
			})
		}
	}
}

// benchAppend appends msg to INBOX and waits for the tagged OK.
func benchAppend(c *proxytest.Client, msg string, sync bool) error {
	if sync {
		if err := c.Send(fmt.Sprintf("a APPEND INBOX {%d}\r\n", len(msg))); err != nil {
			return err
		}
		if l, err := c.Line(); err != nil || !strings.HasPrefix(l, "+") {
			return fmt.Errorf("APPEND continuation: %q %v", l, err)
		}
		if err := c.Send(msg + "\r\n"); err != nil {
			return err
		}
	} else if err := c.Send(fmt.Sprintf("a APPEND INBOX {%d+}\r\n%s\r\n", len(msg), msg)); err != nil {
		return err
	}
	if _, st, err := c.Until("a"); err != nil || !strings.HasPrefix(st, "a OK") {
		return fmt.Errorf("APPEND: %q %v", st, err)
	}
	return nil
}
