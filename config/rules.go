package config

import (
	"fmt"
	"net"
	"net/mail"
	"net/netip"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	toml "github.com/pelletier/go-toml/v2"
)

// The rules of keys that name things: addresses, networks, host names,
// paths, URLs, user names and secrets (schema.go has the rules map and
// the numeric, boolean and enumerated rules).

// redisURL is a redis:// or rediss:// URL, or empty. It may hold a
// password, so its messages never quote it (it is in secretKeys).
type redisURL struct{}

func (r redisURL) convert(raw any) (any, string) {
	s, ok := raw.(string)
	if !ok {
		kind, _, _ := strings.Cut(describe(raw), " ")
		return nil, "want a string, got " + kind
	}
	if msg := r.check(s); msg != "" {
		return nil, msg
	}
	return s, ""
}

func (r redisURL) check(v any) string {
	s := v.(string)
	if s == "" {
		return ""
	}
	u, err := url.Parse(s)
	if err != nil {
		return "it is not a URL"
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return "the scheme is not redis or rediss"
	}
	if u.Host == "" {
		return "the host is missing"
	}
	return ""
}

func (r redisURL) valid() string {
	return "redis://[[user]:password@]host:port[/db], rediss://..., or empty"
}

// addresses is an array of host:port strings.
type addresses struct{}

func (r addresses) convert(raw any) (any, string) { return stringArray(raw, r.checkAll) }

func (r addresses) check(v any) string { return r.checkAll(v.([]string)) }

func (r addresses) checkAll(a []string) string {
	for _, s := range a {
		if msg := (address{requireHost: true}).check(s); msg != "" {
			return msg
		}
	}
	return ""
}

func (r addresses) valid() string { return "host:port addresses, port 1 .. 65535" }

// address is a host:port string field with a numeric port.
type address struct {
	allowPort0  bool // port 0: let the system pick (listening only)
	requireHost bool // an empty host is not allowed (dialling)
	allowEmpty  bool // "" is allowed (no listener)
}

func (r address) convert(raw any) (any, string) { return convertString(r, raw) }

func (r address) check(v any) string {
	s := v.(string)
	if s == "" && r.allowEmpty {
		return ""
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		msg := err.Error()
		if ae, ok := err.(*net.AddrError); ok {
			msg = ae.Err
		}
		return quote(s) + ": " + msg
	}
	if host == "" && r.requireHost {
		return quote(s) + ": host is missing"
	}
	if strings.ContainsFunc(host, func(c rune) bool { return unicode.IsSpace(c) || unicode.IsControl(c) }) {
		return quote(s) + ": host contains white space or control characters"
	}
	if port == "" {
		return quote(s) + ": port is missing"
	}
	if strings.ContainsFunc(port, func(c rune) bool { return c < '0' || c > '9' }) {
		return quote(s) + ": port " + quote(port) + " is not a number"
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || (n == 0 && !r.allowPort0) {
		return quote(s) + ": port " + port + " is out of range"
	}
	return ""
}

func (r address) valid() string {
	v := "host:port, port 1 .. 65535"
	if r.allowPort0 {
		v = "host:port, host may be empty, port 0 .. 65535"
	}
	if r.allowEmpty {
		v += ", or empty"
	}
	return v
}

// backendName is the name of an [[upstream.backend]]: a word that is
// safe in a metric label and a map file, or empty.
type backendName struct{}

func (r backendName) convert(raw any) (any, string) { return convertString(r, raw) }

func (backendName) check(v any) string {
	s := v.(string)
	if len(s) > 64 {
		return quote(s) + " is longer than 64 characters"
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._-:", c)) {
			return quote(s) + " contains " + quote(string(c))
		}
	}
	return ""
}

func (backendName) valid() string { return "letters, digits and . _ - :, at most 64, or empty" }

// path is a string field naming a file or directory, or empty. Whether it
// exists is checked by whoever opens it, when imapguard starts.
type path struct{}

func (r path) convert(raw any) (any, string) { return convertString(r, raw) }

func (path) check(v any) string {
	s := v.(string)
	if strings.ContainsFunc(s, unicode.IsControl) {
		return quote(s) + " contains control characters"
	}
	return ""
}

func (path) valid() string { return "a path, or empty" }

// email is a string field holding a bare e-mail address (no display name,
// no angle brackets), or empty.
type email struct{}

func (r email) convert(raw any) (any, string) { return convertString(r, raw) }

func (email) check(v any) string {
	s := v.(string)
	if s == "" {
		return ""
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Name != "" || a.Address != s || strings.ContainsFunc(s, func(c rune) bool { return unicode.IsSpace(c) || unicode.IsControl(c) }) {
		return quote(s) + " is not an e-mail address such as admin@example.com"
	}
	return ""
}

func (email) valid() string { return "an e-mail address, or empty" }

// webURL is a string field holding an absolute URL with one of the given
// schemes and a host, or empty.
type webURL []string

func (r webURL) convert(raw any) (any, string) { return convertString(r, raw) }

func (r webURL) check(v any) string {
	s := v.(string)
	if s == "" {
		return ""
	}
	u, err := url.Parse(s)
	if err != nil {
		return quote(s) + " is not a URL"
	}
	if !slices.Contains(r, u.Scheme) || u.Opaque != "" {
		return quote(s) + " does not start with " + r.prefixes()
	}
	if u.Host == "" || u.Hostname() == "" {
		return quote(s) + ": host is missing"
	}
	return ""
}

// prefixes returns "https://" or "http:// or https://".
func (r webURL) prefixes() string {
	p := make([]string, len(r))
	for i, scheme := range r {
		p[i] = scheme + "://"
	}
	return strings.Join(p, " or ")
}

func (r webURL) valid() string { return "an " + r.prefixes() + " URL, or empty" }

// endpoint is a string field holding a network endpoint to connect to:
// host:port (port 1 .. 65535), an http:// or https:// URL, or empty.
type endpoint struct{}

func (r endpoint) convert(raw any) (any, string) { return convertString(r, raw) }

func (endpoint) check(v any) string {
	s := v.(string)
	if !strings.Contains(s, "://") {
		return address{requireHost: true, allowEmpty: true}.check(s)
	}
	if msg := (webURL{"http", "https"}).check(s); msg != "" {
		return msg
	}
	u, _ := url.Parse(s) // webURL parsed it
	if port := u.Port(); port != "" {
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			return quote(s) + ": port " + port + " is out of range"
		}
	}
	return ""
}

func (endpoint) valid() string {
	return "host:port, port 1 .. 65535, an http:// or https:// URL, or empty"
}

// secret is a string field holding a secret such as a token: printable
// ASCII without spaces, from min to max characters long, or empty. Its
// messages never quote the value, since they end up in logs and
// terminals. Every key with this rule is in secretKeys.
type secret struct{ min, max int }

func (r secret) convert(raw any) (any, string) {
	s, ok := raw.(string)
	if !ok {
		kind, _, _ := strings.Cut(describe(raw), " ") // the type without the value
		return nil, "want a string, got " + kind
	}
	if msg := r.check(s); msg != "" {
		return nil, msg
	}
	return s, ""
}

func (r secret) check(v any) string {
	s := v.(string)
	if s == "" {
		return ""
	}
	if i := strings.IndexFunc(s, func(c rune) bool { return c <= ' ' || c > '~' }); i >= 0 {
		return "the character at byte " + strconv.Itoa(i+1) + " is not printable ASCII or is a space"
	}
	if len(s) < r.min || len(s) > r.max {
		return "it is " + strconv.Itoa(len(s)) + " characters long"
	}
	return ""
}

func (r secret) valid() string {
	return fmt.Sprintf("%d .. %d printable ASCII characters without spaces, or empty", r.min, r.max)
}

// hostName is a string field holding a DNS name (and, with ip, an IP
// address), or empty.
type hostName struct{ ip bool }

func (r hostName) convert(raw any) (any, string) { return convertString(r, raw) }

func (r hostName) check(v any) string {
	s := v.(string)
	if s == "" {
		return ""
	}
	return checkHostName(s, r.ip, false)
}

func (r hostName) valid() string {
	if r.ip {
		return "a DNS name or IP address, or empty"
	}
	return "a DNS name, or empty"
}

// hostNames is an array of strings field holding DNS names, with wildcard
// also names whose first label is "*", and with ip also IP addresses.
// An empty array is decoded as nil, like the default.
type hostNames struct{ wildcard, ip bool }

func (r hostNames) convert(raw any) (any, string) {
	a, ok := raw.([]any)
	if !ok {
		return nil, "want an array of strings, got " + describe(raw)
	}
	var names []string
	for i, e := range a {
		s, ok := e.(string)
		if !ok {
			return nil, "element " + strconv.Itoa(i+1) + ": want a string, got " + describe(e)
		}
		names = append(names, s)
	}
	if msg := r.check(names); msg != "" {
		return nil, msg
	}
	return names, ""
}

func (r hostNames) check(v any) string {
	names := v.([]string)
	for i, s := range names {
		if msg := checkHostName(s, r.ip, r.wildcard); msg != "" {
			return msg
		}
		for _, t := range names[:i] {
			if strings.EqualFold(s, t) {
				return quote(s) + " is listed twice"
			}
		}
	}
	return ""
}

func (r hostNames) valid() string {
	switch {
	case r.wildcard && r.ip:
		return "DNS names, wildcards such as *.example.com, or IP addresses"
	case r.wildcard:
		return "DNS names, or wildcards such as *.example.com"
	case r.ip:
		return "DNS names or IP addresses"
	default:
		return "DNS names"
	}
}

// stringArray converts an array of strings, checked by check.
func stringArray(raw any, check func([]string) string) (any, string) {
	a, ok := raw.([]any)
	if !ok {
		return nil, "want an array of strings, got " + describe(raw)
	}
	var out []string
	for i, e := range a {
		s, ok := e.(string)
		if !ok {
			return nil, "element " + strconv.Itoa(i+1) + ": want a string, got " + describe(e)
		}
		out = append(out, s)
	}
	if msg := check(out); msg != "" {
		return nil, msg
	}
	return out, ""
}

// networks is an array of strings field holding IP networks in CIDR
// notation ("192.0.2.0/24", "2001:db8::/32"), or single IP addresses
// (a /32 or /128). An empty array is decoded as nil, like the default.
type networks struct{}

func (r networks) convert(raw any) (any, string) { return stringArray(raw, r.checkAll) }

func (r networks) check(v any) string { return r.checkAll(v.([]string)) }

func (networks) checkAll(nets []string) string {
	seen := map[netip.Prefix]bool{}
	for _, s := range nets {
		p, err := ParseNetwork(s)
		if err != nil {
			return err.Error()
		}
		if seen[p] {
			return quote(s) + " is listed twice"
		}
		seen[p] = true
	}
	return ""
}

func (networks) valid() string {
	return `IP networks such as "192.0.2.0/24" or "2001:db8::/32", or single addresses`
}

// ParseNetwork parses one network of limits.exempt_networks or an
// override's networks: CIDR notation with no bits set after the prefix
// ("10.0.0.0/8", not "10.1.2.3/8", which is more likely a mistake than
// meant), or a single IP address, which is the network of that address
// alone. Zones are not allowed.
func ParseNetwork(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%s is neither an IP network (CIDR) nor an IP address", quote(s))
		}
		a = a.Unmap() // the proxy sees IPv4 clients as IPv4
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%s is not an IP network in CIDR notation such as \"192.0.2.0/24\"", quote(s))
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("%s has bits set after the /%d prefix; the network is %s", quote(s), p.Bits(), quote(m.String()))
	}
	if a := p.Addr(); a.Is4In6() {
		// ::ffff:10.0.0.0/104 is 10.0.0.0/8.
		if p.Bits() < 96 {
			return netip.Prefix{}, fmt.Errorf("%s holds IPv4-mapped addresses and others; write the IPv4 network", quote(s))
		}
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p, nil
}

// Prefixes parses networks as ParseNetwork does (listen.trusted_proxies,
// limits.exempt_networks, an override's networks).
func Prefixes(networks []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(networks))
	for _, s := range networks {
		p, err := ParseNetwork(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// userNames is an array of strings field holding user names as clients
// log in with them, compared case-insensitively; none empty, none twice.
type userNames struct{}

func (r userNames) convert(raw any) (any, string) { return stringArray(raw, r.checkAll) }

func (r userNames) check(v any) string { return r.checkAll(v.([]string)) }

func (userNames) checkAll(users []string) string {
	seen := map[string]bool{}
	for i, u := range users {
		k := strings.ToLower(strings.TrimSpace(u))
		switch {
		case k == "":
			return "element " + strconv.Itoa(i+1) + " is empty"
		case strings.ContainsFunc(u, unicode.IsControl):
			return quote(u) + " contains control characters"
		case seen[k]:
			return quote(u) + " is listed twice"
		}
		seen[k] = true
	}
	return ""
}

func (userNames) valid() string { return "user names, compared case-insensitively" }

// checkHostName returns what is wrong with s as a DNS name: one or more
// labels of letters, digits and hyphens, separated by dots, as used in
// certificates (RFC 5280, RFC 1123). With ip an IP address is allowed;
// with wildcard a first label "*" followed by at least two labels.
func checkHostName(s string, ip, wildcard bool) string {
	if net.ParseIP(s) != nil {
		if ip {
			return ""
		}
		return quote(s) + " is an IP address, not a DNS name"
	}
	bad := func(why string) string { return quote(s) + " is not a valid DNS name: " + why }
	if ip {
		bad = func(why string) string { return quote(s) + " is neither an IP address nor a valid DNS name: " + why }
	}
	name := s
	if wildcard && (s == "*" || strings.HasPrefix(s, "*.")) {
		name = strings.TrimPrefix(s, "*.")
		if s == "*" || !strings.Contains(name, ".") {
			return bad(`a wildcard needs at least two labels after "*."`)
		}
	}
	switch {
	case name == "":
		return bad("it is empty")
	case len(name) > 253:
		return bad("it is longer than 253 characters")
	case strings.HasSuffix(name, "."):
		return bad("it ends with a dot")
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		switch {
		case l == "":
			return bad("it has an empty label")
		case l == "*" && wildcard:
			return bad(`a wildcard "*" may only be the whole first label`)
		case l == "*":
			return bad("wildcards are not allowed here")
		case strings.ContainsFunc(l, func(c rune) bool { return c >= utf8.RuneSelf }):
			return bad("it contains non-ASCII characters; write international names in their ASCII form (xn--...)")
		case strings.IndexFunc(l, notLDH) >= 0:
			i := strings.IndexFunc(l, notLDH)
			return bad("it contains " + quote(l[i:i+1]) + "; only letters, digits, hyphens and dots are allowed")
		case len(l) > 63:
			return bad("a label is longer than 63 characters")
		case l[0] == '-' || l[len(l)-1] == '-':
			return bad("a label starts or ends with a hyphen")
		}
	}
	if last := labels[len(labels)-1]; !strings.ContainsFunc(last, func(c rune) bool { return c < '0' || c > '9' }) {
		return bad("the last label is all digits")
	}
	return ""
}

// notLDH reports whether c is not a letter, digit or hyphen (LDH), the
// characters of a DNS label.
func notLDH(c rune) bool {
	return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-')
}

// convertString converts a string field with rule r.
func convertString(r rule, raw any) (any, string) {
	s, ok := raw.(string)
	if !ok {
		return nil, "want a string, got " + describe(raw)
	}
	if msg := r.check(s); msg != "" {
		return nil, msg
	}
	return s, ""
}

// describe names the TOML type of a decoded value, with the value if it is
// short: `string "ten"`, `integer 30`, `table`.
func describe(raw any) string {
	switch x := raw.(type) {
	case string:
		return "string " + quote(x)
	case int64:
		return "integer " + strconv.FormatInt(x, 10)
	case float64:
		return "float " + strconv.FormatFloat(x, 'g', -1, 64)
	case bool:
		return "boolean " + strconv.FormatBool(x)
	case map[string]any:
		return "table"
	case []any:
		return "array"
	case time.Time, toml.LocalDateTime:
		return "date-time"
	case toml.LocalDate:
		return "date"
	case toml.LocalTime:
		return "time"
	default:
		return fmt.Sprintf("%T", raw)
	}
}

// quote quotes s for a message, shortened to at most 40 characters.
func quote(s string) string {
	const maxRunes = 40
	if utf8.RuneCountInString(s) > maxRunes {
		s = string([]rune(s)[:maxRunes-3]) + "..."
	}
	return strconv.Quote(s)
}

// leaf is one key of the file: a field of Config that is not a table.
type leaf struct {
	key   string // dotted key
	index []int  // field index path in Config (and in the raw type)
	field reflect.StructField
	rule  rule
}

// schema is derived from the Config type and its toml tags, so that the
// keys are written down in one place.
var schema = buildSchema()

type schemaInfo struct {
	leaves []leaf
	// tables holds the dotted keys of the tables ("limits").
	tables map[string]bool
	// arrays are the arrays of tables ([[limits.override]]), in the
	// order of Config.
	arrays []arrayTable
	// raw is Config's shape with every leaf typed any: decoding into it
	// catches unknown keys (strict mode) but no type errors, which Parse
	// then reports for all keys at once, with their lines.
	raw reflect.Type
}

// arrayTable is an array of tables of the file, such as
// [[limits.override]]: a field of Config holding a slice of structs.
// Its entries' keys are leaves too, with rules like any key's (keyed
// "limits.override.users"), and an index into the element type.
type arrayTable struct {
	key    string // "limits.override"
	index  []int  // field index path in Config (and in the raw type)
	field  reflect.StructField
	after  int    // how many of schema.leaves come before it
	leaves []leaf // the keys of an entry
}

// entryKey is the key of entry i (0-based) in messages and settings:
// "limits.override[1]".
func (a *arrayTable) entryKey(i int) string { return a.key + "[" + strconv.Itoa(i+1) + "]" }

// entryLeafKey is the key of leaf l of entry i: "limits.override[1].users".
func (a *arrayTable) entryLeafKey(i int, l leaf) string {
	return a.entryKey(i) + l.key[len(a.key):]
}

// entryProblems returns what is wrong with an entry as a whole.
func entryProblems(entry reflect.Value) []string {
	if c, ok := entry.Interface().(interface{ problems() []string }); ok {
		return c.problems()
	}
	return nil
}

func buildSchema() *schemaInfo {
	s := &schemaInfo{tables: map[string]bool{}}
	s.raw = s.walk(reflect.TypeFor[Config](), "", nil)
	n := len(s.leaves)
	for _, a := range s.arrays {
		n += len(a.leaves)
	}
	if n != len(rules) {
		panic("config: rules do not match the Config fields")
	}
	for key, r := range rules {
		_, ok := r.(secret)
		if _, u := r.(redisURL); u {
			ok = true // a URL that may hold a password
		}
		if ok != secretKeys[key] {
			panic("config: " + key + " has a secret rule but is not in secretKeys, or the reverse")
		}
	}
	return s
}

// walk records the leaves of struct type t and returns its raw type.
func (s *schemaInfo) walk(t reflect.Type, prefix string, index []int) reflect.Type {
	fields := make([]reflect.StructField, 0, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		key := prefix + name
		idx := append(append([]int(nil), index...), i)
		typ := reflect.TypeFor[any]()
		switch {
		case f.Type.Kind() == reflect.Struct:
			s.tables[key] = true
			typ = s.walk(f.Type, key+".", idx)
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
			sub := &schemaInfo{tables: map[string]bool{}}
			typ = reflect.SliceOf(sub.walk(f.Type.Elem(), key+".", nil))
			if len(sub.tables) > 0 || len(sub.arrays) > 0 {
				panic("config: a table inside an array of tables: " + key)
			}
			s.arrays = append(s.arrays, arrayTable{key: key, index: idx, field: f, after: len(s.leaves), leaves: sub.leaves})
		default:
			r, ok := rules[key]
			if !ok {
				panic("config: no rule for " + key)
			}
			s.leaves = append(s.leaves, leaf{key: key, index: idx, field: f, rule: r})
		}
		fields = append(fields, reflect.StructField{Name: f.Name, Type: typ, Tag: f.Tag})
	}
	return reflect.StructOf(fields)
}
