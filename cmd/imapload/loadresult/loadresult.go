// Package loadresult is the JSON result of one cmd/imapload run, shared
// by imapload, which writes it, and the benchmark harness (test/bench),
// which reads it.
package loadresult

// Result is what one imapload run measured. Latencies are in
// milliseconds, rates per second of the measured wall-clock time.
type Result struct {
	Workload    string  `json:"workload"`
	Addr        string  `json:"addr"`
	Concurrency int     `json:"concurrency"`
	Sources     int     `json:"sources"`
	Seconds     float64 `json:"seconds"`

	Ops       int64   `json:"ops"`
	OpsPerSec float64 `json:"ops_per_sec"`
	Bytes     int64   `json:"bytes"`
	MBPerSec  float64 `json:"mb_per_sec"`
	// Messages counts untagged FETCH responses (fetchall, fetch).
	Messages       int64   `json:"messages"`
	MessagesPerSec float64 `json:"messages_per_sec"`

	LatencyP50Ms  float64 `json:"latency_p50_ms"`
	LatencyP99Ms  float64 `json:"latency_p99_ms"`
	LatencyMeanMs float64 `json:"latency_mean_ms"`
	LatencyMaxMs  float64 `json:"latency_max_ms"`

	Errors     int64  `json:"errors"`
	FirstError string `json:"first_error,omitempty"`

	// fetch
	UID uint64 `json:"uid,omitempty"`
	// held
	Sessions       int     `json:"sessions,omitempty"`
	SessionsOpened int     `json:"sessions_opened,omitempty"`
	OpenSeconds    float64 `json:"open_seconds,omitempty"`
	OpenPerSec     float64 `json:"open_per_sec,omitempty"`
	HeldSeconds    float64 `json:"held_seconds,omitempty"`
	NoopOK         int     `json:"noop_ok,omitempty"`
}
