package config

import (
	"testing"
	"time"
)

func TestDuration(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{time.Hour, "1h"},
		{24 * time.Hour, "24h"},
		{90 * time.Minute, "90m"},
		{30 * time.Minute, "30m"},
		{60 * time.Second, "1m"},
		{90 * time.Second, "90s"},
		{5 * time.Second, "5s"},
		{1500 * time.Millisecond, "1.5s"},
		{100 * time.Millisecond, "100ms"},
		{time.Nanosecond, "1ns"},
		{-time.Hour, "-1h"},
		{-90 * time.Second, "-90s"},
		{time.Hour + time.Nanosecond, "1h0m0.000000001s"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			d := Duration(tt.d)
			if got := d.String(); got != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
			text, err := d.MarshalText()
			if err != nil || string(text) != tt.want {
				t.Errorf("got %q, %v; want %q, nil", text, err, tt.want)
			}
			var back Duration
			if err := back.UnmarshalText(text); err != nil || back != d {
				t.Errorf("got %v, %v; want %v, nil", back, err, d)
			}
		})
	}
	var d Duration
	if err := d.UnmarshalText([]byte("5 minutes")); err == nil {
		t.Errorf("got no error; want one")
	}
}
