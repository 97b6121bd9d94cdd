package proxy

import (
	"strings"

	"github.com/imapguard/imapguard/proxy/imapwire"
)

// handleID runs ID (RFC 2971) before login: the proxy names itself, and
// keeps the client's fields (the last ID's) to pass on to the upstream
// before it logs in there (forward.go), as Dovecot's own proxy does, so
// the server still logs which client it talks to. An ID sent after login
// is relayed to the upstream like any command.
func (c *conn) handleID(cmd *imapwire.Command) bool {
	if !validID(cmd.Args) {
		return c.bad(bad(cmd.Tag, "Invalid ID arguments"))
	}
	c.clientID = clientIDFields(cmd.Args)
	return c.w.respond(idData(), completed(cmd.Tag, "ID")) == nil
}

// validID checks ID's argument: NIL, or a parenthesised list of at most
// 30 field-value pairs of strings, each field at most 30 octets and each
// value at most 1024 (RFC 2971 §3.1, §3.3; Dovecot answers BAD to a
// longer field as well).
func validID(args []imapwire.Arg) bool {
	if len(args) == 1 && args[0].Kind == imapwire.ArgAtom && strings.EqualFold(args[0].Val, "NIL") {
		return true
	}
	if len(args) < 2 || args[0].Kind != imapwire.ArgLParen || args[len(args)-1].Kind != imapwire.ArgRParen {
		return false
	}
	inner := args[1 : len(args)-1]
	if len(inner)%2 != 0 || len(inner) > 2*maxIDPairs {
		return false
	}
	for i, a := range inner {
		switch {
		case a.Kind == imapwire.ArgString && i%2 == 0 && len(a.Val) > maxIDField:
			return false
		case a.Kind == imapwire.ArgString && len(a.Val) > maxIDValue:
			return false
		case a.Kind == imapwire.ArgString:
		case a.Kind == imapwire.ArgAtom && i%2 == 1 && strings.EqualFold(a.Val, "NIL"):
		default:
			return false
		}
	}
	return true
}
