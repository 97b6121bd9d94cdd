package telemetry

import (
	"context"
	"log/slog"
	"runtime/debug"

	"go.opentelemetry.io/otel/sdk/resource"
	// The semantic-conventions version must be the one sdk/resource uses
	// (see its builtin.go), or merging our attributes with its detectors'
	// fails with resource.ErrSchemaURLConflict. Update both together.
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// serviceName is the resource's service.name unless OTEL_SERVICE_NAME or
// OTEL_RESOURCE_ATTRIBUTES says otherwise.
const serviceName = "imapguard"

// newResource describes this process: what resource.Default() holds
// (telemetry.sdk.*, service.name, the environment), plus service.version,
// host.name and the Go runtime. Detectors are applied in order, later ones
// winning, so the environment (last) overrides our service.name as the
// specification requires.
//
// It does not merge with resource.Default() itself: that is computed once
// per process, with the environment as it was then, which would pin
// OTEL_RESOURCE_ATTRIBUTES from the first call.
//
// A detector that fails (a malformed OTEL_RESOURCE_ATTRIBUTES, say) is
// logged and the rest of the resource is used, as other OpenTelemetry SDKs
// do: telemetry must not keep the proxy from starting.
func newResource(ctx context.Context, version string, logger *slog.Logger) *resource.Resource {
	if version == "" {
		bi, ok := debug.ReadBuildInfo()
		version = buildVersion(bi, ok)
	}
	res, err := resource.New(ctx,
		resource.WithSchemaURL(semconv.SchemaURL),
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithProcessRuntimeName(),
		resource.WithProcessRuntimeVersion(),
		resource.WithProcessRuntimeDescription(),
		resource.WithAttributes(
			semconv.ServiceName(serviceName),
			semconv.ServiceVersion(version),
		),
		resource.WithFromEnv(),
	)
	if err != nil {
		logger.Warn("telemetry: resource incomplete", "err", err)
	}
	return res
}

// buildVersion is the service.version of a binary with build information
// bi: the main module's version (a tag, or the pseudo-version the go command
// stamps from VCS), else the short VCS revision, else "devel".
func buildVersion(bi *debug.BuildInfo, ok bool) string {
	if !ok || bi == nil {
		return "devel"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev string
	var modified bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified {
		rev += "+dirty"
	}
	return rev
}
