package imapwire

import (
	"testing"
)

func TestLiteralAt(t *testing.T) {
	tests := []struct {
		line          string
		n             int64
		sync, ok, bad bool
	}{
		{"{5}\r\n", 5, true, true, false},
		{"a LOGIN {5}\r\n", 5, true, true, false},
		{"{5+}\r\n", 5, false, true, false},
		{"{5}\n", 5, true, true, false},
		{"{5}", 5, true, true, false},
		{"{5}\r", 5, true, true, false},
		{"~{5}\r\n", 5, true, true, false},
		{"a APPEND x ~{5+}\r\n", 5, false, true, false},
		{"{0}\r\n", 0, true, true, false},
		{"{0+}\r\n", 0, false, true, false},
		{"{4294967295}\r\n", 4294967295, true, true, false},
		{"{4294967295+}\r\n", 4294967295, false, true, false},
		{"{{5}\r\n", 5, true, true, false},
		{"x}{5}\r\n", 5, true, true, false},

		{"{4294967296}\r\n", 0, false, false, true},
		{"{99999999999}\r\n", 0, false, false, true},
		{"{99999999999+}\r\n", 0, false, false, true},
		{"{-1}\r\n", 0, false, false, true},
		{"{1a}\r\n", 0, false, false, true},
		{"{}\r\n", 0, false, false, true},
		{"{+}\r\n", 0, false, false, true},
		{"{5++}\r\n", 0, false, false, true},
		{"{+5}\r\n", 0, false, false, true},
		{"{ 5}\r\n", 0, false, false, true},
		{"{5 }\r\n", 0, false, false, true},
		{"{5}}\r\n", 0, false, false, true},
		{"{5-}\r\n", 0, false, false, true},

		{"", 0, false, false, false},
		{"\r\n", 0, false, false, false},
		{"\n", 0, false, false, false},
		{"}", 0, false, false, false},
		{"5}\r\n", 0, false, false, false},
		{"{5}x\r\n", 0, false, false, false},
		{"{5}\r\n\r\n", 0, false, false, false},
		{"{5}\n\r", 0, false, false, false},
		{"a NOOP\r\n", 0, false, false, false},
		{"\"{5}\"\r\n", 0, false, false, false},
	}
	// "{5} " CRLF is no literal; reporting it bad is fine too.
	if n, _, ok, _ := LiteralAt([]byte("{5} \r\n")); ok || n != 0 {
		t.Errorf("LiteralAt(\"{5} \\r\\n\") = %d, ok", n)
	}
	for _, tt := range tests {
		n, sync, ok, bad := LiteralAt([]byte(tt.line))
		if n != tt.n || sync != tt.sync || ok != tt.ok || bad != tt.bad {
			t.Errorf("LiteralAt(%q) = %d, %v, %v, %v; want %d, %v, %v, %v",
				tt.line, n, sync, ok, bad, tt.n, tt.sync, tt.ok, tt.bad)
		}
	}
}

// RFC 9051 §9: number = 1*DIGIT, a value below 2^32. "{00000000005}" is a
// valid literal of 5 octets and servers (go-imap, Dovecot) read it as one;
// a framer that does not loses track of the command and lets the client
// pass literal octets as if they were commands, past max_command_size.
func TestLiteralAtLeadingZeros(t *testing.T) {
	for _, tt := range []struct {
		line string
		n    int64
		sync bool
	}{
		{"{00000000005}\r\n", 5, true},
		{"{000000000000000000002000+}\r\n", 2000, false},
		{"~{00000000004294967295}\r\n", 4294967295, true},
	} {
		n, sync, ok, bad := LiteralAt([]byte(tt.line))
		if n != tt.n || sync != tt.sync || !ok || bad {
			t.Errorf("LiteralAt(%q) = %d, %v, %v, %v; want %d, %v, true, false", tt.line, n, sync, ok, bad, tt.n, tt.sync)
		}
	}
}

// Tail keeps the last TailSize bytes of what it was given, however the
// pieces are cut.
func TestTail(t *testing.T) {
	line := []byte("a SEARCH TEXT " + rep("x", 100) + " ~{4294967295+}\r\n")
	want := string(line[len(line)-TailSize:])
	for cut := 1; cut <= len(line); cut++ {
		var tl Tail
		for i := 0; i < len(line); i += cut {
			tl.Keep(line[i:min(i+cut, len(line))])
		}
		if got := string(tl.Bytes()); got != want {
			t.Fatalf("pieces of %d: kept %q; want %q", cut, got, want)
		}
	}
	var tl Tail
	tl.Keep([]byte("abc"))
	tl.Reset()
	tl.Keep([]byte("de"))
	if got := string(tl.Bytes()); got != "de" {
		t.Fatalf("after Reset: %q", got)
	}
}
