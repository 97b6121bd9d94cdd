package config

import (
	"reflect"
	"testing"
)

// TestTables checks that Tables describes every key Settings shows, in
// the same order, each with a type and valid values; the keys of an
// array of tables as Settings shows them for its first entry.
func TestTables(t *testing.T) {
	var got []string
	for _, tb := range Tables() {
		name := tb.Name
		if tb.Array {
			name += "[1]"
		}
		for _, k := range tb.Keys {
			got = append(got, name+"."+k.Name)
			if k.Type == "" || k.Valid == "" || k.Default == "" || k.GoField == "" {
				t.Errorf("%s.%s: got %+v; want a type, valid values, a default and a field", tb.Name, k.Name, k)
			}
		}
	}
	var want []string
	c := Default()
	c.Limits.Override = []Override{{}}
	c.Upstream.Backend = []Backend{{}}
	for _, s := range c.Settings() {
		want = append(want, s.Name)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got keys %q; want %q", got, want)
	}
}

// TestTOMLString checks that tomlString writes what TOML reads back.
func TestTOMLString(t *testing.T) {
	for _, tt := range []struct{ name, in, want string }{
		{"plain", "127.0.0.1:1143", `"127.0.0.1:1143"`},
		{"empty", "", `""`},
		{"quote and backslash", `a"b\c`, `"a\"b\\c"`},
		{"controls", "a\nb\x7f", `"a\u000Ab\u007F"`},
		{"non-ASCII", "é", `"é"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := tomlString(tt.in)
			if got != tt.want {
				t.Fatalf("got %s; want %s", got, tt.want)
			}
			c, err := Parse("x.toml", []byte("tls.storage = "+got))
			if tt.name == "controls" {
				return // a path with controls is invalid; the quoting is what counts
			}
			if err != nil || c.TLS.Storage != tt.in {
				t.Errorf("parsed back: got %q, %v; want %q", c.TLS.Storage, err, tt.in)
			}
		})
	}
}
