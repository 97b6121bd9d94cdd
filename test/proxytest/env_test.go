package proxytest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestLookPath: a program go install put in $GOBIN is found though
// $GOBIN is not in PATH.
func TestLookPath(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip(SkipPrefix + "LookPath test (go is not in PATH)")
	}
	gobin := t.TempDir()
	tool := filepath.Join(gobin, "imapguard-test-tool")
	if err := os.WriteFile(tool, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", filepath.Dir(goBin))
	t.Setenv("GOBIN", gobin)
	if got, err := LookPath("imapguard-test-tool"); err != nil || got != tool {
		t.Errorf("LookPath = %q, %v; want %q", got, err, tool)
	}
	if got, err := LookPath("imapguard-no-such-tool"); err == nil {
		t.Errorf("LookPath of a missing program = %q; want an error", got)
	}
}
