package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"text/template"
	"time"

	"github.com/imapguard/imapguard/test/dovecot"
)

// Dovecot 2.3 at 5,000 concurrent sessions. The harness starts it with
// test/dovecot; what that package's defaults stop, and what dovecotExtra
// sets instead:
//
//   - service imap { process_limit }: Dovecot runs one imap process per
//     session (client_limit = 1); the default limit is 100
//     (default_process_limit), after which logins wait. We allow
//     sessions + 1,000. An idle imap process costs about 400 KiB of PSS;
//     5,000 of them fit easily in 24 GB, and pid_max (32768 here) is far
//     away.
//   - service stats { client_limit }: every imap process keeps a
//     connection to stats-writer. At the default 1,000 (default_client_
//     limit) the master logs "service(stats): client_limit (1000)
//     reached, client connections are being dropped" and each further
//     imap process waits for a handshake timeout before it serves its
//     session, so logins beyond ~1,000 sessions crawl. We allow
//     sessions + 2,000.
//   - service imap-login: "high-performance mode" (service_count = 0): a
//     few long-lived login processes, process_min_avail = one per CPU,
//     each serving up to client_limit connections that are still logging
//     in. Without TLS a logged-in connection's descriptor is handed to
//     its imap process, so imap-login does not hold held sessions.
//   - mail_max_userip_connections: 10 by default per user and client
//     address; through a proxy all 5,000 sessions come from 127.0.0.1.
//   - auth_failure_delay = 0 and no anvil auth-penalty socket (both set by
//     test/dovecot): no deliberate delays for failed logins (there should
//     be none anyway).
//   - file descriptors: the harness runs Dovecot with the hard
//     RLIMIT_NOFILE as its soft limit (about 20,000 here).
//
// Opening sessions stays slow all the same (about 100-200 a second on
// two cores): each login forks and executes an imap process.
var dovecotExtra = template.Must(template.New("extra").Parse(`# The benchmark's limits (test/bench/dovecot.go).
mail_max_userip_connections = 100000
auth_verbose = no
maildir_very_dirty_syncs = yes
verbose_proctitle = no

namespace inbox {
  inbox = yes
  separator = /
}

service imap-login {
  # High-performance mode: long-lived login processes, one per CPU.
  service_count = 0
  process_min_avail = {{.CPUs}}
  process_limit = {{.LoginProcesses}}
  client_limit = 2000
}

# One imap process per session.
service imap {
  process_limit = {{.ImapProcesses}}
  client_limit = 1
}

# Every imap process keeps a connection to stats-writer.
service stats {
  client_limit = {{.AuxClients}}
}
`))

type dovecotLimits struct {
	CPUs           int
	LoginProcesses int
	ImapProcesses  int
	AuxClients     int
}

// startDovecot writes the bench user's maildir and starts Dovecot with
// the benchmark's limits in h.dir/dovecot.
func (h *harness) startDovecot() error {
	var extra strings.Builder
	err := dovecotExtra.Execute(&extra, dovecotLimits{
		CPUs:           runtime.NumCPU(),
		LoginProcesses: max(4, runtime.NumCPU()),
		ImapProcesses:  h.dovecotHeldMax() + 1000,
		AuxClients:     h.dovecotHeldMax() + 2000,
	})
	if err != nil {
		return err
	}
	// With a TLS workload selected, Dovecot also serves imaps (and offers
	// STARTTLS on its plaintext port, which nothing here uses) with the
	// benchmark's certificate. Without one it runs with ssl = no, as
	// before, so that the plaintext workloads see the same Dovecot.
	var certFile, keyFile string
	if h.tls != nil {
		certFile, keyFile = h.tls.cert, h.tls.key
	}
	inst, err := dovecot.Start(dovecot.Options{
		TLS:     h.tls != nil,
		TLSCert: certFile,
		TLSKey:  keyFile,
		Users:   []dovecot.User{{Username: benchUser, Password: benchPass}},
		Extra:   extra.String(),
		Dir:     filepath.Join(h.dir, "dovecot"),
		Binary:  h.bins.dovecot,
		PrepareMail: func(mailDir string) error {
			t0 := time.Now()
			if err := writeMaildir(filepath.Join(mailDir, benchUser), h.opts.messages, h.opts.bigSize); err != nil {
				return fmt.Errorf("writing the maildir: %w", err)
			}
			h.logf("maildir: %d messages in INBOX and one of %d bytes in %s, written in %v",
				h.opts.messages, h.opts.bigSize, bigMailbox, time.Since(t0).Round(time.Millisecond))
			return nil
		},
		ReadyTimeout: 30 * time.Second,
	})
	if err != nil {
		return err
	}
	// Stopped after the proxies (h.cleanup stops the children first), and
	// listed for reapStale should the harness be killed.
	h.cleanups = append(h.cleanups, func() {
		if err := inst.Stop(); err != nil {
			h.logf("%v", err)
		}
	})
	h.procs.recordGroup(inst.Pid(), "dovecot")
	h.dovecot = &service{name: "dovecot", addr: inst.Addr, tlsAddr: inst.TLSAddr, pid: inst.Pid()}
	if w := dovecotWarnings(inst.Log()); w != "" {
		h.logf("dovecot start-up warnings:\n%s", w)
	}
	return nil
}

// dovecotWarnings returns the warning and error lines of Dovecot's log.
func dovecotWarnings(log string) string {
	var out []string
	for l := range strings.Lines(log) {
		l = strings.TrimRight(l, "\n")
		if strings.Contains(l, "Warning:") || strings.Contains(l, "Error:") || strings.Contains(l, "Fatal:") || strings.Contains(l, "Panic:") {
			out = append(out, l)
		}
	}
	if len(out) > 20 {
		out = append(out[:20], fmt.Sprintf("... and %d more", len(out)-20))
	}
	return strings.Join(out, "\n")
}

// bigMailbox holds the one large message of the fetch workload; INBOX
// holds the small ones of fetchall.
const bigMailbox = "Big"

// writeMaildir writes the bench user's maildir directly: INBOX with n
// small messages and the mailbox Big with one message of bigSize bytes.
// Messages are stored with CRLF line ends and with their size in the
// file name (S= and W=), so that Dovecot neither converts line ends nor
// reads a file to learn its size.
func writeMaildir(root string, n, bigSize int) error {
	for _, d := range []string{root, filepath.Join(root, "."+bigMailbox)} {
		for _, sub := range []string{"cur", "new", "tmp"} {
			if err := os.MkdirAll(filepath.Join(d, sub), 0o755); err != nil {
				return err
			}
		}
	}
	if err := os.WriteFile(filepath.Join(root, "."+bigMailbox, "maildirfolder"), nil, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, "subscriptions"), []byte(bigMailbox+"\n"), 0o644); err != nil {
		return err
	}
	base := time.Date(2024, 1, 1, 9, 0, 0, 0, time.UTC)
	for i := 1; i <= n; i++ {
		msg := smallMessage(i, base.Add(time.Duration(i)*time.Minute))
		flags := ""
		if i%3 != 0 {
			flags = "S"
		}
		if err := writeMessage(filepath.Join(root, "cur"), base.Unix()+int64(i), i, msg, flags); err != nil {
			return err
		}
	}
	big := bigMessage(bigSize, base)
	return writeMessage(filepath.Join(root, "."+bigMailbox, "cur"), base.Unix(), 1, big, "")
}

func writeMessage(dir string, ts int64, seq int, msg []byte, flags string) error {
	name := fmt.Sprintf("%d.M%dP1.bench,S=%d,W=%d:2,%s", ts, seq, len(msg), len(msg), flags)
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, msg, 0o644); err != nil {
		return err
	}
	t := time.Unix(ts, 0)
	return os.Chtimes(p, t, t)
}

var (
	firstNames = []string{"Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Mallory", "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Victor", "Walter"}
	topics     = []string{"quarterly report", "lunch on Friday?", "re: build failure on main", "invoice 2024-%04d", "meeting notes", "holiday schedule", "fwd: conference travel", "patch review", "server maintenance window", "your order has shipped"}
)

// smallMessage returns a plausible 2-4 KB text message.
func smallMessage(i int, date time.Time) []byte {
	from := firstNames[i%len(firstNames)]
	to := firstNames[(i*7+3)%len(firstNames)]
	subject := topics[i%len(topics)]
	if strings.Contains(subject, "%") {
		subject = fmt.Sprintf(subject, i)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "Return-Path: <%s@example.org>\r\n", strings.ToLower(from))
	fmt.Fprintf(&b, "Message-ID: <bench.%d.%d@example.org>\r\n", i, date.Unix())
	fmt.Fprintf(&b, "Date: %s\r\n", date.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "From: %s <%s@example.org>\r\n", from, strings.ToLower(from))
	fmt.Fprintf(&b, "To: %s <%s@example.net>\r\n", to, strings.ToLower(to))
	if i%4 == 0 {
		fmt.Fprintf(&b, "Cc: team <team@example.net>, %s <%s@example.com>\r\n", firstNames[(i+5)%len(firstNames)], strings.ToLower(firstNames[(i+5)%len(firstNames)]))
	}
	fmt.Fprintf(&b, "Subject: %s (#%d)\r\n", subject, i)
	if i > 1 && i%5 == 0 {
		fmt.Fprintf(&b, "In-Reply-To: <bench.%d.%d@example.org>\r\n", i-1, date.Add(-time.Minute).Unix())
	}
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
	lines := 25 + i%25
	for l := range lines {
		fmt.Fprintf(&b, "Line %d of message %d: the quick brown fox jumps over the lazy dog.\r\n", l+1, i)
	}
	return b.Bytes()
}

// bigMessage returns a message of exactly size bytes: headers and a
// base64-looking body of 76-character lines.
func bigMessage(size int, date time.Time) []byte {
	var b bytes.Buffer
	b.Grow(size)
	fmt.Fprintf(&b, "Message-ID: <bench.big@example.org>\r\nDate: %s\r\n", date.Format(time.RFC1123Z))
	b.WriteString("From: Alice <alice@example.org>\r\nTo: Bob <bob@example.net>\r\nSubject: a large attachment\r\n")
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	line := make([]byte, 78)
	x := uint32(2463534242)
	for b.Len() < size {
		for j := range 76 {
			x ^= x << 13
			x ^= x >> 17
			x ^= x << 5
			line[j] = alphabet[x%64]
		}
		line[76], line[77] = '\r', '\n'
		switch rest := size - b.Len(); {
		case rest >= len(line)+2 || rest == len(line):
			b.Write(line)
		case rest > len(line):
			// 79 left: a shorter line now, an empty one after it.
			b.Write(line[:rest-4])
			b.WriteString("\r\n")
		default:
			// The last line, cut to fit.
			b.Write(line[:rest-2])
			b.WriteString("\r\n")
		}
	}
	return b.Bytes()
}
