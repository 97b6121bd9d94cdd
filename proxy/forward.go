package proxy

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"net"
	"net/netip"
	"strconv"
	"strings"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/imapguard/imapguard/proxy/imapwire"
)

// How the proxy tells the upstream who the client is (Options.ForwardClient,
// issue 11). Without it the upstream sees every client as the proxy: its
// logs, its per-address caps and its auth penalty (Dovecot's anvil) land
// on the proxy's address, and one attacker slows every user behind it.
const (
	// ForwardNone tells the upstream nothing; the client's own ID fields
	// still reach an upstream that advertises ID.
	ForwardNone = "none"
	// ForwardID sends ID (RFC 2971) with Dovecot's x-originating-ip,
	// x-originating-port, x-connected-ip, x-connected-port and
	// x-session-id before logging in, when the upstream advertises ID.
	// Dovecot believes them from its login_trusted_networks.
	ForwardID = "id"
	// ForwardProxyV1 and ForwardProxyV2 write a PROXY protocol header
	// (HAProxy's proxy-protocol.txt, text or binary) as the first bytes
	// of the upstream connection, before TLS. Dovecot reads it on an
	// inet_listener with haproxy = yes, from haproxy_trusted_networks.
	ForwardProxyV1 = "proxy_v1"
	ForwardProxyV2 = "proxy_v2"
)

// RFC 2971 §3.3: field strings are at most 30 octets, value strings at
// most 1024, and at most 30 field-value pairs are sent.
const (
	maxIDField = 30
	maxIDValue = 1024
	maxIDPairs = 30
	// maxClientIDOctets bounds the client's fields as the proxy forwards
	// them, quoted: Dovecot's login process keeps at most 2048 octets of
	// a client's ID for its own proxy (LOGIN_MAX_CLIENT_ID_LEN), and its
	// login line buffer is 8 KiB.
	maxClientIDOctets = 2048
)

// idField is one field-value pair of an ID; a NIL value is nilValue.
type idField struct {
	name, value string
	nilValue    bool
}

// reservedIDPrefixes are the names of ID fields (compared in lower case)
// that carry the client's address or session to a server that trusts
// the sender: the ones the proxy sets and every one Dovecot 2.3 reads from
// its login_trusted_networks (imap-login-cmd-id.c: x-originating-ip/-port,
// x-connected-ip/-port, x-proxy-ttl, x-session-id, x-session-ext-id,
// x-forward-*, x-multiplex), and the x-client-* names later versions add.
// A client's field with such a name is dropped: through a trusted proxy it
// would forge the client's address.
var reservedIDPrefixes = []string{
	"x-originating-", "x-connected-", "x-session-", "x-proxy-",
	"x-forward-", "x-multiplex", "x-client-",
}

func reservedIDField(name string) bool {
	n := strings.ToLower(name)
	for _, p := range reservedIDPrefixes {
		if strings.HasPrefix(n, p) {
			return true
		}
	}
	return false
}

// clientIDFields keeps the fields of a client's ID (RFC 2971) that the
// proxy passes on to the upstream: not the reserved ones, and not those
// a quoted string cannot carry (a control or 8-bit octet), up to
// maxIDPairs-reserved pairs (the proxy adds its own) and maxClientIDOctets.
// args is the list validID accepted: "(" field value ... ")" or NIL.
func clientIDFields(args []imapwire.Arg) []idField {
	if len(args) < 2 {
		return nil // NIL
	}
	var out []idField
	size := 0
	inner := args[1 : len(args)-1]
	for i := 0; i+1 < len(inner); i += 2 {
		name, v := inner[i].Val, inner[i+1]
		if reservedIDField(name) || len(out) >= maxIDPairs-len(forwardFieldNames) {
			continue
		}
		f := idField{name: name, value: v.Val, nilValue: v.Kind == imapwire.ArgAtom}
		q, lit := imapwire.QuoteOrLiteral(f.value)
		qn, litn := imapwire.QuoteOrLiteral(f.name)
		if lit || litn {
			continue
		}
		n := len(qn) + 1 + len(q) + 1
		if size+n > maxClientIDOctets {
			continue
		}
		size += n
		out = append(out, f)
	}
	return out
}

// forwardFieldNames are the fields ForwardID sends, in order.
var forwardFieldNames = []string{
	"x-originating-ip", "x-originating-port",
	"x-connected-ip", "x-connected-port", "x-session-id",
}

// forwarding is what a connection tells the upstream about its client.
type forwarding struct {
	mode     string   // Options.ForwardClient
	client   net.Addr // the client's address (conn.remote)
	local    net.Addr // the address the client connected to (conn.local)
	session  string   // x-session-id, also in the proxy's log lines
	clientID []idField
	// clientTLS is the TLS version of the client's connection to the
	// proxy ("TLSv1.3"), "" for plaintext: PROXY v2 passes it on.
	clientTLS string
}

// idCommand is the ID command sent to the upstream before login: the
// client's own fields first, then, with ForwardID, the client's address,
// as Dovecot's own proxy sends it (imap-proxy.c). Every value is a quoted
// string, escaped, so nothing a client sent can end the command early.
// It is "" when there is nothing to send.
func (f *forwarding) idCommand(tag string) string {
	var fields []idField
	fields = append(fields, f.clientID...)
	if f.mode == ForwardID {
		cip, cport := addrParts(f.client)
		lip, lport := addrParts(f.local)
		if cip != "" {
			fields = append(fields,
				idField{name: "x-originating-ip", value: cip},
				idField{name: "x-originating-port", value: cport})
		}
		if lip != "" {
			fields = append(fields,
				idField{name: "x-connected-ip", value: lip},
				idField{name: "x-connected-port", value: lport})
		}
		if f.session != "" {
			fields = append(fields, idField{name: "x-session-id", value: f.session})
		}
	}
	if len(fields) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString(tag + " ID (")
	for i, fl := range fields {
		if i > 0 {
			b.WriteByte(' ')
		}
		q, _ := imapwire.QuoteOrLiteral(fl.name)
		b.WriteString(q + " ")
		if fl.nilValue {
			b.WriteString("NIL")
			continue
		}
		q, _ = imapwire.QuoteOrLiteral(fl.value)
		b.WriteString(q)
	}
	b.WriteString(")\r\n")
	return b.String()
}

// addrParts is a TCP address's IP, IPv4-mapped addresses unmapped and
// without an IPv6 zone (which names an interface of the proxy, meaningless
// to the upstream), and its port; "" for an address that is not IP.
func addrParts(a net.Addr) (ip, port string) {
	if a == nil {
		return "", ""
	}
	var ap netip.AddrPort
	if ta, ok := a.(*net.TCPAddr); ok {
		ap = ta.AddrPort()
	} else {
		var err error
		if ap, err = netip.ParseAddrPort(a.String()); err != nil {
			return "", ""
		}
	}
	if !ap.Addr().IsValid() {
		return "", ""
	}
	return ap.Addr().Unmap().WithZone("").String(), strconv.Itoa(int(ap.Port()))
}

// proxyHeader is the PROXY protocol header (version 1 or 2) for a TCP
// connection from client to local: IPv4 when both are IPv4 (IPv4-mapped
// addresses unmapped), IPv6 otherwise. When either is not an IP address
// (or f is nil: CheckUpstream), it is the header that names no client
// (v1 "PROXY UNKNOWN", v2 LOCAL), on which the upstream uses the
// connection's own addresses, as for a health check.
func (f *forwarding) proxyHeader() ([]byte, error) {
	version := byte(1)
	if f != nil && f.mode == ForwardProxyV2 {
		version = 2
	}
	var src, dst net.Addr
	if f != nil {
		if s, ok := tcpAddr(f.client); ok {
			if d, ok := tcpAddr(f.local); ok {
				src, dst = s, d
			}
		}
	}
	h := proxyproto.HeaderProxyFromAddrs(version, src, dst)
	if version == 2 && h.Command == proxyproto.PROXY && f.clientTLS != "" {
		// proxy-protocol.txt §2.2.5, as HAProxy's send-proxy-v2-ssl:
		// PP2_CLIENT_SSL, verify non-zero (no client certificate was
		// verified), and the version. Dovecot counts such a connection as
		// secured, so its disable_plaintext_auth does not refuse the
		// login of a client that used TLS to the proxy.
		ssl := []byte{0x01, 0, 0, 0, 1, byte(proxyproto.PP2_SUBTYPE_SSL_VERSION), 0, byte(len(f.clientTLS))}
		ssl = append(ssl, f.clientTLS...)
		if err := h.SetTLVs([]proxyproto.TLV{{Type: proxyproto.PP2_TYPE_SSL, Value: ssl}}); err != nil {
			return nil, err
		}
	}
	return h.Format()
}

// tlsVersionName names a TLS version as OpenSSL and HAProxy do in the
// PROXY v2 SSL version field.
func tlsVersionName(v uint16) string {
	switch v {
	case tls.VersionTLS10:
		return "TLSv1"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS13:
		return "TLSv1.3"
	}
	return "TLS"
}

func tcpAddr(a net.Addr) (*net.TCPAddr, bool) {
	ip, port := addrParts(a)
	if ip == "" {
		return nil, false
	}
	ap, err := netip.ParseAddrPort(net.JoinHostPort(ip, port))
	if err != nil {
		return nil, false
	}
	return net.TCPAddrFromAddrPort(ap), true
}

// newSessionID is a connection's x-session-id: 16 characters of base64
// from 12 random octets, as Dovecot's own session ids. The proxy logs it
// as "session" on the connection's login lines, so an operator can find
// the connection in the upstream's log (Dovecot logs it as session=<...>).
func newSessionID() string {
	var b [12]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
