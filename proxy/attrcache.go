package proxy

import (
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// measureOpts are the options of a measurement with one fixed
// combination of attributes, made once: metric.WithAttributes copies,
// sorts and hashes its attributes into a new attribute.Set on every call
// (several allocations per measurement, per login), where a cached
// option and a cached slice to pass it in allocate nothing. The SDK
// looks the series up by the set's precomputed identity.
type measureOpts struct {
	add []metric.AddOption
	rec []metric.RecordOption
}

// newAttrCache caches the measureOpts of the attribute combinations that
// attrs makes from keys of type K.
func newAttrCache[K comparable](attrs func(K) []attribute.KeyValue) *optCache[K, *measureOpts] {
	return newOptCache(func(k K) *measureOpts {
		opt := metric.WithAttributeSet(attribute.NewSet(attrs(k)...))
		return &measureOpts{add: []metric.AddOption{opt}, rec: []metric.RecordOption{opt}}
	})
}

// maxCachedOpts bounds each cache: its keys come from vocabularies of the
// code (outcomes, results, mechanisms, reasons, listeners, the upstream's
// address), never from a client, so this is a safety net, not a limit
// expected to be reached.
const maxCachedOpts = 256

// optCache holds values that build makes from keys of type K, once each.
// Reads take no lock: a copy-on-write map, replaced under mu when a new
// key comes.
type optCache[K comparable, V any] struct {
	build func(K) V
	mu    sync.Mutex
	m     atomic.Pointer[map[K]V]
}

func newOptCache[K comparable, V any](build func(K) V) *optCache[K, V] {
	return &optCache[K, V]{build: build}
}

// get returns the value for k.
func (c *optCache[K, V]) get(k K) V {
	if m := c.m.Load(); m != nil {
		if v, ok := (*m)[k]; ok {
			return v
		}
	}
	v := c.build(k)
	c.mu.Lock()
	defer c.mu.Unlock()
	var old map[K]V
	if p := c.m.Load(); p != nil {
		old = *p
	}
	if cached, ok := old[k]; ok {
		return cached
	}
	if len(old) >= maxCachedOpts {
		return v
	}
	m := make(map[K]V, len(old)+1)
	for key, val := range old {
		m[key] = val
	}
	m[k] = v
	c.m.Store(&m)
	return v
}

// The measurements of a connection whose attributes come from a fixed
// vocabulary.
var (
	listenerAttrs = newAttrCache(func(l string) []attribute.KeyValue {
		return []attribute.KeyValue{attribute.String("listener", l)}
	})
	reasonAttrs = newAttrCache(func(r string) []attribute.KeyValue {
		return []attribute.KeyValue{attribute.String("reason", r)}
	})
	okAttrs = newAttrCache(func(ok bool) []attribute.KeyValue {
		return []attribute.KeyValue{attribute.Bool("ok", ok)}
	})
	resultAttrs = newAttrCache(func(r string) []attribute.KeyValue {
		return []attribute.KeyValue{attribute.String("result", r)}
	})
	outcomeAttrs = newAttrCache(func(o outcome) []attribute.KeyValue {
		return []attribute.KeyValue{attribute.String("outcome", o.label())}
	})
	attemptAttrs = newAttrCache(func(k [2]string) []attribute.KeyValue {
		return []attribute.KeyValue{attribute.String("mechanism", k[0]), attribute.String("result", k[1])}
	})
)
