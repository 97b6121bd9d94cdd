//go:build ignore

// gen writes default.toml and README.md from package config: go generate
// ./config runs it (see config/internal/gen).
package main

import (
	"fmt"
	"os"

	"github.com/imapguard/imapguard/config/internal/gen"
)

func main() {
	if err := gen.Write("."); err != nil {
		fmt.Fprintf(os.Stderr, "config/gen: %v\n", err)
		os.Exit(1)
	}
}
