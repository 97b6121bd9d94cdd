//go:build !unix

package dovecot

import (
	"os"
	"syscall"
)

// Dovecot runs on Unix only; this keeps the package (and package test)
// building elsewhere.

func sysProcAttr() *syscall.SysProcAttr { return nil }

func killGroup(p *os.Process) { _ = p.Kill() }
