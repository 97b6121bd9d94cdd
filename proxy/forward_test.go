package proxy

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/imapguard/imapguard/proxy/imapwire"
)

func tcp(s string) *net.TCPAddr { return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s)) }

func TestIDCommand(t *testing.T) {
	for _, tt := range []struct {
		name string
		f    forwarding
		want string
	}{
		{"ipv4", forwarding{mode: ForwardID, client: tcp("192.0.2.7:50123"), local: tcp("198.51.100.1:143"), session: "abc"},
			`t ID ("x-originating-ip" "192.0.2.7" "x-originating-port" "50123" "x-connected-ip" "198.51.100.1" "x-connected-port" "143" "x-session-id" "abc")` + "\r\n"},
		{"ipv6 with a zone, and a mapped IPv4", forwarding{mode: ForwardID, client: tcp("[fe80::1%eth0]:4000"), local: tcp("[::ffff:10.0.0.1]:993"), session: "s"},
			`t ID ("x-originating-ip" "fe80::1" "x-originating-port" "4000" "x-connected-ip" "10.0.0.1" "x-connected-port" "993" "x-session-id" "s")` + "\r\n"},
		{"client fields first, quoted", forwarding{mode: ForwardID, client: tcp("[2001:db8::2]:1"), local: tcp("[2001:db8::1]:143"), session: "s",
			clientID: []idField{{name: "name", value: `Mail "Pro" \ 2`}, {name: "os", nilValue: true}}},
			`t ID ("name" "Mail \"Pro\" \\ 2" "os" NIL "x-originating-ip" "2001:db8::2" "x-originating-port" "1" "x-connected-ip" "2001:db8::1" "x-connected-port" "143" "x-session-id" "s")` + "\r\n"},
		{"none sends the client's fields only", forwarding{mode: ForwardNone, client: tcp("192.0.2.7:1"), local: tcp("192.0.2.8:2"),
			clientID: []idField{{name: "name", value: "Thunderbird"}}},
			`t ID ("name" "Thunderbird")` + "\r\n"},
		{"none without client fields sends nothing", forwarding{mode: ForwardNone, client: tcp("192.0.2.7:1"), local: tcp("192.0.2.8:2")}, ""},
		{"proxy_v2 without client fields sends nothing", forwarding{mode: ForwardProxyV2, client: tcp("192.0.2.7:1"), local: tcp("192.0.2.8:2")}, ""},
		{"an address that is not IP is left out", forwarding{mode: ForwardID, client: &net.UnixAddr{Name: "@x", Net: "unix"}, local: tcp("192.0.2.8:2"), session: "s"},
			`t ID ("x-connected-ip" "192.0.2.8" "x-connected-port" "2" "x-session-id" "s")` + "\r\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.f.idCommand("t"); got != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
}

func strArgs(list ...string) []imapwire.Arg {
	args := []imapwire.Arg{{Kind: imapwire.ArgLParen}}
	for _, s := range list {
		if s == "NIL" {
			args = append(args, imapwire.Arg{Kind: imapwire.ArgAtom, Val: s})
			continue
		}
		args = append(args, imapwire.Arg{Kind: imapwire.ArgString, Val: s})
	}
	return append(args, imapwire.Arg{Kind: imapwire.ArgRParen})
}

func TestClientIDFields(t *testing.T) {
	t.Run("reserved names dropped, whatever their case", func(t *testing.T) {
		got := clientIDFields(strArgs(
			"name", "Mutt", "X-Originating-IP", "10.9.9.9", "x-originating-port", "1",
			"x-connected-ip", "10.9.9.8", "X-CONNECTED-PORT", "2", "x-session-id", "forged",
			"x-session-ext-id", "forged", "x-proxy-ttl", "9", "x-forward-foo", "bar",
			"x-multiplex", "0", "x-client-transport", "tls", "x-mailer", "kept", "version", "NIL"))
		want := []idField{{name: "name", value: "Mutt"}, {name: "x-mailer", value: "kept"}, {name: "version", value: "NIL", nilValue: true}}
		if !equalFields(got, want) {
			t.Errorf("got %+v; want %+v", got, want)
		}
	})
	t.Run("NIL keeps nothing", func(t *testing.T) {
		if got := clientIDFields([]imapwire.Arg{{Kind: imapwire.ArgAtom, Val: "NIL"}}); got != nil {
			t.Errorf("got %+v; want none", got)
		}
	})
	t.Run("octets a quoted string cannot carry", func(t *testing.T) {
		got := clientIDFields(strArgs("name", "a\r\nb", "os", "Linux", "vendor", "caf\xc3\xa9"))
		want := []idField{{name: "os", value: "Linux"}}
		if !equalFields(got, want) {
			t.Errorf("got %+v; want %+v", got, want)
		}
	})
	t.Run("bounded count", func(t *testing.T) {
		var list []string
		for i := range maxIDPairs {
			list = append(list, "f"+string(rune('a'+i%26))+string(rune('a'+i/26)), "v")
		}
		got := clientIDFields(strArgs(list...))
		if want := maxIDPairs - len(forwardFieldNames); len(got) != want {
			t.Errorf("kept %d fields; want %d (30 pairs in all with the proxy's)", len(got), want)
		}
	})
	t.Run("bounded size", func(t *testing.T) {
		long := strings.Repeat("v", maxIDValue)
		got := clientIDFields(strArgs("a", long, "b", long, "c", "short"))
		want := []idField{{name: "a", value: long}, {name: "c", value: "short"}}
		if !equalFields(got, want) {
			t.Errorf("kept %d fields; want a and c", len(got))
		}
	})
}

func equalFields(a, b []idField) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestValidIDBounds(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []imapwire.Arg
		want bool
	}{
		{"field of 30 octets", strArgs(strings.Repeat("f", 30), "v"), true},
		{"field of 31 octets", strArgs(strings.Repeat("f", 31), "v"), false},
		{"value of 1024 octets", strArgs("f", strings.Repeat("v", 1024)), true},
		{"value of 1025 octets", strArgs("f", strings.Repeat("v", 1025)), false},
		{"NIL value", strArgs("f", "NIL"), true},
	} {
		if got := validID(tt.args); got != tt.want {
			t.Errorf("%s: got %v; want %v", tt.name, got, tt.want)
		}
	}
}

// v2sig is the PROXY protocol v2 signature (proxy-protocol.txt §2.2).
var v2sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

func TestProxyHeader(t *testing.T) {
	v2 := func(famProto byte, addrs ...[]byte) []byte {
		var body []byte
		for _, a := range addrs {
			body = append(body, a...)
		}
		b := append(bytes.Clone(v2sig), 0x21, famProto)
		b = binary.BigEndian.AppendUint16(b, uint16(len(body)))
		return append(b, body...)
	}
	port := func(p uint16) []byte { return binary.BigEndian.AppendUint16(nil, p) }
	ip := func(s string) []byte { return netip.MustParseAddr(s).AsSlice() }
	for _, tt := range []struct {
		name string
		f    *forwarding
		want []byte
	}{
		{"v1 ipv4", &forwarding{mode: ForwardProxyV1, client: tcp("192.0.2.7:50123"), local: tcp("198.51.100.1:143")},
			[]byte("PROXY TCP4 192.0.2.7 198.51.100.1 50123 143\r\n")},
		{"v1 ipv6", &forwarding{mode: ForwardProxyV1, client: tcp("[2001:db8::2]:50123"), local: tcp("[2001:db8::1%eth0]:993")},
			[]byte("PROXY TCP6 2001:db8::2 2001:db8::1 50123 993\r\n")},
		{"v1 mapped ipv4 is ipv4", &forwarding{mode: ForwardProxyV1, client: tcp("[::ffff:192.0.2.7]:1"), local: tcp("[::ffff:192.0.2.8]:2")},
			[]byte("PROXY TCP4 192.0.2.7 192.0.2.8 1 2\r\n")},
		{"v1 without addresses", &forwarding{mode: ForwardProxyV1}, []byte("PROXY UNKNOWN\r\n")},
		{"v2 ipv4", &forwarding{mode: ForwardProxyV2, client: tcp("192.0.2.7:50123"), local: tcp("198.51.100.1:143")},
			v2(0x11, ip("192.0.2.7"), ip("198.51.100.1"), port(50123), port(143))},
		{"v2 ipv6", &forwarding{mode: ForwardProxyV2, client: tcp("[2001:db8::2]:50123"), local: tcp("[2001:db8::1]:993")},
			v2(0x21, ip("2001:db8::2"), ip("2001:db8::1"), port(50123), port(993))},
		{"v2 from a TLS client carries PP2_TYPE_SSL", &forwarding{mode: ForwardProxyV2, client: tcp("192.0.2.7:50123"), local: tcp("198.51.100.1:993"), clientTLS: "TLSv1.3"},
			v2(0x11, ip("192.0.2.7"), ip("198.51.100.1"), port(50123), port(993),
				[]byte{0x20, 0, 15, 0x01, 0, 0, 0, 1, 0x21, 0, 7}, []byte("TLSv1.3"))},
		{"v1 has no room for TLS", &forwarding{mode: ForwardProxyV1, client: tcp("192.0.2.7:50123"), local: tcp("198.51.100.1:993"), clientTLS: "TLSv1.3"},
			[]byte("PROXY TCP4 192.0.2.7 198.51.100.1 50123 993\r\n")},
		{"v2 without addresses is LOCAL", &forwarding{mode: ForwardProxyV2},
			append(bytes.Clone(v2sig), 0x20, 0x00, 0, 0)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.f.proxyHeader()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
}
