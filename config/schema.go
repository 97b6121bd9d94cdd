package config

import (
	"fmt"
	"math"
	"net"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	toml "github.com/pelletier/go-toml/v2"
)

// rules holds the valid values of every key. Defaults are in Default.
var rules = map[string]rule{
	"listen.imap": address{allowPort0: true},

	"upstream.address":         address{requireHost: true},
	"upstream.connect_timeout": durationRange{100 * time.Millisecond, 5 * time.Minute},
	"upstream.login_timeout":   durationRange{time.Second, 5 * time.Minute},

	"limits.max_connections":          intRange{1, math.MaxInt32},
	"limits.max_connections_per_ip":   intRange{1, math.MaxInt32},
	"limits.max_connections_per_user": intRange{1, math.MaxInt32},
	"limits.ipv6_prefix_length":       intRange{32, 128},
	"limits.max_command_size":         intRange{1024, 1 << 20},
	"limits.preauth_timeout":          durationRange{30 * time.Second, time.Hour},
	"limits.idle_timeout":             durationRange{30 * time.Second, 24 * time.Hour},
	"limits.max_bad_commands":         intRange{1, 100},
	"limits.max_auth_failures":        intRange{1, 100},

	"log.level":  oneOf{"debug", "info", "warn", "error"},
	"log.format": oneOf{"text", "json"},
}

// A rule converts a value decoded from TOML into the Go type of its field
// and says what is wrong with it.
type rule interface {
	// convert turns raw, a value as go-toml decodes it into an interface
	// (string, int64, float64, bool, map, slice, date or time), into the
	// field's Go type. It returns what is wrong instead, if anything.
	convert(raw any) (v any, problem string)
	// check returns what is wrong with v, a value of the field's Go type,
	// or "".
	check(v any) string
	// valid describes the valid values.
	valid() string
}

// intRange is an int field with inclusive bounds.
type intRange struct{ min, max int64 }

func (r intRange) convert(raw any) (any, string) {
	n, ok := raw.(int64)
	if !ok {
		return nil, "want an integer, got " + describe(raw)
	}
	if msg := r.checkInt(n); msg != "" {
		return nil, msg
	}
	return int(n), ""
}

func (r intRange) check(v any) string { return r.checkInt(int64(v.(int))) }

func (r intRange) checkInt(n int64) string {
	if n < r.min || n > r.max {
		return strconv.FormatInt(n, 10) + " is out of range"
	}
	return ""
}

func (r intRange) valid() string { return fmt.Sprintf("%d .. %d", r.min, r.max) }

// durationRange is a Duration field with inclusive bounds.
type durationRange struct{ min, max time.Duration }

func (r durationRange) convert(raw any) (any, string) {
	s, ok := raw.(string)
	if !ok {
		return nil, `want a string such as "30s", got ` + describe(raw)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return nil, "invalid duration " + quote(s) + `, write a number and a unit such as "90s", "5m" or "1h30m"`
	}
	if msg := r.check(Duration(d)); msg != "" {
		return nil, msg
	}
	return Duration(d), ""
}

func (r durationRange) check(v any) string {
	d := v.(Duration)
	if time.Duration(d) < r.min || time.Duration(d) > r.max {
		return d.String() + " is out of range"
	}
	return ""
}

func (r durationRange) valid() string {
	return Duration(r.min).String() + " .. " + Duration(r.max).String()
}

// address is a host:port string field with a numeric port.
type address struct {
	allowPort0  bool // port 0: let the system pick (listening only)
	requireHost bool // an empty host is not allowed (dialling)
}

func (r address) convert(raw any) (any, string) {
	s, ok := raw.(string)
	if !ok {
		return nil, "want a string, got " + describe(raw)
	}
	if msg := r.check(s); msg != "" {
		return nil, msg
	}
	return s, ""
}

func (r address) check(v any) string {
	s := v.(string)
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
	if r.allowPort0 {
		return "host:port, host may be empty, port 0 .. 65535"
	}
	return "host:port, port 1 .. 65535"
}

// oneOf is a string field with a fixed set of values.
type oneOf []string

func (r oneOf) convert(raw any) (any, string) {
	s, ok := raw.(string)
	if !ok {
		return nil, "want a string, got " + describe(raw)
	}
	if msg := r.check(s); msg != "" {
		return nil, msg
	}
	return s, ""
}

func (r oneOf) check(v any) string {
	s := v.(string)
	for _, x := range r {
		if s == x {
			return ""
		}
	}
	return "unknown value " + quote(s)
}

func (r oneOf) valid() string { return strings.Join(r, ", ") }

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
	rule  rule
}

// schema is derived from the Config type and its toml tags, so that the
// keys are written down in one place.
var schema = buildSchema()

type schemaInfo struct {
	leaves []leaf
	// tables holds the dotted keys of the tables ("limits").
	tables map[string]bool
	// raw is Config's shape with every leaf typed any: decoding into it
	// catches unknown keys (strict mode) but no type errors, which Parse
	// then reports for all keys at once, with their lines.
	raw reflect.Type
}

func buildSchema() *schemaInfo {
	s := &schemaInfo{tables: map[string]bool{}}
	s.raw = s.walk(reflect.TypeFor[Config](), "", nil)
	if len(s.leaves) != len(rules) {
		panic("config: rules do not match the Config fields")
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
		if f.Type.Kind() == reflect.Struct {
			s.tables[key] = true
			typ = s.walk(f.Type, key+".", idx)
		} else {
			r, ok := rules[key]
			if !ok {
				panic("config: no rule for " + key)
			}
			s.leaves = append(s.leaves, leaf{key: key, index: idx, rule: r})
		}
		fields = append(fields, reflect.StructField{Name: f.Name, Type: typ, Tag: f.Tag})
	}
	return reflect.StructOf(fields)
}
