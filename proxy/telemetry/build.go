package telemetry

import (
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Build says which build of imapguard is running, as the Prometheus
// endpoint's imapguard_build_info shows it. Every field has a value, so
// that no label is empty.
type Build struct {
	// Version is the service.version of the resource: the main module's
	// version, else the short VCS revision (with "+dirty"), else "devel"
	// (buildVersion), unless [Options.ServiceVersion] says otherwise.
	Version string
	// Revision is the full VCS revision the binary was built from, with
	// "+dirty" for a modified tree; "unknown" without VCS information
	// (go run, go test, a build outside a checkout, -buildvcs=false).
	Revision string
	// GoVersion is the Go release that built the binary (runtime.Version).
	GoVersion string
}

// ReadBuild reads the running binary's [Build] from its build information
// (runtime/debug.ReadBuildInfo).
func ReadBuild() Build {
	bi, ok := debug.ReadBuildInfo()
	return buildOf(bi, ok)
}

// buildOf is the Build of a binary with build information bi.
func buildOf(bi *debug.BuildInfo, ok bool) Build {
	b := Build{Version: buildVersion(bi, ok), Revision: "unknown", GoVersion: runtime.Version()}
	if !ok || bi == nil {
		return b
	}
	var modified bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			if s.Value != "" {
				b.Revision = s.Value
			}
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if modified && b.Revision != "unknown" {
		b.Revision += "+dirty"
	}
	return b
}

// buildInfoCollector is imapguard_build_info{version,revision,goversion} 1,
// the Prometheus convention (prometheus_build_info, node_exporter's …) for
// telling which build runs, to join on or to spot a fleet mid-upgrade:
//
//	count by (version) (imapguard_build_info)
//
// It is on the Prometheus endpoint only; an OTLP backend has the same
// facts in the resource (service.version, process.runtime.version).
func buildInfoCollector(b Build) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "imapguard_build_info",
		Help: "Always 1; the labels say which build of imapguard runs: version, VCS revision, and the Go release that built it.",
		ConstLabels: prometheus.Labels{
			"version":   b.Version,
			"revision":  b.Revision,
			"goversion": b.GoVersion,
		},
	})
	g.Set(1)
	return g
}
