package main

// imapguard as an operator runs it: its default configuration, info
// logging, spans to a local OTLP collector and a Prometheus endpoint
// that is scraped, the way the targets of issue 14 are to be measured;
// and the CPU profiles of -profile.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/imapguard/imapguard/test/otlpreceiver"
)

// scrapeInterval is how often the harness scrapes every imapguard's
// Prometheus endpoint during the run, as a Prometheus server would (its
// usual scrape_interval).
const scrapeInterval = 15 * time.Second

// collector is the local OpenTelemetry collector every imapguard sends
// its spans to (OTLP/HTTP), one counting receiver per instance under a
// path of its own, and the scraper of their Prometheus endpoints. It runs
// in the harness's process: its CPU is not in imapguard's column, as a
// collector on the same machine would not be.
type collector struct {
	srv  *http.Server
	base string // http://127.0.0.1:PORT

	mu        sync.Mutex
	receivers map[string]*otlpreceiver.Receiver // instance -> its receiver
	column    map[string]string                 // instance -> target
	metrics   map[string]string                 // instance -> its /metrics URL
	scrapes   map[string]int                    // target -> successful scrapes
	failures  map[string]int                    // target -> failed scrapes
	lastErr   string

	stop chan struct{}
	done chan struct{}
}

// startCollector starts the collector and its scraper.
func (h *harness) startCollector() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	c := &collector{
		base:      "http://" + ln.Addr().String(),
		receivers: map[string]*otlpreceiver.Receiver{},
		column:    map[string]string{},
		metrics:   map[string]string{},
		scrapes:   map[string]int{},
		failures:  map[string]int{},
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	c.srv = &http.Server{Handler: c, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute}
	go func() { _ = c.srv.Serve(ln) }()
	go c.scrapeLoop()
	h.collector = c
	h.cleanups = append(h.cleanups, c.close)
	h.logf("OTLP collector (in-process, counting) on %s", c.base)
	return nil
}

func (c *collector) close() {
	select {
	case <-c.stop:
	default:
		close(c.stop)
		<-c.done
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = c.srv.Shutdown(ctx)
}

// endpoint registers the imapguard instance of column target and returns
// its otlp_endpoint: the collector's URL with the instance as base path.
func (c *collector) endpoint(instance, target string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.receivers[instance] == nil {
		c.receivers[instance] = otlpreceiver.NewCounting()
	}
	c.column[instance] = target
	return c.base + "/" + instance
}

// scrape registers (or, after a restart, moves) an instance's Prometheus
// endpoint.
func (c *collector) scrape(instance, addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.metrics[instance] = "http://" + addr + "/metrics"
}

// ServeHTTP hands /INSTANCE/v1/traces (and /v1/metrics) to the
// instance's receiver.
func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	inst, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	c.mu.Lock()
	rec := c.receivers[inst]
	c.mu.Unlock()
	if rec == nil {
		http.NotFound(w, r)
		return
	}
	rec.Handler().ServeHTTP(w, r)
}

func (c *collector) scrapeLoop() {
	defer close(c.done)
	client := &http.Client{Timeout: 10 * time.Second}
	t := time.NewTicker(scrapeInterval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		c.mu.Lock()
		urls := make(map[string]string, len(c.metrics))
		for inst, u := range c.metrics {
			urls[inst] = u
		}
		c.mu.Unlock()
		for inst, u := range urls {
			err := scrapeOnce(client, u)
			c.mu.Lock()
			if err != nil {
				c.failures[c.column[inst]]++
				c.lastErr = fmt.Sprintf("%s: %v", inst, err)
			} else {
				c.scrapes[c.column[inst]]++
			}
			c.mu.Unlock()
		}
	}
}

func scrapeOnce(client *http.Client, url string) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || n == 0 {
		return fmt.Errorf("status %d, %d bytes", resp.StatusCode, n)
	}
	return nil
}

// telemetryEnv is what the JSON environment records of imapguard's
// telemetry and relay, per column.
type telemetryEnv struct {
	// On is false with -imapguard-telemetry=false.
	On bool `json:"on"`
	// Settings are the effective telemetry.* and performance.* settings
	// of each imapguard column, as imapguard -check prints them.
	Settings map[string]map[string]string `json:"settings"`
	// Collector and Scrape say what received the spans and what read the
	// metrics.
	Collector string `json:"collector,omitempty"`
	Scrape    string `json:"scrape,omitempty"`
	// What the collector received from each column by the end of the
	// run (imapguard stopped first, so that its exporters flushed), and
	// the scrapes of each column's Prometheus endpoint.
	Spans         map[string]int64 `json:"spans,omitempty"`
	TraceExports  map[string]int64 `json:"trace_exports,omitempty"`
	Rejected      map[string]int64 `json:"rejected_exports,omitempty"`
	Scrapes       map[string]int   `json:"scrapes,omitempty"`
	ScrapeErrors  map[string]int   `json:"scrape_errors,omitempty"`
	LastScrapeErr string           `json:"last_scrape_error,omitempty"`
}

// describeTelemetry fills the environment's record of what imapguard ran
// with; counts are added by countTelemetry at the end.
func (h *harness) describeTelemetry() *telemetryEnv {
	te := &telemetryEnv{On: h.opts.telemetry, Settings: map[string]map[string]string{}}
	for _, t := range h.targets {
		if s := h.checked[t.name]; s != nil {
			keep := map[string]string{}
			for k, v := range s {
				if strings.HasPrefix(k, "telemetry.") || strings.HasPrefix(k, "performance.") || k == "log.level" {
					keep[k] = v
				}
			}
			te.Settings[t.name] = keep
		}
	}
	if h.collector != nil {
		te.Collector = "in-process OTLP/HTTP collector on " + h.collector.base + " (test/otlpreceiver, counting: decodes every export, keeps totals), one base path per imapguard instance"
		te.Scrape = fmt.Sprintf("each imapguard's telemetry.metrics_listen (a free port of 127.0.0.1) scraped every %s by the harness", scrapeInterval)
	}
	return te
}

// countTelemetry adds what the collector received and the scrapes, and
// notes a column that traced nothing.
func (h *harness) countTelemetry(te *telemetryEnv) {
	c := h.collector
	if c == nil || te == nil {
		return
	}
	te.Spans, te.TraceExports, te.Rejected = map[string]int64{}, map[string]int64{}, map[string]int64{}
	c.mu.Lock()
	for inst, r := range c.receivers {
		col := c.column[inst]
		n := r.Counts()
		te.Spans[col] += n.Spans
		te.TraceExports[col] += n.TraceExports
		te.Rejected[col] += n.Rejected
	}
	te.Scrapes = maps(c.scrapes)
	te.ScrapeErrors = maps(c.failures)
	te.LastScrapeErr = c.lastErr
	c.mu.Unlock()
	var parts []string
	for _, t := range h.targets {
		if _, ok := te.Spans[t.name]; !ok {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %d spans in %d exports (%d refused), %d scrapes (%d failed)",
			t.name, te.Spans[t.name], te.TraceExports[t.name], te.Rejected[t.name], te.Scrapes[t.name], te.ScrapeErrors[t.name]))
		if te.Spans[t.name] == 0 && h.measuredAny(t.name) {
			h.note("%s exported no span to the collector: its tracing was not on as configured (see %s)", t.name, h.dir)
		}
	}
	if len(parts) > 0 {
		h.note("telemetry: traces = \"otlp\" (sample_ratio %s) to the local collector and a Prometheus endpoint scraped every %s; received: %s",
			te.sampleRatio(), scrapeInterval, strings.Join(parts, "; "))
	}
	if te.LastScrapeErr != "" {
		h.note("a scrape of a Prometheus endpoint failed: %s", te.LastScrapeErr)
	}
}

func (te *telemetryEnv) sampleRatio() string {
	var out []string
	for _, s := range te.Settings {
		if v := s["telemetry.sample_ratio"]; v != "" && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	if len(out) == 0 {
		return "?"
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

func maps[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// measuredAny reports whether target took part in a measurement without
// error.
func (h *harness) measuredAny(target string) bool {
	for _, r := range h.results {
		if r.Target == target && r.Error == "" && r.Load != nil && r.Load.Ops > 0 {
			return true
		}
	}
	return false
}

// parseCheck reads imapguard -check's "key : value" lines.
func parseCheck(out []byte) map[string]string {
	m := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		k = strings.TrimSpace(k)
		if k == "" || strings.ContainsAny(k, " \t") {
			continue
		}
		m[k] = strings.TrimSpace(v)
	}
	return m
}

// imapguardEnv is the environment imapguard runs with: the harness's,
// without what would override its configuration (IMAPGUARD_RELAY
// overrides relay = "auto", OTEL_* the telemetry keys, IMAPGUARD_PPROF
// is set by -profile alone), plus extra.
func imapguardEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "IMAPGUARD_RELAY" || k == "IMAPGUARD_PPROF" || strings.HasPrefix(k, "OTEL_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// overriddenEnv names the variables of the harness's environment that
// imapguardEnv keeps from imapguard.
func overriddenEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "IMAPGUARD_RELAY" || k == "IMAPGUARD_PPROF" || strings.HasPrefix(k, "OTEL_") {
			out = append(out, k)
		}
	}
	return out
}

// profiledWorkloads are those whose first run -profile profiles.
var profiledWorkloads = []string{"noop", "login"}

// startProfile fetches the CPU profile of the imapguard instance that
// serves w while it runs, when -profile is set, w is noop or login, this
// is the first run and t is an imapguard column: DIR/WORKLOAD-TARGET.pprof,
// over the measurement's duration less a second (imapload logs its
// connections in before its clock starts). The function it returns waits
// for the profile and says where it is, or why there is none.
func (h *harness) startProfile(run int, w workload, t *target) func() string {
	if h.opts.profile == "" || run != 1 || !slices.Contains(profiledWorkloads, w.name) || t.pprof == nil {
		return func() string { return "" }
	}
	addr := t.pprof(w.upstream)
	if addr == "" {
		return func() string { return "" }
	}
	seconds := max(1, int(h.opts.duration.Seconds())-1)
	path := filepath.Join(h.opts.profile, w.name+"-"+t.name+".pprof")
	done := make(chan string, 1)
	go func() {
		client := &http.Client{Timeout: time.Duration(seconds)*time.Second + 30*time.Second}
		resp, err := client.Get("http://" + addr + "/debug/pprof/profile?seconds=" + strconv.Itoa(seconds))
		if err != nil {
			done <- "no profile: " + err.Error()
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %d: %s", resp.StatusCode, firstLine(string(b)))
		}
		if err == nil {
			err = os.WriteFile(path, b, 0o644)
		}
		if err != nil {
			done <- "no profile: " + err.Error()
			return
		}
		done <- path
	}()
	return func() string {
		p := <-done
		if strings.HasPrefix(p, "no profile") {
			h.logf("%s %s: %s", w.name, t.name, p)
		} else {
			h.logf("%s %s: CPU profile of %d s in %s (go tool pprof -top %s)", w.name, t.name, seconds, p, p)
		}
		return p
	}
}
