package config_test

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/imapguard/imapguard/config"
	"github.com/imapguard/imapguard/config/internal/gen"
)

// TestGenerated fails when default.toml or README.md differ from what
// go generate ./config writes now: when a doc comment, a rule, a default
// or a template changed and the files were not generated again. It also
// fails when a key or table has no doc comment (see gen.Files).
func TestGenerated(t *testing.T) {
	files, err := gen.Files(".")
	if err != nil {
		t.Fatalf("generating: %v", err)
	}
	for _, name := range gen.Names {
		got, err := os.ReadFile(name)
		if err != nil {
			t.Errorf("%v: run go generate ./config", err)
			continue
		}
		if want := files[name]; !bytes.Equal(got, want) {
			t.Errorf("%s differs from what the generator writes, from line %d: run go generate ./config", name, firstDifference(got, want))
		}
	}
}

// firstDifference returns the number of the first line at which a and b
// differ.
func firstDifference(a, b []byte) int {
	al, bl := bytes.Split(a, []byte("\n")), bytes.Split(b, []byte("\n"))
	for i := range min(len(al), len(bl)) {
		if !bytes.Equal(al[i], bl[i]) {
			return i + 1
		}
	}
	return min(len(al), len(bl)) + 1
}

// TestReferenceExamples parses every TOML example of the reference, so
// that none shows a file imapguard refuses.
func TestReferenceExamples(t *testing.T) {
	files, err := gen.Files(".")
	if err != nil {
		t.Fatalf("generating: %v", err)
	}
	examples := strings.Split(string(files["README.md"]), "```toml\n")[1:]
	if len(examples) == 0 {
		t.Fatal("got no TOML examples in README.md; want some")
	}
	for i, e := range examples {
		e, _, _ = strings.Cut(e, "```")
		if _, err := config.Parse("README.md example "+strconv.Itoa(i+1), []byte(e)); err != nil {
			t.Errorf("got %v; want the example to parse:\n%s", err, e)
		}
	}
}
