package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/imapguard/imapguard/limits"
)

// The map file of Options.Route "map" (Options.RouteMapFile), like
// Perdition's popmap: one "user backend" pair per line, white space
// between, "#" comments and blank lines ignored, user "*" for the users
// the file does not list. The Server reads it when its options are set
// (start and reload) and again when its modification time or size
// changes, looked at before every round of health checks; a file that
// cannot be read or is wrong leaves the map in force as it was, and is
// logged.

// ParseRouteMap parses a map file's contents into RouteMap's form (user
// as limits.UserKey → backend). A line with other than two fields, or a
// user twice, is an error naming its line.
func ParseRouteMap(data []byte) (map[string]string, error) {
	m := make(map[string]string)
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 64<<10)
	var errs []error
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			errs = append(errs, fmt.Errorf("line %d: want \"user backend\", got %d fields", n, len(f)))
			continue
		}
		user := limits.UserKey(f[0])
		if _, dup := m[user]; dup {
			errs = append(errs, fmt.Errorf("line %d: user %q is listed twice", n, f[0]))
			continue
		}
		m[user] = f[1]
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, err)
	}
	return m, errors.Join(errs...)
}

// CheckRouteMap returns an error for each backend m names that is not
// one of backends (by name or address).
func CheckRouteMap(m map[string]string, backends []Backend) error {
	known := make(map[string]bool)
	for _, b := range backends {
		known[b.Name], known[b.Addr] = true, true
	}
	var errs []error
	for user, name := range m {
		if !known[name] {
			errs = append(errs, fmt.Errorf("user %q: no backend %q", user, name))
		}
	}
	return errors.Join(errs...)
}

// ReadRouteMap reads and checks the map file at path against backends.
func ReadRouteMap(path string, backends []Backend) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m, err := ParseRouteMap(data)
	if err == nil {
		o := Options{Backends: backends}
		o.backendDefaults()
		err = CheckRouteMap(m, o.Backends)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// routeMapFile is the map file as last read.
type routeMapFile struct {
	mu   sync.Mutex
	path string
	mod  time.Time
	size int64
	m    map[string]string
}

// routeMap returns the map in force for o: its RouteMap, or the file's
// as last read.
func (s *Server) routeMap(o *Options) map[string]string {
	if o.RouteMapFile == "" {
		return o.RouteMap
	}
	rf := &s.mapFile
	rf.mu.Lock()
	defer rf.mu.Unlock()
	if rf.path != o.RouteMapFile {
		return nil
	}
	return rf.m
}

// refreshRouteMap reads the map file of the options in force when it
// changed since last read (or always, with force).
func (s *Server) refreshRouteMap(force bool) {
	o := s.options()
	if o.Route != RouteMap || o.RouteMapFile == "" {
		return
	}
	rf := &s.mapFile
	rf.mu.Lock()
	defer rf.mu.Unlock()
	fi, err := os.Stat(o.RouteMapFile)
	if err != nil {
		s.log.Error("route map not read; keeping the map in force", "file", o.RouteMapFile, "err", err)
		return
	}
	if !force && rf.path == o.RouteMapFile && fi.ModTime().Equal(rf.mod) && fi.Size() == rf.size {
		return
	}
	m, err := ReadRouteMap(o.RouteMapFile, o.Backends)
	if err != nil {
		s.log.Error("route map not read; keeping the map in force", "file", o.RouteMapFile, "err", err)
		// Not again until the file changes.
		rf.mod, rf.size = fi.ModTime(), fi.Size()
		return
	}
	rf.path, rf.mod, rf.size, rf.m = o.RouteMapFile, fi.ModTime(), fi.Size(), m
	s.log.Info("route map read", "file", o.RouteMapFile, "users", len(m))
}
