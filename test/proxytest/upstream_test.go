package proxytest

import (
	"strings"
	"testing"
)

// TestFakeCommand: a Fake reads whole commands, literals included, asks
// for synchronizing ones, refuses those over MaxLiteral and records what
// it read.
func TestFakeCommand(t *testing.T) {
	f := StartFake(t, func(c *FakeConn) {
		c.MaxLiteral = 10
		Respond("* OK fake\r\n", func(_ *FakeConn, cmd Command) string {
			switch {
			case cmd.Refused:
				return cmd.Tag + " NO too big\r\n"
			case cmd.Name == "LOGOUT":
				return Logout(cmd.Tag)
			}
			return cmd.Tag + " OK " + cmd.Name + "\r\n"
		})(c)
	})
	c := Dial(t, f.Addr)
	c.Greeting()
	for _, tc := range []struct {
		name          string
		steps         []string // written in turn; each but the last is answered "+ go ahead"
		want, command string   // the answer, and what the fake recorded
	}{
		{"line", []string{"a NOOP\r\n"}, "a OK NOOP", "a NOOP"},
		{"sync literal", []string{"b LOGIN {5}\r\n", "alice secret\r\n"}, "b OK LOGIN", "b LOGIN {5}\r\nalice secret"},
		{"non-sync literal", []string{"c LOGIN {5+}\r\nalice {6+}\r\nsecret\r\n"}, "c OK LOGIN", "c LOGIN {5+}\r\nalice {6+}\r\nsecret"},
		{"refused literal", []string{"d APPEND INBOX {11}\r\n"}, "d NO too big", "d APPEND INBOX {11}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := c.For(t)
			for i, s := range tc.steps {
				c.Send(s)
				if i < len(tc.steps)-1 {
					c.Expect("+ go ahead")
				}
			}
			c.Expect(tc.want)
			if got := f.Next(t); got != tc.command {
				t.Errorf("recorded %q; want %q", got, tc.command)
			}
		})
	}
	c.Logout("z")
	if got := f.Next(t); !strings.HasSuffix(got, "LOGOUT") {
		t.Errorf("recorded %q; want z LOGOUT", got)
	}
}
