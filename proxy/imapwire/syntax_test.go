package imapwire

import (
	"bytes"
	"math/rand"
	"reflect"
	"strings"
	"testing"
	"testing/quick"
)

var rep = strings.Repeat // rep("a", 3) == "aaa"

func TestValidTag(t *testing.T) {
	for _, tt := range []struct {
		tag  string
		want bool
	}{
		{"a", true}, {"A1.2", true}, {"a]", true}, {"]", true}, {"tag-0001", true},
		{"abc~!#$&'-./:;<=>?@[^_`|", true},
		{"", false}, {"+", false}, {"a+", false}, {"*", false}, {"a b", false},
		{"%", false}, {"(", false}, {")", false}, {"{", false}, {"\"", false},
		{"\\", false}, {"\x00", false}, {"\x1f", false}, {"\x7f", false},
		{"\x80", false}, {"\xc3\xa4", false}, {"a\r", false}, {"a\n", false},
	} {
		if got := ValidTag([]byte(tt.tag)); got != tt.want {
			t.Errorf("ValidTag(%q) = %v; want %v", tt.tag, got, tt.want)
		}
	}
	// Every single octet against the grammar: tag = 1*<any ASTRING-CHAR
	// except "+">; ASTRING-CHAR = ATOM-CHAR / resp-specials.
	for c := 0; c < 256; c++ {
		want := c > 0x20 && c < 0x7f && !strings.ContainsRune(`(){ %*"\+`, rune(c))
		if got := ValidTag([]byte{byte(c)}); got != want {
			t.Errorf("ValidTag(%q) = %v; want %v", byte(c), got, want)
		}
	}
}

// QuoteOrLiteral must never let a credential change the command: a quoted
// result parses back (with the reader's own quoted-string parser) to the
// input and ends where the string ends; anything a quoted string cannot
// carry must come back as a literal.
func TestQuoteOrLiteral(t *testing.T) {
	check := func(s string) bool {
		q, lit := QuoteOrLiteral(s)
		needLit := strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r >= 0x7f }) >= 0
		if needLit {
			if !lit || q != "" {
				t.Errorf("QuoteOrLiteral(%q) = %q, %v; want a literal", s, q, lit)
				return false
			}
			return true
		}
		if lit {
			t.Errorf("QuoteOrLiteral(%q): literal for printable ASCII", s)
			return false
		}
		p := &lineParser{line: []byte(q + " rest")}
		got, err := p.quoted()
		if err != nil || got != s || p.pos != len(q) {
			t.Errorf("QuoteOrLiteral(%q) = %q, parsed back %q (pos %d of %d), %v", s, q, got, p.pos, len(q), err)
			return false
		}
		return true
	}
	for _, s := range []string{"", "alice", `"`, `\`, `\"`, `"\`, `a"b\c`, ` `, `{5}`, "a b",
		"\r", "\n", "\x00", "\x7f", "\x80", "jörg", "pass\r\nb LOGOUT", "a\"\r\n", `\\\"`} {
		check(s)
	}
	for c := 0; c < 256; c++ {
		check(string([]byte{byte(c)}))
		check("x" + string([]byte{byte(c)}) + "\"")
	}
	// Random strings over an alphabet rich in the dangerous octets.
	alpha := []byte("ab \"\\{}()*%+\r\n\x00\x7f\x80\xff")
	cfg := &quick.Config{MaxCount: 5000, Rand: rand.New(rand.NewSource(1)), Values: func(v []reflect.Value, r *rand.Rand) {
		b := make([]byte, r.Intn(20))
		for i := range b {
			if r.Intn(4) == 0 {
				b[i] = alpha[r.Intn(len(alpha))]
			} else {
				b[i] = byte(0x20 + r.Intn(0x5f))
			}
		}
		v[0] = reflect.ValueOf(string(b))
	}}
	if err := quick.Check(check, cfg); err != nil {
		t.Error(err)
	}
}

func TestLiteralPrefix(t *testing.T) {
	if got := LiteralPrefix(5, false); got != "{5}" {
		t.Errorf("got %q", got)
	}
	if got := LiteralPrefix(0, true); got != "{0+}" {
		t.Errorf("got %q", got)
	}
}

func TestSplitTagName(t *testing.T) {
	for _, tt := range []struct{ line, tag, name string }{
		{"a NOOP\r\n", "a", "NOOP"},
		{"a NOOP", "a", "NOOP"},
		{"a UID FETCH 1 (FLAGS)\r\n", "a", "UID"},
		{"a APPEND {5}\r\n", "a", "APPEND"},
		{"a\r\n", "a", ""},
		{"DONE\n", "DONE", ""},
		{"\r\n", "", ""},
		{"", "", ""},
		{" NOOP\r\n", "", "NOOP"},
		{"a  NOOP\r\n", "a", ""},
		{"a NOOP \r\n", "a", "NOOP"},
		{"a\x00b c\r\n", "a\x00b", "c"},
	} {
		tag, name := SplitTagName([]byte(tt.line))
		if string(tag) != tt.tag || string(name) != tt.name {
			t.Errorf("SplitTagName(%q) = %q, %q; want %q, %q", tt.line, tag, name, tt.tag, tt.name)
		}
	}
}

func TestTrimEOL(t *testing.T) {
	for in, want := range map[string]string{"a\r\n": "a", "a\n": "a", "a\r": "a", "a": "a", "": "", "\r\n": "", "a\n\n": "a\n", "a\r\r\n": "a\r"} {
		if got := string(TrimEOL([]byte(in))); got != want {
			t.Errorf("TrimEOL(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestEqualFoldASCII(t *testing.T) {
	for _, tt := range []struct {
		b, upper string
		want     bool
	}{
		{"append", "APPEND", true}, {"Append", "APPEND", true}, {"APPEND", "APPEND", true},
		{"appen", "APPEND", false}, {"appendx", "APPEND", false}, {"", "", true},
		{"\xc1PPEND", "APPEND", false}, {"{", "[", false}, {"@", "`", false},
	} {
		if got := EqualFoldASCII([]byte(tt.b), tt.upper); got != tt.want {
			t.Errorf("EqualFoldASCII(%q, %q) = %v", tt.b, tt.upper, got)
		}
	}
}

func TestSanitizeText(t *testing.T) {
	if got := SanitizeText("a\r\nb\x00c"); got != "a  b c" {
		t.Errorf("got %q", got)
	}
	if got := SanitizeText(rep("a", 300)); len(got) != 200 {
		t.Errorf("len %d; want 200", len(got))
	}
	if bytes.ContainsAny([]byte(SanitizeText("x\r\ny")), "\r\n") {
		t.Error("CR/LF left")
	}
}
