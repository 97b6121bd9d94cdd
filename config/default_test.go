package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestDefaultTOML(t *testing.T) {
	c, err := Parse("default.toml", DefaultTOML)
	if err != nil {
		t.Fatalf("got error %v; want none", err)
	}
	if want := Default(); !reflect.DeepEqual(c, want) {
		t.Errorf("got %+v; want %+v", *c, *want)
	}
	// Every key is written out, and with the value of its field, so that
	// the file documents the defaults exactly. (That is the value -check
	// prints, except for tls.allow_plaintext_auth, whose default depends
	// on tls.mode; see TestPlaintextAuthAllowed.)
	idx, err := indexDocument("default.toml", DefaultTOML)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(DefaultTOML), "\n")
	for _, s := range Default().settings(false) {
		info, ok := idx.first[s.Name]
		if !ok {
			t.Errorf("key %s: got absent; want present", s.Name)
			continue
		}
		name := s.Name[strings.LastIndexByte(s.Name, '.')+1:]
		var want string
		switch info.kind {
		case "string":
			want = name + ` = "` + s.Value + `"`
		case "array":
			var elems []string
			if s.Value != "" {
				elems = strings.Split(s.Value, ", ")
			}
			for i, e := range elems {
				elems[i] = `"` + e + `"`
			}
			want = name + " = [" + strings.Join(elems, ", ") + "]"
		default:
			want = name + " = " + s.Value
		}
		if got := lines[info.line-1]; got != want {
			t.Errorf("line %d: got %q; want %q", info.line, got, want)
		}
		if info.line < 2 || !strings.HasPrefix(lines[info.line-2], "# ") {
			t.Errorf("key %s: got no comment above; want one", s.Name)
		}
	}
}

func TestDefaultValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Errorf("got %v; want nil", err)
	}
}

func TestDemoTOML(t *testing.T) {
	c, err := Parse("demo.toml", DemoTOML)
	if err != nil {
		t.Fatalf("demo.toml: %v", err)
	}
	if c.TLS.Mode != "self_signed" || c.Listen.IMAPS == "" || c.TLS.PlaintextAuthAllowed() {
		t.Errorf("demo: got mode %q, imaps %q, plaintext auth %v; want self_signed, an imaps listener, no plaintext login",
			c.TLS.Mode, c.Listen.IMAPS, c.TLS.PlaintextAuthAllowed())
	}
	if c.Telemetry.MetricsListen != "127.0.0.1:9143" || c.Admin.Listen != "127.0.0.1:8143" || c.Admin.Token != "" {
		t.Errorf("demo: got metrics_listen %q, admin.listen %q, admin.token set %v; want 127.0.0.1:9143, 127.0.0.1:8143, no token",
			c.Telemetry.MetricsListen, c.Admin.Listen, c.Admin.Token != "")
	}
}
