package config

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// TestGolden parses testdata/good/*.toml, comparing the WriteSettings
// output with the .golden file, and testdata/bad/*.toml, comparing the
// error text with the .golden file.
func TestGolden(t *testing.T) {
	for _, dir := range []string{"good", "bad"} {
		files, err := filepath.Glob(filepath.Join("testdata", dir, "*.toml"))
		if err != nil {
			t.Fatal(err)
		}
		if len(files) == 0 {
			t.Fatalf("no files in testdata/%s", dir)
		}
		for _, file := range files {
			t.Run(dir+"/"+filepath.Base(file), func(t *testing.T) {
				data, err := os.ReadFile(file)
				if err != nil {
					t.Fatal(err)
				}
				c, err := Parse(filepath.Base(file), data)
				var got string
				switch dir {
				case "good":
					if err != nil {
						t.Fatalf("got error:\n%v\nwant none", err)
					}
					var b strings.Builder
					if err := c.WriteSettings(&b); err != nil {
						t.Fatal(err)
					}
					got = b.String()
				case "bad":
					if err == nil {
						t.Fatalf("got no error; want one")
					}
					if c != nil {
						t.Errorf("got a Config with the error; want nil")
					}
					got = err.Error() + "\n"
				}
				golden := strings.TrimSuffix(file, ".toml") + ".golden"
				if *update {
					if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
						t.Fatal(err)
					}
					return
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (run go test -update to create it)", err)
				}
				if got != string(want) {
					t.Errorf("got:\n%s\nwant:\n%s", got, want)
				}
			})
		}
	}
}

func TestLoad(t *testing.T) {
	path := filepath.Join("testdata", "good", "partial.toml")
	c, err := Load(path)
	if err != nil {
		t.Fatalf("got %v; want no error", err)
	}
	if got, want := c.Upstream.Address, "mail.internal:143"; got != want {
		t.Errorf("got %q; want %q", got, want)
	}

	path = filepath.Join("testdata", "bad", "unknown_key.toml")
	_, err = Load(path)
	if want := path + ":7: unknown key limits.max_conections"; err == nil || err.Error() != want {
		t.Errorf("got %v; want %s", err, want)
	}

	path = filepath.Join(t.TempDir(), "missing.toml")
	_, err = Load(path)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Errorf("got %v; want a not-exist error naming %s", err, path)
	}
}
