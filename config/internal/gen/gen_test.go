package gen

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/imapguard/imapguard/config"
)

// configDir is the config package, whose files Files generates.
const configDir = "../.."

func TestMarker(t *testing.T) {
	files, err := Files(configDir)
	if err != nil {
		t.Fatal(err)
	}
	for name, prefix := range map[string]string{"default.toml": "# ", "README.md": "<!-- "} {
		first, _, _ := strings.Cut(string(files[name]), "\n")
		if !strings.HasPrefix(first, prefix+Marker) {
			t.Errorf("%s: got first line %q; want it to start with %q", name, first, prefix+Marker)
		}
	}
}

// TestReferenceLinks checks that every link of the reference leads
// somewhere: #anchors to a heading of the page, whose anchors are
// unique, and relative links to a file beside it.
func TestReferenceLinks(t *testing.T) {
	files, err := Files(configDir)
	if err != nil {
		t.Fatal(err)
	}
	page := string(files["README.md"])
	anchors := map[string]bool{}
	inCode := false
	for _, line := range strings.Split(page, "\n") {
		if strings.HasPrefix(line, "```") {
			inCode = !inCode
		}
		if inCode || !strings.HasPrefix(line, "#") {
			continue
		}
		a := Anchor(strings.TrimLeft(line, "# "))
		if anchors[a] {
			t.Errorf("heading %q: anchor #%s is taken; want unique anchors", line, a)
		}
		anchors[a] = true
	}
	for _, want := range []string{"listen", "upstream", "tls", "limits", "log", "telemetry", "admin", "limitsmax_connections", "tls-worked-examples", "compared-with-exchange-server-2013"} {
		if !anchors[want] {
			t.Errorf("got no heading with anchor #%s; want one (other documents link to it)", want)
		}
	}
	links := regexp.MustCompile(`\]\(([^)]*)\)`).FindAllStringSubmatch(page, -1)
	if len(links) == 0 {
		t.Fatal("got no links; want a table of contents")
	}
	for _, l := range links {
		target := l[1]
		if a, ok := strings.CutPrefix(target, "#"); ok {
			if !anchors[a] {
				t.Errorf("link %s: got no such heading", target)
			}
			continue
		}
		if _, err := os.Stat(filepath.Join(configDir, target)); err != nil {
			t.Errorf("link %s: %v", target, err)
		}
	}
}

func TestAnchor(t *testing.T) {
	for _, tt := range []struct{ heading, want string }{
		{"`[listen]`", "listen"},
		{"`limits.max_connections`", "limitsmax_connections"},
		{"TLS, worked examples", "tls-worked-examples"},
		{"Compared with Exchange Server 2013", "compared-with-exchange-server-2013"},
		{"Reloading with SIGHUP", "reloading-with-sighup"},
	} {
		if got := Anchor(tt.heading); got != tt.want {
			t.Errorf("Anchor(%q): got %q; want %q", tt.heading, got, tt.want)
		}
	}
}

func TestEscapeMarkdown(t *testing.T) {
	for _, tt := range []struct{ name, in, want string }{
		{"plain", "host:port, port 1 .. 65535", "host:port, port 1 .. 65535"},
		{"key names", "on_demand_domains and OTEL_EXPORTER_OTLP_ENDPOINT", "on_demand_domains and OTEL_EXPORTER_OTLP_ENDPOINT"},
		{"wildcard", "wildcards such as *.example.com", `wildcards such as \*.example.com`},
		{"underscore at an edge", "OTLP_* and _x_", `OTLP\_\* and \_x\_`},
		{"HTML, cells, backslash", `<b> | a\b`, `\<b> \| a\\b`},
		{"code", "`imapguard who`", "`imapguard who`"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := escapeMarkdown(tt.in); got != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
}

// TestDocument checks what the generator refuses of doc comments: none,
// one that does not start with the Go name, and a "Default:" or
// "Valid:" line, which come from the code instead.
func TestDocument(t *testing.T) {
	tables := []config.Table{{Name: "limits", GoType: "Limits", Keys: []config.Key{{Name: "max_connections", GoField: "MaxConnections"}}}}
	for _, tt := range []struct {
		name string
		docs map[string]string
		want string // a part of the error, or "" for none
	}{
		{"documented", map[string]string{"Limits": "Limits are caps.\n", "Limits.MaxConnections": "MaxConnections, when set, caps.\n"}, ""},
		{"no table doc", map[string]string{"Limits.MaxConnections": "MaxConnections caps.\n"}, "Limits has no doc comment"},
		{"no key doc", map[string]string{"Limits": "Limits are caps.\n"}, "Limits.MaxConnections has no doc comment"},
		{"other name", map[string]string{"Limits": "Limits are caps.\n", "Limits.MaxConnections": "MaxConns caps.\n"}, `the doc comment of Limits.MaxConnections does not start with "MaxConnections "`},
		{"default line", map[string]string{"Limits": "Limits are caps.\n", "Limits.MaxConnections": "MaxConnections caps.\n\nDefault: 3.\n"}, `has a "Default: 3." line`},
		{"valid line", map[string]string{"Limits": "Limits are caps.\n", "Limits.MaxConnections": "MaxConnections caps.\n\nValid: 1 .. 3.\n"}, `has a "Valid: 1 .. 3." line`},
		{"heading", map[string]string{"Limits": "Limits are caps.\n\n# Caps\n\nMore.\n", "Limits.MaxConnections": "MaxConnections caps.\n"}, "the doc comment of Limits has a *comment.Heading"},
		{"heading", map[string]string{"Limits": "Limits are caps.\n\n# Heading\n\nMore.\n", "Limits.MaxConnections": "MaxConnections caps.\n"}, "the doc comment of Limits has a *comment.Heading"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := document(tables, tt.docs)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("got %v; want no error", err)
			case tt.want == "":
				if md, err := got[0].Keys[0].Doc.Markdown(); err != nil || md != "`max_connections`, when set, caps." {
					t.Errorf("got Markdown %q, %v; want the TOML name in place of the Go name", md, err)
				}
				if text := got[0].Keys[0].Doc.Text(); text != "max_connections, when set, caps.\n" {
					t.Errorf("got Text %q; want the TOML name in place of the Go name", text)
				}
			case err == nil || !strings.Contains(err.Error(), tt.want):
				t.Errorf("got %v; want an error containing %q", err, tt.want)
			}
		})
	}
}
