package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
)

// Faulty upstreams for the faults phase: servers of the suite's own that
// never greet, stall, or answer garbage.

// discard reads and drops everything until the connection ends.
func discard(nc net.Conn) { io.Copy(io.Discard, nc) }

// neverGreet accepts and never says a word.
func neverGreet(_ *fakeUpstream, nc net.Conn) { discard(nc) }

// stallGreeting sends half a greeting line and stops.
func stallGreeting(_ *fakeUpstream, nc net.Conn) {
	io.WriteString(nc, "* OK [CAPABILITY IMAP4rev1 AUTH=PL")
	discard(nc)
}

// garbageText is what the garbage upstream says: binary, a bogus huge
// literal announcement, a line far from IMAP.
const garbageText = "\x00\xff\xfe\x16\x03\x01 garbage {99999999999}\r\nHTTP/1.1 400 Bad Request\r\n\x1b[2J\r\n"

// garbageGreeting answers garbage from the first byte, and to every line.
func garbageGreeting(_ *fakeUpstream, nc net.Conn) {
	io.WriteString(nc, garbageText)
	br := bufio.NewReader(nc)
	for {
		if _, err := br.ReadString('\n'); err != nil {
			return
		}
		io.WriteString(nc, garbageText)
	}
}

// fakeCaps is the fake IMAP server's capability list.
const fakeCaps = "IMAP4rev1 AUTH=PLAIN SASL-IR LITERAL+"

// fakeIMAP is a minimal IMAP server that greets properly, accepts any
// login, and answers NOOP, SELECT and LOGOUT. What it does at the login
// (onLogin) and at a FETCH (onFetch) makes the fault: each returns false
// to stop serving the connection.
type fakeIMAP struct {
	onLogin func(nc net.Conn, tag string) bool // nil: OK
	onFetch func(nc net.Conn, tag string) bool // nil: an empty OK
	// logins counts the logins the fake has seen.
	logins atomic.Int64
}

func (fi *fakeIMAP) serve(_ *fakeUpstream, nc net.Conn) {
	io.WriteString(nc, "* OK [CAPABILITY "+fakeCaps+"] fake upstream ready\r\n")
	br := bufio.NewReader(nc)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		tag, rest, _ := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
		cmd, args, _ := strings.Cut(rest, " ")
		switch strings.ToUpper(cmd) {
		case "AUTHENTICATE", "LOGIN":
			if strings.EqualFold(cmd, "AUTHENTICATE") && !strings.Contains(args, " ") {
				// No initial response: ask for it.
				io.WriteString(nc, "+ \r\n")
				if _, err := br.ReadString('\n'); err != nil {
					return
				}
			}
			fi.logins.Add(1)
			if fi.onLogin != nil {
				if !fi.onLogin(nc, tag) {
					return
				}
				continue
			}
			io.WriteString(nc, tag+" OK [CAPABILITY IMAP4rev1 IDLE LITERAL+] Logged in\r\n")
		case "CAPABILITY":
			io.WriteString(nc, "* CAPABILITY "+fakeCaps+"\r\n"+tag+" OK done\r\n")
		case "SELECT":
			io.WriteString(nc, "* 1 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\n"+tag+" OK [READ-WRITE] selected\r\n")
		case "FETCH":
			if fi.onFetch != nil {
				if !fi.onFetch(nc, tag) {
					return
				}
				continue
			}
			io.WriteString(nc, tag+" OK done\r\n")
		case "LOGOUT":
			io.WriteString(nc, "* BYE bye\r\n"+tag+" OK done\r\n")
			return
		default:
			io.WriteString(nc, tag+" OK done\r\n")
		}
	}
}

// stallMidResponse returns a FETCH answer that starts a response with a
// literal of size octets, sends 1000 of them and stops, reading on.
func stallMidResponse(size int) func(nc net.Conn, _ string) bool {
	return func(nc net.Conn, _ string) bool {
		io.WriteString(nc, fmt.Sprintf("* 1 FETCH (BODY[] {%d}\r\n", size)+strings.Repeat("x", 1000))
		discard(nc)
		return false
	}
}

// garbageAnswer answers with garbage and goes on serving.
func garbageAnswer(nc net.Conn, _ string) bool {
	io.WriteString(nc, garbageText)
	return true
}
