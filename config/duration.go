package config

import (
	"time"

	"github.com/imapguard/imapguard/limits"
)

// Duration is a time.Duration written in the configuration file as a
// string in Go's duration syntax: a number and a unit, possibly repeated,
// such as "30s", "5m", "1h30m" or "500ms". Valid units are "ns", "us",
// "ms", "s", "m" and "h".
type Duration time.Duration

// String formats d in its largest exact unit: "1h", "30m", "90s". A
// duration that is not a whole number of seconds is formatted as
// time.Duration does ("1.5s", "100ms"). The result parses back to d.
func (d Duration) String() string { return limits.FormatDuration(time.Duration(d)) }

// MarshalText encodes d as String does, so that TOML encoders write it as
// a string.
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(d.String()), nil
}

// UnmarshalText decodes a duration string as time.ParseDuration does. It
// does not check ranges; see Config.Validate.
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(string(text))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}
