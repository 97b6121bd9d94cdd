package config

import (
	"fmt"
	"reflect"
	"strings"
)

// Table describes one table of the file, for the tools that document the
// configuration: config/internal/gen writes default.toml and README.md
// from Tables and the doc comments of config.go and keys_*.go.
type Table struct {
	// Name is the table's name in the file, such as "limits".
	Name string
	// GoType is the table's struct type, such as "Limits", whose doc
	// comment documents the table.
	GoType string
	// Keys are the table's keys in the order of the struct's fields.
	Keys []Key
	// Array is true for an array of tables, such as
	// [[limits.override]]: the file may hold any number of entries, each
	// under its own header, and Default holds none. Its keys' defaults
	// are those of an entry that does not set them.
	Array bool
}

// Key describes one key of a table.
type Key struct {
	// Name is the key's name in its table, such as "max_connections";
	// its dotted key is the table's name, a dot and Name.
	Name string
	// GoField is the key's field, such as "MaxConnections", whose doc
	// comment documents the key.
	GoField string
	// Type names the key's type for people: "string", "integer",
	// "float", "boolean", "duration" or "array of strings".
	Type string
	// Default is the key's value in Default as written in TOML:
	// 2147483647, "5s", [].
	Default string
	// DefaultMeans says in words what the default does where its value
	// alone does not, such as "no practical limit" (the field's means
	// tag); "" when the value speaks for itself.
	DefaultMeans string
	// Valid describes the valid values as messages do, such as
	// "1 .. 2147483647".
	Valid string
}

// Tables describes every table and key of the file, in the order of the
// Config struct.
func Tables() []Table {
	var out []Table
	def := reflect.ValueOf(Default()).Elem()
	arrays := schema.arrays
	for j, l := range schema.leaves {
		for len(arrays) > 0 && arrays[0].after == j {
			out = append(out, arrayTableDoc(&arrays[0]))
			arrays = arrays[1:]
		}
		table, name, _ := strings.Cut(l.key, ".")
		if len(out) == 0 || out[len(out)-1].Name != table {
			out = append(out, Table{Name: table, GoType: def.Type().Field(l.index[0]).Type.Name()})
		}
		t := &out[len(out)-1]
		t.Keys = append(t.Keys, Key{
			Name:         name,
			GoField:      l.field.Name,
			Type:         typeName(l.field.Type),
			Default:      tomlValue(def.FieldByIndex(l.index)),
			DefaultMeans: l.field.Tag.Get("means"),
			Valid:        l.rule.valid(),
		})
	}
	for i := range arrays {
		out = append(out, arrayTableDoc(&arrays[i]))
	}
	return out
}

// arrayTableDoc describes an array of tables, with the defaults of an
// entry's keys (their zero values: not set).
func arrayTableDoc(a *arrayTable) Table {
	elem := reflect.New(a.field.Type.Elem()).Elem()
	t := Table{Name: a.key, GoType: a.field.Type.Elem().Name(), Array: true}
	for _, l := range a.leaves {
		t.Keys = append(t.Keys, Key{
			Name:         l.key[len(a.key)+1:],
			GoField:      l.field.Name,
			Type:         typeName(l.field.Type),
			Default:      tomlValue(elem.FieldByIndex(l.index)),
			DefaultMeans: l.field.Tag.Get("means"),
			Valid:        l.rule.valid(),
		})
	}
	return t
}

// typeName names the type of a leaf field for people.
func typeName(t reflect.Type) string {
	switch {
	case t == reflect.TypeFor[Duration]():
		return "duration"
	case t.Kind() == reflect.String:
		return "string"
	case t.Kind() == reflect.Int:
		return "integer"
	case t.Kind() == reflect.Float64:
		return "float"
	case t.Kind() == reflect.Bool:
		return "boolean"
	case t == reflect.TypeFor[[]string]():
		return "array of strings"
	default:
		panic("config: no type name for " + t.String())
	}
}

// tomlValue formats one leaf field as a TOML value: strings and durations
// quoted, arrays in brackets.
func tomlValue(v reflect.Value) string {
	switch x := v.Interface().(type) {
	case string:
		return tomlString(x)
	case Duration:
		return tomlString(x.String())
	case []string:
		elems := make([]string, len(x))
		for i, e := range x {
			elems[i] = tomlString(e)
		}
		return "[" + strings.Join(elems, ", ") + "]"
	default:
		return formatValue(v)
	}
}

// tomlString quotes s as a TOML basic string, with the escapes TOML has
// (not all of Go's: no \x, \a or \v).
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteRune(c)
		case c < ' ' || c == 0x7f:
			fmt.Fprintf(&b, "\\u%04X", c)
		default:
			b.WriteRune(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}
