package proxy

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// TestAttrCache checks that cached options record the same series as
// metric.WithAttributes would, and that recording through them
// allocates nothing in the proxy once the combination has been seen.
func TestAttrCache(t *testing.T) {
	rd := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(rd))
	defer mp.Shutdown(context.Background())
	c, err := mp.Meter("test").Int64Counter("c")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c.Add(ctx, 1, attemptAttrs.get([2]string{"PLAIN", authSuccess}).add...)
	c.Add(ctx, 2, attemptAttrs.get([2]string{"PLAIN", authSuccess}).add...)
	c.Add(ctx, 4, attemptAttrs.get([2]string{"LOGIN", authFailed}).add...)
	if a, b := attemptAttrs.get([2]string{"PLAIN", authSuccess}), attemptAttrs.get([2]string{"PLAIN", authSuccess}); a != b {
		t.Error("the same combination made twice")
	}

	var rm metricdata.ResourceMetrics
	if err := rd.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	got := map[attribute.Distinct]int64{}
	for _, dp := range rm.ScopeMetrics[0].Metrics[0].Data.(metricdata.Sum[int64]).DataPoints {
		got[dp.Attributes.Equivalent()] = dp.Value
	}
	for set, want := range map[attribute.Set]int64{
		attribute.NewSet(attribute.String("mechanism", "PLAIN"), attribute.String("result", "success")): 3,
		attribute.NewSet(attribute.String("result", "failed"), attribute.String("mechanism", "LOGIN")):  4,
	} {
		if got[set.Equivalent()] != want {
			t.Errorf("series %v = %d; want %d (all: %v)", set.Encoded(attribute.DefaultEncoder()), got[set.Equivalent()], want, got)
		}
	}
	if len(got) != 2 {
		t.Errorf("%d series; want 2", len(got))
	}

	o := outcomeAttrs.get(outcomeLogout)
	if n := testing.AllocsPerRun(100, func() {
		c.Add(ctx, 1, outcomeAttrs.get(outcomeLogout).add...)
	}); n != 0 {
		t.Errorf("a cached measurement allocates %.0f times; want 0", n)
	}
	if outcomeAttrs.get(outcomeLogout) != o {
		t.Error("the outcome's options made again")
	}
}
