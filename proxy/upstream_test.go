package proxy

import "testing"

func TestClientCaps(t *testing.T) {
	for _, tt := range []struct {
		caps []string
		want string
	}{
		{[]string{"IMAP4rev1", "STARTTLS", "AUTH=PLAIN", "compress=deflate", "IDLE", "SASL-IR", "LOGINDISABLED", "LITERAL+", "auth=login", "COMPRESS=X", "starttls"},
			"IMAP4rev1 IDLE LITERAL+"},
		{[]string{"IMAP4rev2", "COMPRESS"}, "IMAP4rev2 COMPRESS"},
		{nil, ""},
	} {
		if got := clientCaps(tt.caps); got != tt.want {
			t.Errorf("clientCaps(%q) = %q; want %q", tt.caps, got, tt.want)
		}
	}
}
