package proxy

// The differential test of issue 10: random and mutated command streams
// through the proxy to a real Dovecot, each checked by the oracle in
// dovecot_harness_test.go (every command Dovecot answered is one the
// proxy framed, counted and passed on; none over max_command_size;
// Dovecot never ran COMPRESS or STARTTLS; the session ends).
//
// TestDifferentialDovecot runs fixed seeds and a few dozen fresh ones in
// make test; FuzzDifferentialDovecot runs its corpus there and, under
// make fuzz, whatever the fuzzer makes of it for FUZZTIME.

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var (
	diffSeed = flag.Uint64("difftest.seed", 0, "first seed of TestDifferentialDovecot's fresh scenarios (0: from the clock)")
	diffN    = flag.Int("difftest.n", 40, "how many fresh scenarios TestDifferentialDovecot runs")
	// writeCorpus makes TestWriteDiffCorpus rewrite the generated part
	// of the fuzz corpus (testdata/fuzz/FuzzDifferentialDovecot/gen-*)
	// and the review's reproductions (review-*).
	writeCorpus = flag.Bool("difftest.writecorpus", false, "rewrite FuzzDifferentialDovecot's generated seed corpus")
)

// diffFixedSeeds always run: seeds whose scenarios cover each mutation
// at least once (see TestDiffGeneratorCoverage).
var diffFixedSeeds = []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}

// diffRunners is how many scenarios run at once, each as its own user.
const diffRunners = 2

func TestDifferentialDovecot(t *testing.T) {
	d := startDiffDovecot(t, diffRunners)
	seeds := append([]uint64(nil), diffFixedSeeds...)
	base := *diffSeed
	if base == 0 {
		base = uint64(time.Now().UnixNano())
	}
	t.Logf("fresh scenarios: seeds %d.. (rerun with -difftest.seed=%d)", base, base)
	for i := range *diffN {
		seeds = append(seeds, base+uint64(i))
	}
	runDiffScenarios(t, d, seeds)
}

// runDiffScenarios runs the scenarios of seeds on diffRunners parallel
// subtests, each as its own user, and fails with a report for each that
// the oracle rejects (at most a few: a stalled scenario costs
// -difftest.stall).
func runDiffScenarios(t *testing.T, d *diffDovecot, seeds []uint64) {
	var failed atomic.Int32
	for r := range diffRunners {
		var mine []uint64
		for i := r; i < len(seeds); i += diffRunners {
			mine = append(mine, seeds[i])
		}
		user := d.users[r]
		t.Run("runner"+strconv.Itoa(r), func(t *testing.T) {
			t.Parallel()
			for _, seed := range mine {
				if failed.Load() >= 3 {
					t.Logf("seed %d and later not run: enough failures", seed)
					return
				}
				run := runScenario(t, d, user, genScenario(seed))
				if probs := run.problems(); len(probs) > 0 {
					failed.Add(1)
					t.Errorf("seed %d:\n  %s\n%s", seed, strings.Join(probs, "\n  "), run.report())
				}
				if run.exists < diffMessages || run.exists > 30 {
					if err := d.resetInbox(user); err != nil {
						t.Fatalf("resetting %s's INBOX: %v", user, err)
					}
				}
			}
		})
	}
}

// TestWriteDiffCorpus rewrites the generated part of the fuzz corpus
// when asked to (-difftest.writecorpus); otherwise it does nothing.
func TestWriteDiffCorpus(t *testing.T) {
	if !*writeCorpus {
		return
	}
	if err := writeDiffCorpus(filepath.Join("testdata", "fuzz", "FuzzDifferentialDovecot")); err != nil {
		t.Fatal(err)
	}
}

func FuzzDifferentialDovecot(f *testing.F) {
	d := startDiffDovecot(f, 1)
	var mu sync.Mutex // one scenario at a time per process: one user
	f.Fuzz(func(t *testing.T, stream []byte, chunking uint64) {
		if len(stream) > 256<<10 {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		sc := diffScenario{name: fmt.Sprintf("fuzz input (%d bytes, chunking %d)", len(stream), chunking), stream: stream}
		sc.chunks = genChunks(rand.New(rand.NewPCG(chunking, 0)), len(stream))
		run := runScenario(t, d, d.users[0], sc)
		if run.exists < diffMessages || run.exists > 30 {
			if err := d.resetInbox(d.users[0]); err != nil {
				t.Fatalf("resetting the INBOX: %v", err)
			}
		}
		if probs := run.problems(); len(probs) > 0 {
			t.Errorf("%s\n%s", strings.Join(probs, "\n"), run.report())
		}
	})
}

// resetInbox brings user's INBOX back to diffMessages messages, talking
// to Dovecot directly, after scenarios appended or expunged many.
func (d *diffDovecot) resetInbox(user string) error {
	nc, err := net.DialTimeout("tcp", d.addr, *scenarioTimeout)
	if err != nil {
		return err
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(*scenarioTimeout))
	br := bufio.NewReader(nc)
	if _, err := br.ReadString('\n'); err != nil {
		return err
	}
	cmd := func(tag, text string) (string, error) {
		if _, err := io.WriteString(nc, tag+" "+text+"\r\n"); err != nil {
			return "", err
		}
		var data strings.Builder
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return "", err
			}
			if strings.HasPrefix(l, tag+" ") {
				if !strings.HasPrefix(l, tag+" OK") {
					return "", fmt.Errorf("%s %s: %s", tag, text, strings.TrimSpace(l))
				}
				return data.String(), nil
			}
			data.WriteString(l)
		}
	}
	steps := [][2]string{
		{"r1", "LOGIN " + user + " " + diffPassword},
		{"r2", "SELECT INBOX"},
		{"r3", `STORE 1:* +FLAGS.SILENT (\Deleted)`},
		{"r4", "EXPUNGE"},
	}
	for _, s := range steps {
		if _, err := cmd(s[0], s[1]); err != nil && s[0] != "r3" { // r3 fails on an empty INBOX
			return err
		}
	}
	for i := 1; i <= diffMessages; i++ {
		m := diffMessage(i)
		if _, err := cmd("r5", fmt.Sprintf("APPEND INBOX {%d+}\r\n%s", len(m), m)); err != nil {
			return err
		}
	}
	_, err = cmd("r6", "LOGOUT")
	return err
}

// The generator. A scenario is 1..20 commands, each a valid command of a
// kind the proxy must frame right (literals of every form, APPEND and
// MULTIAPPEND, IDLE, COMPRESS, STARTTLS, unknown commands ...), with
// some of them mutated: literals where the grammar has no argument,
// quotes and line ends in the wrong place, bad or reused tags, sizes
// around max_command_size and literal sizes that lie. Literal octets
// often hold a command of their own: what Dovecot would run if it did not
// read them as a literal.

// genPart is a piece of a command: text on the current line, or a
// literal (its announcement ends the line, its octets follow).
type genPart struct {
	text string
	lit  *genLit
}

type genLit struct {
	form string // "{", "{+" or "~{"
	data string
	size int // announced; len(data) unless it lies
}

func (l *genLit) announce() string {
	switch l.form {
	case "{+":
		return "{" + strconv.Itoa(l.size) + "+}"
	case "~{":
		return "~{" + strconv.Itoa(l.size) + "}"
	}
	return "{" + strconv.Itoa(l.size) + "}"
}

func txt(s string) genPart { return genPart{text: s} }

func lit(form, data string) genPart {
	return genPart{lit: &genLit{form: form, data: data, size: len(data)}}
}

// gen builds one scenario from its PRNG.
type gen struct {
	r      *rand.Rand
	tags   []string
	next   int
	mutate map[string]int // mutations applied, by name (for coverage)
}

func genScenario(seed uint64) diffScenario {
	g := &gen{r: rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)), mutate: map[string]int{}}
	stream := g.stream()
	return diffScenario{name: "seed " + strconv.FormatUint(seed, 10), stream: stream, chunks: genChunks(g.r, len(stream))}
}

// genChunks splits n bytes into writes: whole, random sizes, or byte by
// byte for short streams.
func genChunks(r *rand.Rand, n int) []int {
	switch r.IntN(3) {
	case 0:
		return nil
	case 1:
		if n <= 600 {
			c := make([]int, n)
			for i := range c {
				c[i] = 1
			}
			return c
		}
	}
	var c []int
	for left := n; left > 0; {
		k := 1 + r.IntN(min(left, max(64, n/8)))
		c = append(c, k)
		left -= k
	}
	return c
}

func (g *gen) pick(n int) int        { return g.r.IntN(n) }
func (g *gen) chance(p float64) bool { return g.r.Float64() < p }
func (g *gen) one(ss ...string) string {
	return ss[g.r.IntN(len(ss))]
}

// tag returns a fresh tag, or now and then a reused or invalid one.
func (g *gen) tag() string {
	switch {
	case len(g.tags) > 0 && g.chance(0.08):
		g.mutate["reused tag"]++
		return g.tags[g.pick(len(g.tags))]
	case g.chance(0.06):
		g.mutate["invalid tag"]++
		// Tags RFC 9051 or Dovecot refuse, and ones the two disagree on.
		return g.one("+", "*", "a{", "(x", "a%", `a"b`, "a\\b", "a]", "a\x7f", "a\x01", "a\xc3\xa9", "")
	}
	g.next++
	t := "t" + strconv.Itoa(g.next)
	g.tags = append(g.tags, t)
	return t
}

// message is an APPEND message, often with text that looks like
// commands.
func (g *gen) message() string {
	body := g.one("hello\r\n", "h1 NOOP\r\n", "x SEARCH TEXT {3}\r\nabc\r\n", "c COMPRESS DEFLATE\r\n", "DONE\r\n")
	return "Subject: gen\r\n\r\n" + body
}

// hidden is a command to put in a literal's octets: one the upstream
// would run if it did not read them as a literal.
func (g *gen) hidden() string {
	g.next++
	tag := "h" + strconv.Itoa(g.next)
	return g.one(tag+" NOOP\r\n", tag+" COMPRESS DEFLATE\r\n", tag+" STARTTLS\r\n", tag+" SEARCH TEXT \"x\"\r\n", tag+" IDLE\r\n", "abc", "\r\n")
}

func (g *gen) litForm() string { return g.one("{", "{", "{+", "{+", "~{") }

// command returns a valid command (without its tag), and whether it is
// IDLE.
func (g *gen) command() ([]genPart, bool) {
	f := g.litForm
	switch g.pick(22) {
	case 0:
		return []genPart{txt(g.one("NOOP", "noop", "CHECK", "CAPABILITY", "NAMESPACE"))}, false
	case 1:
		return []genPart{txt(g.one("SELECT INBOX", "EXAMINE INBOX", "EXAMINE \"INBOX\"", "EXAMINE nonexist"))}, false
	case 2:
		return []genPart{txt("EXAMINE "), lit(f(), "INBOX")}, false
	case 3:
		return []genPart{txt(g.one("STATUS INBOX (MESSAGES UIDNEXT)", "STATUS \"INBOX\" (UNSEEN)"))}, false
	case 4:
		return []genPart{txt("STATUS "), lit(f(), "INBOX"), txt(" (MESSAGES)")}, false
	case 5:
		return []genPart{txt(g.one(`LIST "" "*"`, `LIST "" %`, `LSUB "" *`))}, false
	case 6:
		return []genPart{txt(`LIST "" `), lit(f(), "*")}, false
	case 7:
		return []genPart{txt(g.one(`SEARCH TEXT "body"`, "SEARCH ALL", `SEARCH OR SUBJECT "m1" BODY AAA`, "UID SEARCH ALL"))}, false
	case 8:
		return []genPart{txt("SEARCH TEXT "), lit(f(), "body")}, false
	case 9:
		return []genPart{txt("SEARCH CHARSET UTF-8 SUBJECT "), lit(f(), "m1"), txt(" BODY "), lit(f(), "AAA")}, false
	case 10:
		return []genPart{txt(g.one("FETCH 1:* (FLAGS)", "FETCH 1 BODY.PEEK[HEADER]", "FETCH 2 (BODY.PEEK[TEXT] UID)",
			"UID FETCH 1:* FLAGS", "FETCH 1 BINARY.PEEK[1]", "FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))}, false
	case 11:
		return []genPart{txt(g.one(`STORE 1 +FLAGS (\Seen)`, `STORE 2 -FLAGS.SILENT (\Flagged)`, `UID STORE 1 +FLAGS (\Answered)`, `STORE 3 FLAGS (\Draft)`))}, false
	case 12:
		return []genPart{txt(g.one("APPEND INBOX ", `APPEND INBOX (\Seen) `, `APPEND INBOX (\Seen) "01-Jan-2024 00:00:00 +0000" `, "APPEND nonexist ")), lit(f(), g.message())}, false
	case 13:
		return []genPart{txt("APPEND "), lit(f(), "INBOX"), txt(" "), lit(f(), g.message())}, false
	case 14: // MULTIAPPEND (RFC 3502)
		return []genPart{txt("APPEND INBOX "), lit(f(), g.message()), txt(` (\Flagged) `), lit(f(), g.message())}, false
	case 15:
		return []genPart{txt("IDLE")}, true
	case 16:
		return []genPart{txt(g.one("COMPRESS DEFLATE", "compress deflate", "STARTTLS", "COMPRESS"))}, false
	case 17:
		return []genPart{txt(g.one("ENABLE CONDSTORE", "ENABLE UTF8=ACCEPT", `ID NIL`, `ID ("name" "difftest")`))}, false
	case 18:
		return []genPart{txt(g.one("XFROB bar", "FOO", "UID FROB 1"))}, false
	case 19:
		return []genPart{txt("XFROB "), lit(f(), "abc")}, false
	case 20:
		return []genPart{txt("UID SEARCH TEXT "), lit(f(), "AAA")}, false
	default:
		return []genPart{txt("COMPRESS "), lit(f(), "DEFLATE")}, false
	}
}

// stream returns a scenario's byte stream.
func (g *gen) stream() []byte {
	var out strings.Builder
	n := 1 + g.pick(20)
	for range n {
		tag := g.tag()
		parts, idle := g.command()
		if g.chance(0.1) {
			parts = g.oversize(parts)
		}
		line := g.serialize(tag, parts)
		for k := g.pick(3); k > 0 && g.chance(0.5); k-- {
			line = g.mutateCommand(line, tag)
		}
		out.WriteString(line)
		if idle {
			switch {
			case g.chance(0.5):
				out.WriteString(g.one("DONE\r\n", "done\r\n"))
			case g.chance(0.5):
				// Not DONE: the proxy must refuse it and the IDLE goes on.
				g.mutate["line during IDLE"]++
				out.WriteString(g.serialize(g.tag(), []genPart{txt("NOOP")}) + "DONE\r\n")
			}
		}
		if g.chance(0.03) {
			g.mutate["DONE outside IDLE"]++
			out.WriteString("DONE\r\n")
		}
	}
	return []byte(out.String())
}

// serialize writes a command; a literal's announcement ends its line
// and its octets follow.
func (g *gen) serialize(tag string, parts []genPart) string {
	var b strings.Builder
	b.WriteString(tag + " ")
	for _, p := range parts {
		if p.lit == nil {
			b.WriteString(p.text)
			continue
		}
		l := *p.lit
		if g.chance(0.04) {
			g.mutate["lying literal size"]++
			l.size = max(0, l.size+g.one2(-3, -1, 1, 2, 50019-l.size))
		}
		b.WriteString(l.announce() + "\r\n" + l.data)
	}
	b.WriteString("\r\n")
	return b.String()
}

func (g *gen) one2(ns ...int) int { return ns[g.r.IntN(len(ns))] }

// oversize makes a command whose octets are about max_command_size:
// a long SEARCH line, a counted literal, or an APPEND message (which is
// not counted).
func (g *gen) oversize(parts []genPart) []genPart {
	g.mutate["oversize"]++
	n := diffMax + g.r.IntN(9) - 4 // total octets aimed at
	switch g.pick(4) {
	case 0:
		// tag "tN " is about 4 octets: aim at the whole line.
		return []genPart{txt(`SEARCH TEXT "` + strings.Repeat("A", max(1, n-len(`tNN SEARCH TEXT ""`)-2)) + `"`)}
	case 1:
		return []genPart{txt("SEARCH TEXT "), lit(g.litForm(), strings.Repeat("A", max(1, n-len("tNN SEARCH TEXT {1000}")-4)))}
	case 2:
		return []genPart{txt("APPEND INBOX "), lit(g.litForm(), "Subject: big\r\n\r\n"+strings.Repeat("B", g.one2(n, 3*n, 50019)))}
	default:
		return append(parts, txt(" "+strings.Repeat("Z", max(1, n/2))))
	}
}

// mutateCommand applies one mutation to a serialized command.
func (g *gen) mutateCommand(cmd, tag string) string {
	first := strings.Index(cmd, "\n") + 1 // the first line, with its end
	if first <= 0 {
		first = len(cmd)
	}
	insert := func(at int, s string) string { return cmd[:at] + s + cmd[at:] }
	lineEnd := strings.LastIndex(cmd[:first], "\r\n")
	if lineEnd < 0 {
		lineEnd = first
	}
	switch g.pick(9) {
	case 0, 1, 2:
		// A literal at a random kind of place.
		l := g.announceLiteral()
		var at int
		switch g.pick(6) {
		case 0: // inside an atom, or anywhere on the first line
			g.mutate["literal inside an atom"]++
			at = 1 + g.pick(max(1, lineEnd-1))
		case 1: // right after the tag, or as the command name
			g.mutate["literal after the tag"]++
			at = min(len(tag)+g.pick(2), lineEnd)
		case 2: // inside a quoted string
			g.mutate["literal in a quoted string"]++
			q := strings.IndexByte(cmd[:lineEnd], '"')
			if q < 0 {
				return insert(lineEnd, ` "x `+l)
			}
			at = q + 1
		case 3: // after an opening bracket
			g.mutate["literal after a bracket"]++
			b := strings.IndexAny(cmd[:lineEnd], "([")
			if b < 0 {
				return insert(lineEnd, " ("+l)
			}
			at = b + 1
		default: // at the end of the line, after a space (where an argument can start)
			g.mutate["literal at the line end"]++
			return insert(lineEnd, " "+l)
		}
		return insert(at, l)
	case 3:
		g.mutate["unterminated quote"]++
		return insert(1+g.pick(max(1, lineEnd-1)), `"`)
	case 4:
		g.mutate["stray CR, LF or NUL"]++
		return insert(1+g.pick(max(1, len(cmd)-1)), g.one("\r", "\n", "\x00", "\r\n"))
	case 5:
		g.mutate["no line end"]++
		return strings.TrimSuffix(cmd, "\r\n")
	case 6:
		g.mutate["literal on a command without arguments"]++
		return g.serialize(tag, []genPart{txt(g.one("NOOP ", "IDLE ", "CHECK ", "LOGOUT ", "CAPABILITY ", "UNSELECT ")), g.hiddenLit()})
	case 7:
		g.mutate["literal with COMPRESS or STARTTLS"]++
		return g.serialize(tag, []genPart{txt(g.one("COMPRESS ", "STARTTLS ", "COMPRESS DEFLATE ")), g.hiddenLit()})
	default:
		g.mutate["8-bit or control octet"]++
		return insert(1+g.pick(max(1, lineEnd-1)), g.one("\xff", "\x7f", "\t", "\x1b"))
	}
}

// announceLiteral returns a literal's announcement, line end and octets
// (a hidden command, usually), to insert in a line.
func (g *gen) announceLiteral() string {
	l := g.hiddenLit().lit
	return l.announce() + "\r\n" + l.data
}

func (g *gen) hiddenLit() genPart {
	p := lit(g.litForm(), g.hidden())
	if g.chance(0.1) {
		g.mutate["lying literal size"]++
		p.lit.size = max(0, p.lit.size+g.one2(-2, 3, 50019))
	}
	return p
}

// TestDiffGeneratorCoverage checks that the fixed seeds cover every
// mutation, every literal form and every chunking.
func TestDiffGeneratorCoverage(t *testing.T) {
	seen := map[string]int{}
	for _, seed := range diffFixedSeeds {
		g := &gen{r: rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)), mutate: seen}
		s := string(g.stream())
		for _, f := range []string{"+}\r\n", "~{", "IDLE", "APPEND", "COMPRESS", "STARTTLS"} {
			if strings.Contains(s, f) {
				seen["has "+f]++
			}
		}
		switch c := genChunks(g.r, len(s)); {
		case c == nil:
			seen["written whole"]++
		case len(c) == len(s):
			seen["written byte by byte"]++
		default:
			seen["written in pieces"]++
		}
	}
	for _, want := range []string{"reused tag", "invalid tag", "oversize", "lying literal size", "line during IDLE",
		"literal inside an atom", "literal after the tag", "literal in a quoted string", "literal after a bracket",
		"literal at the line end", "unterminated quote", "stray CR, LF or NUL", "no line end",
		"literal on a command without arguments", "literal with COMPRESS or STARTTLS", "8-bit or control octet",
		"has +}\r\n", "has ~{", "has IDLE", "has APPEND", "has COMPRESS", "has STARTTLS",
		"written whole", "written byte by byte", "written in pieces"} {
		if seen[want] == 0 {
			t.Errorf("no fixed seed has %q; got %v", want, seen)
		}
	}
}

// writeDiffCorpus writes the generated seed corpus: the scenarios of
// seeds 1000..1011 and the review's reproductions (reviewReproductions),
// in the fuzzing engine's file format.
func writeDiffCorpus(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	write := func(name string, stream []byte, chunking uint64) error {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\nuint64(%d)\n", strconv.Quote(string(stream)), chunking)
		return os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644)
	}
	for seed := uint64(1000); seed < 1012; seed++ {
		g := &gen{r: rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)), mutate: map[string]int{}}
		if err := write(fmt.Sprintf("gen-%d", seed), g.stream(), seed); err != nil {
			return err
		}
	}
	for _, c := range reviewReproductions() {
		slug := strings.Map(func(r rune) rune {
			if 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' {
				return r
			}
			return '-'
		}, c.name)
		if err := write("review-"+slug, []byte(c.send), 0); err != nil {
			return err
		}
	}
	return nil
}
