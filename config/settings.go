package config

import (
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strconv"
	"strings"
)

// The effective settings: listing, comparing and validating a Config.

// Setting is one effective configuration value.
type Setting struct {
	// Name is the dotted key, such as "limits.max_connections".
	Name string
	// Value is the value as it would be written in the file, without
	// quotes: "2147483647", "60s", "127.0.0.1:2143"; for a secret such as
	// admin.token, Redacted when it is set.
	Value string
}

// Redacted is the Value of a Setting whose key holds a secret (see
// secretKeys) and is set. An empty secret is shown as "".
const Redacted = "(redacted)"

// Settings returns every key with its effective value, in the order of the
// Config struct (which is also the order of default.toml). The effective
// value is the field's, except for tls.allow_plaintext_auth, which is
// TLS.PlaintextAuthAllowed: true with tls.mode "off" whatever the field
// says, and for secrets (admin.token), which are Redacted when set.
// Settings is what -check and the admin API's /settings show, so it never
// holds a secret.
func (c *Config) Settings() []Setting { return c.settings(true) }

// effectiveValues holds the keys whose value in effect depends on other
// keys, and how to compute it.
var effectiveValues = map[string]func(*Config) string{
	"tls.allow_plaintext_auth": func(c *Config) string { return strconv.FormatBool(c.TLS.PlaintextAuthAllowed()) },
}

// secretKeys holds the keys whose values are secrets: settings shows them
// as Redacted when set, and their rules quote no value in messages.
var secretKeys = map[string]bool{
	"admin.token":       true,
	"cluster.redis_url": true,
}

// settings returns every key with the value of its field or, with
// effective, its effective value. Secrets are Redacted either way, so
// that no path prints them.
func (c *Config) settings(effective bool) []Setting { return c.settingValues(effective, true) }

// settingValues is settings, with the secrets' values when not redact.
func (c *Config) settingValues(effective, redact bool) []Setting {
	v := reflect.ValueOf(c).Elem()
	out := make([]Setting, 0, len(schema.leaves))
	arrays := schema.arrays
	for j, l := range schema.leaves {
		for len(arrays) > 0 && arrays[0].after == j {
			out = appendEntries(out, &arrays[0], v)
			arrays = arrays[1:]
		}
		value := formatValue(v.FieldByIndex(l.index))
		if f := effectiveValues[l.key]; effective && f != nil {
			value = f(c)
		}
		if redact && secretKeys[l.key] && value != "" {
			value = Redacted
		}
		out = append(out, Setting{Name: l.key, Value: value})
	}
	for i := range arrays {
		out = appendEntries(out, &arrays[i], v)
	}
	return out
}

// ChangedKeys returns the names of the keys whose values differ between
// old and new, in the order of Settings. The entries of an array of
// tables are named by the array ("limits.override"), once. A secret is
// compared by its value but, like every key, only named: the result can
// be logged.
func ChangedKeys(old, new *Config) []string {
	values := func(c *Config) map[string]string {
		m := map[string]string{}
		for _, s := range c.settingValues(false, false) {
			m[s.Name] += s.Value + "\x00"
		}
		return m
	}
	a, b := values(old), values(new)
	changed := map[string]bool{}
	for _, m := range []map[string]string{a, b} {
		for k := range m {
			if a[k] != b[k] { // an entry only one has: "" and "value\x00"
				name, _, _ := strings.Cut(k, "[")
				changed[name] = true
			}
		}
	}
	// In the order of Settings: each array where its entries go.
	var out []string
	arrays := schema.arrays
	for j, l := range schema.leaves {
		for len(arrays) > 0 && arrays[0].after == j {
			if changed[arrays[0].key] {
				out = append(out, arrays[0].key)
			}
			arrays = arrays[1:]
		}
		if changed[l.key] {
			out = append(out, l.key)
		}
	}
	for _, a := range arrays {
		if changed[a.key] {
			out = append(out, a.key)
		}
	}
	return out
}

// appendEntries appends every key of every entry of the array of tables
// a, such as "limits.override[1].users".
func appendEntries(out []Setting, a *arrayTable, v reflect.Value) []Setting {
	entries := v.FieldByIndex(a.index)
	for i := range entries.Len() {
		for _, l := range a.leaves {
			out = append(out, Setting{Name: a.entryLeafKey(i, l), Value: formatValue(entries.Index(i).FieldByIndex(l.index))})
		}
	}
	return out
}

// formatValue formats one leaf field as it would be written in TOML, without
// quotes; an array as its elements separated by ", ".
func formatValue(v reflect.Value) string {
	switch x := v.Interface().(type) {
	case Duration:
		return x.String()
	case int:
		return strconv.Itoa(x)
	case float64:
		return formatFloat(x)
	case bool:
		return strconv.FormatBool(x)
	case string:
		return x
	case []string:
		return strings.Join(x, ", ")
	default:
		panic(fmt.Sprintf("config: no format for %T", x))
	}
}

// formatFloat formats x as a TOML float: with a decimal point ("1.0",
// "0.25"), never an exponent, and nan, inf and -inf as TOML spells them.
func formatFloat(x float64) string {
	switch {
	case math.IsNaN(x):
		return "nan"
	case math.IsInf(x, 1):
		return "inf"
	case math.IsInf(x, -1):
		return "-inf"
	}
	s := strconv.FormatFloat(x, 'f', -1, 64)
	if !strings.Contains(s, ".") {
		s += ".0"
	}
	return s
}

// WriteSettings writes Settings as one "name : value" line each, the names
// padded to a common width, arrays as their elements separated by ", ",
// and an empty value as nothing after the colon:
//
//	limits.max_connections   : 2147483647
//	limits.preauth_timeout   : 60s
//	tls.domains              : mail.example.com, imap.example.com
//	tls.email                :
func (c *Config) WriteSettings(w io.Writer) error { return WriteSettingList(w, c.Settings()) }

// WriteSettingList writes settings as WriteSettings does; imapguard
// settings writes those the admin API returns with it.
func WriteSettingList(w io.Writer, settings []Setting) error {
	width := 0
	for _, s := range settings {
		width = max(width, len(s.Name))
	}
	var b strings.Builder
	for _, s := range settings {
		b.WriteString(s.Name)
		b.WriteString(strings.Repeat(" ", width-len(s.Name)))
		b.WriteString(" :")
		if s.Value != "" {
			b.WriteString(" " + s.Value)
		}
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Validate checks every value of c against its valid range, and the keys
// that depend on each other (such as tls.mode "files" and tls.cert_file),
// and returns all problems, joined, each of the form "KEY: what is wrong
// (valid RANGE)" or, for keys that depend on each other, "KEY: what is
// wrong". A Config returned by Parse or Load is valid; Validate is for a
// Config changed or built in code, which should start from Default().
func (c *Config) Validate() error {
	v := reflect.ValueOf(c).Elem()
	var errs []error
	failed := map[string]bool{}
	for _, l := range schema.leaves {
		if msg := l.rule.check(v.FieldByIndex(l.index).Interface()); msg != "" {
			errs = append(errs, &problem{key: l.key, msg: msg + " (valid " + l.rule.valid() + ")"})
			failed[l.key] = true
		}
	}
	for _, a := range schema.arrays {
		entries := v.FieldByIndex(a.index)
		for i := range entries.Len() {
			bad := false
			for _, l := range a.leaves {
				if msg := l.rule.check(entries.Index(i).FieldByIndex(l.index).Interface()); msg != "" {
					errs = append(errs, &problem{key: a.entryLeafKey(i, l), msg: msg + " (valid " + l.rule.valid() + ")"})
					bad = true
				}
			}
			if !bad {
				for _, msg := range entryProblems(entries.Index(i)) {
					errs = append(errs, &problem{key: a.entryKey(i), msg: msg})
				}
			}
		}
	}
	for _, r := range relations(c) {
		if !r.dependsOnAny(failed) {
			errs = append(errs, &problem{key: r.key, msg: r.msg})
		}
	}
	return errors.Join(errs...)
}
