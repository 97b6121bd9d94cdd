package wiretest

import (
	"bytes"
	"fmt"
)

// Response streams, and a recorder of what a response copier writes.

// ResponseStreams are upstream response streams, by name.
func ResponseStreams() map[string]string {
	body := "From: a@b\r\nSubject: {5}\r\n\r\n* 1 FETCH (BODY[] {3}\r\nabc)\r\nline\r\n"
	return map[string]string{
		"simple":            "* 3 EXISTS\r\na OK done\r\n",
		"fetch":             fmt.Sprintf("* 1 FETCH (UID 7 BODY[] {%d}\r\n%s)\r\na OK FETCH completed\r\n", len(body), body),
		"two literals":      "* 1 FETCH (BODY[1] {3}\r\nabc BODY[2] {4}\r\nd\r\nf)\r\n* 2 FETCH (FLAGS ())\r\na OK\r\n",
		"empty literal":     "* 1 FETCH (BODY[] {0}\r\n)\r\n* LIST () \"/\" {0}\r\n\r\na OK\r\n",
		"literal8":          "* 1 FETCH (BINARY[1] ~{4}\r\n\x00\r\n\x00)\r\na OK\r\n",
		"bare LF":           "* 1 FETCH (BODY[] {2}\n\r\n)\na OK\n",
		"continuation":      "+ Ready for literal data\r\n+ idling\r\n* 4 EXISTS\r\nDONE? no\r\n",
		"long line":         "* SEARCH " + Rep("1 ", 3000) + "\r\na OK\r\n",
		"long line literal": "* 1 FETCH (BODY[] " + Rep("x", 2500) + " {5}\r\n{9}\r\n)\r\na OK\r\n",
		"bad literals":      "* OK {-1}\r\n* OK {99999999999}\r\n* OK {}\r\n* OK {5} \r\na OK\r\n",
		"capability":        "* CAPABILITY IMAP4rev1 COMPRESS=DEFLATE IDLE\r\n* OK [CAPABILITY IMAP4rev1 COMPRESS=DEFLATE] hi\r\na OK [CAPABILITY IMAP4rev1 COMPRESS=DEFLATE IDLE] done\r\n",
		"no final CRLF":     "* 1 EXISTS\r\n* 2 EXI",
		"big literal":       "* 1 FETCH (BODY[] {200000}\r\n" + LitBytes(200000) + ")\r\na OK\r\n",
	}
}

// ResponseSeeds are upstream response streams for the fuzzers.
func ResponseSeeds() []string {
	return []string{
		"* OK [CAPABILITY IMAP4rev2 STARTTLS AUTH=GSSAPI] IMAP4rev2 Service Ready\r\n",
		"* CAPABILITY IMAP4rev2 STARTTLS AUTH=GSSAPI LOGINDISABLED COMPRESS=DEFLATE\r\nabcd OK CAPABILITY completed\r\n",
		"* 172 EXISTS\r\n* OK [UIDVALIDITY 3857529045] UIDs valid\r\n* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\nA142 OK [READ-WRITE] SELECT completed\r\n",
		"* 12 FETCH (FLAGS (\\Seen) INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" RFC822.SIZE 4286 ENVELOPE (\"Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\" \"IMAP4rev2 WG mtg summary and minutes\" NIL NIL NIL NIL NIL NIL NIL \"<B27397-0100000@cac.washington.edu>\") BODY (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 3028 92))\r\na003 OK FETCH completed\r\n",
		"* 12 FETCH (BODY[HEADER] {42}\r\nDate: Wed, 17 Jul 1996 02:23:25 -0700\r\n\r\n)\r\na004 OK FETCH completed\r\n",
		"+ Ready for additional command text\r\n",
		"* LIST () \"/\" {5}\r\nfoo\r\n\r\n* LIST () \"/\" {0}\r\n\r\nA OK\r\n",
		"* 1 FETCH (BINARY[1] ~{4}\r\n\x00\r\n\x00)\r\n",
		"* 1 FETCH (BODY[] {3}\r\n{3}\r\n BODY[1] {0}\r\n)\r\n",
		"* 1 FETCH (BODY[] {99999999999}\r\n)\r\n* OK {-1}\r\n* OK {1a}\r\n* OK {}\r\n",
		"* 1 FETCH (BODY[] {00000000003}\r\nabc)\r\n",
		"* SEARCH " + Rep("1 ", 3000) + "{5}\r\nabcde\r\n",
		"* 1 EXISTS\r\n* 2 EXI",
		"\x00\xff\r\r\n\n",
		"a OK [CAPABILITY IMAP4rev1] try COMPRESS=DEFLATE\r\n",
	}
}

// RelayEvent is one write of a response copier: the bytes written so far,
// the boundary it reported (absolute, or -1) and whether it said the
// stream is inside a response.
type RelayEvent struct {
	Written  int
	Boundary int
	Mid      bool
}

// RelayRecorder records what a response copier writes: the bytes, and
// for each write where the last complete response ends.
type RelayRecorder struct {
	W      bytes.Buffer
	Events []RelayEvent
}

// Relay records p, with boundary the offset in p after its last complete
// response (-1 if none).
func (r *RelayRecorder) Relay(p []byte, boundary int, mid bool) {
	before := r.W.Len()
	r.W.Write(p)
	e := RelayEvent{Written: r.W.Len(), Boundary: -1, Mid: mid}
	if boundary >= 0 {
		e.Boundary = before + boundary
	}
	r.Events = append(r.Events, e)
}

// CheckRelay returns what is wrong with the reported boundaries (and with
// checkMid, the reported inside-a-response state) of out, against
// RefBoundaries, or "".
func CheckRelay(out []byte, ev []RelayEvent, checkMid bool) string {
	ref := RefBoundaries(out)
	prev := 0
	for _, e := range ev {
		want := -1
		for o := e.Written; o > prev; o-- {
			if ref[o] {
				want = o
				break
			}
		}
		if e.Boundary != want {
			return fmt.Sprintf("bytes %d..%d: boundary %d; want %d (stream %.300q)", prev, e.Written, e.Boundary, want, out)
		}
		if checkMid {
			atBoundary := e.Written == 0 || ref[e.Written]
			if e.Mid == atBoundary {
				return fmt.Sprintf("after %d bytes: mid = %v; the stream is at a boundary: %v (stream %.300q)", e.Written, e.Mid, atBoundary, out)
			}
		}
		prev = e.Written
	}
	return ""
}
