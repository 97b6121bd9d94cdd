package main

import (
	"bytes"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imapguard/imapguard/cmd/imapload/loadresult"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestBigMessageSize(t *testing.T) {
	for _, size := range []int{1 << 20, 10 << 20, 1<<20 + 1, 1<<20 + 77, 1<<20 + 79} {
		m := bigMessage(size, time.Unix(0, 0))
		if len(m) != size {
			t.Errorf("bigMessage(%d) has %d bytes", size, len(m))
		}
		if !bytes.HasSuffix(m, []byte("\r\n")) || bytes.Contains(bytes.ReplaceAll(m, []byte("\r\n"), nil), []byte("\n")) {
			t.Errorf("bigMessage(%d): line ends are not all CRLF", size)
		}
	}
}

func TestWriteMaildir(t *testing.T) {
	dir := t.TempDir()
	if err := writeMaildir(dir, 20, 1<<20); err != nil {
		t.Fatal(err)
	}
	cur, err := os.ReadDir(dir + "/cur")
	if err != nil || len(cur) != 20 {
		t.Fatalf("INBOX: %d files, %v", len(cur), err)
	}
	for _, e := range cur {
		info, _ := e.Info()
		if !strings.Contains(e.Name(), ",S="+strconv.FormatInt(info.Size(), 10)+",") {
			t.Errorf("%s: size %d not in the name", e.Name(), info.Size())
		}
	}
	big, err := os.ReadDir(dir + "/.Big/cur")
	if err != nil || len(big) != 1 {
		t.Fatalf("Big: %d files, %v", len(big), err)
	}
}

func TestReportTable(t *testing.T) {
	h := &harness{opts: options{workloads: []string{"noop", "fetch-tls"}}}
	h.targets = []*target{{name: "direct"}, {name: "imapguard"}, {name: "haproxy"}, {name: "nginx", skip: "not installed"}}
	cpu := 1.0
	for run := 1; run <= 3; run++ {
		for i, tg := range []string{"direct", "imapguard", "haproxy"} {
			r := runResult{Run: run, Workload: "noop", Target: tg, Load: &loadResult{Result: loadresult.Result{
				Seconds: 10, Ops: int64(10000 * (i + run)), OpsPerSec: float64(1000 * (i + run)), LatencyP50Ms: 0.5,
			}}}
			if tg != "direct" {
				r.ProxyCPUSeconds = &cpu
			}
			h.results = append(h.results, r)
		}
	}
	rep := h.report(environment{})
	var buf bytes.Buffer
	rep.printTable(&buf)
	out := buf.String()
	// Medians: direct 2000, imapguard 3000, haproxy 4000.
	for _, want := range []string{"round trips (/s)", "2000", "3000", "4000", "0.75x", "skipped", "fetch-tls"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	var roundTrips *row
	for i := range rep.Rows {
		if rep.Rows[i].Workload == "noop" && rep.Rows[i].Metric == "round trips" {
			roundTrips = &rep.Rows[i]
		}
	}
	if roundTrips == nil || *roundTrips.Ratios["imapguard/haproxy"] != 0.75 || roundTrips.Ratios["imapguard/nginx"] != nil {
		t.Errorf("round trips row: %+v", roundTrips)
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-workloads", "noop,login", "-targets", "direct,nginx", "-concurrency", "noop=3"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(o.workloads, ",") != "noop,login" || strings.Join(o.targets, ",") != "direct,nginx" || o.concurrency["noop"] != 3 || o.concurrency["login"] != 16 {
		t.Errorf("got %+v", o)
	}
	if !slices.Equal(o.sessions, []int{5000, 50000}) || o.heldUpstream != "auto" || !o.telemetry || o.profile != "" {
		t.Errorf("held and telemetry defaults: %+v", o)
	}
	o, err = parseFlags([]string{"-sessions", "2000", "-targets", "imapguard,imapguard-goroutines", "-held-upstream", "imapd", "-imapguard-telemetry=false"})
	if err != nil || !slices.Equal(o.sessions, []int{2000}) || o.heldUpstream != "imapd" || o.telemetry || !slices.Equal(o.targets, []string{"imapguard", "imapguard-goroutines"}) {
		t.Errorf("got %+v, %v", o, err)
	}
	for _, bad := range [][]string{{"-workloads", "nope"}, {"-targets", "apache"}, {"-concurrency", "noop=0"}, {"-runs", "0"}, {"-sessions", "0"}, {"-sessions", "5k"}, {"-held-upstream", "nginx"}} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("parseFlags(%v) accepted", bad)
		}
	}
}
