//go:build unix

package dovecot

import (
	"os"
	"reflect"
	"syscall"
)

// sysProcAttr puts Dovecot in its own process group, so that Stop can also
// end workers that outlive the master, and asks the kernel to send it
// SIGTERM if the thread that started it dies without stopping it (e.g. on
// a test timeout), so no orphaned instance is left behind. Pdeathsig
// exists only on Linux (and FreeBSD); it is set by reflection so this
// package still builds elsewhere.
func sysProcAttr() *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Setpgid: true}
	sig := syscall.SIGTERM
	f := reflect.ValueOf(attr).Elem().FieldByName("Pdeathsig")
	if f.IsValid() && f.CanSet() && f.Type() == reflect.TypeOf(sig) {
		f.Set(reflect.ValueOf(sig))
	}
	return attr
}

// killGroup sends SIGKILL to the process group p leads.
func killGroup(p *os.Process) {
	_ = syscall.Kill(-p.Pid, syscall.SIGKILL)
}
