package config

import (
	"bytes"
	"cmp"
	"errors"
	"os"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	toml "github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// Load reads and parses the configuration file at path. See Parse.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// Parse parses a configuration file; name is the file name used in
// messages ("config" if empty). A leading UTF-8 byte order mark is ignored.
// Absent keys take their defaults. The error joins (errors.Join) every
// problem found, ordered by line, each on one line of the form
//
//	FILE:LINE: KEY: what is wrong (valid RANGE)
//	FILE:LINE: KEY: what is wrong with it and another key together
//	FILE:LINE: unknown key KEY
//	FILE:LINE: unknown table KEY
//	FILE:LINE:COLUMN: invalid TOML: what is wrong
//
// Invalid TOML, or a table such as [limits] written as a plain value,
// stops parsing at that first error; all other problems are reported
// together.
func Parse(name string, data []byte) (*Config, error) {
	if name == "" {
		name = "config"
	}
	data = bytes.TrimPrefix(data, []byte("\uFEFF")) // as Windows editors write

	idx, err := indexDocument(name, data)
	if err != nil {
		return nil, err
	}

	raw := reflect.New(schema.raw)
	var problems []*problem
	err = toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields().Decode(raw.Interface())
	var strictErr *toml.StrictMissingError
	var decodeErr *toml.DecodeError
	switch {
	case err == nil:
	case errors.As(err, &strictErr):
		// The document was decoded, except for these keys.
		for i := range strictErr.Errors {
			problems = append(problems, idx.strictProblem(&strictErr.Errors[i]))
		}
	case errors.As(err, &decodeErr):
		return nil, idx.decodeProblem(decodeErr)
	default:
		return nil, &problem{file: name, msg: "invalid TOML: " + err.Error()}
	}

	c := Default()
	cv := reflect.ValueOf(c).Elem()
	rv := raw.Elem()
	failed := map[string]bool{}
	for _, l := range schema.leaves {
		r := rv.FieldByIndex(l.index).Interface()
		if r == nil {
			continue // absent: keep the default
		}
		v, msg := l.rule.convert(r)
		if msg != "" {
			info := idx.first[l.key]
			problems = append(problems, &problem{
				file: name, line: info.line, sortCol: info.col, key: l.key,
				msg: msg + " (valid " + l.rule.valid() + ")",
			})
			failed[l.key] = true
			continue
		}
		cv.FieldByIndex(l.index).Set(reflect.ValueOf(v))
	}
	for i := range schema.arrays {
		problems = append(problems, idx.convertArray(&schema.arrays[i], rv, cv, failed)...)
	}
	for _, r := range relations(c) {
		if r.dependsOnAny(failed) {
			continue
		}
		info := idx.first[r.key]
		problems = append(problems, &problem{file: name, line: info.line, sortCol: info.col, key: r.key, msg: r.msg})
	}
	if len(problems) > 0 {
		slices.SortStableFunc(problems, func(a, b *problem) int {
			return cmp.Or(cmp.Compare(a.line, b.line), cmp.Compare(a.sortCol, b.sortCol))
		})
		errs := make([]error, len(problems))
		for i, p := range problems {
			errs[i] = p
		}
		return nil, errors.Join(errs...)
	}
	return c, nil
}

// convertArray converts the entries of the array of tables a from the
// raw document rv into the Config cv, and returns the problems of its
// keys and of each entry as a whole, at their lines. A key that fails is
// recorded in failed by its entry key ("limits.override[1].users").
func (idx *docIndex) convertArray(a *arrayTable, rv, cv reflect.Value, failed map[string]bool) []*problem {
	raws := rv.FieldByIndex(a.index)
	if info := idx.first[a.key]; info.kind == "table" && idx.writtenAsTable(a) {
		// [limits.override] or limits.override.users = ...: go-toml
		// would take it as one entry, but a second such table is a
		// duplicate, so the file would not grow as it reads.
		return []*problem{{file: idx.file, line: info.line, sortCol: info.col, key: a.key,
			msg: "must be an array of tables, written [[" + a.key + "]] before each entry, got table"}}
	}
	if raws.Len() == 0 {
		return nil
	}
	var problems []*problem
	at := func(keys ...string) keyInfo {
		for _, k := range keys {
			if info, ok := idx.first[k]; ok {
				return info
			}
		}
		return keyInfo{}
	}
	out := reflect.MakeSlice(a.field.Type, raws.Len(), raws.Len())
	for i := range raws.Len() {
		ek := a.entryKey(i)
		entryFailed := false
		for _, l := range a.leaves {
			r := raws.Index(i).FieldByIndex(l.index).Interface()
			if r == nil {
				continue
			}
			v, msg := l.rule.convert(r)
			if msg != "" {
				key := a.entryLeafKey(i, l)
				info := at(key, ek, a.key)
				problems = append(problems, &problem{
					file: idx.file, line: info.line, sortCol: info.col, key: key,
					msg: msg + " (valid " + l.rule.valid() + ")",
				})
				failed[key] = true
				entryFailed = true
				continue
			}
			out.Index(i).FieldByIndex(l.index).Set(reflect.ValueOf(v))
		}
		if entryFailed {
			continue // what the entry lacks may be the key that failed
		}
		for _, msg := range entryProblems(out.Index(i)) {
			info := at(ek, a.key)
			problems = append(problems, &problem{file: idx.file, line: info.line, sortCol: info.col, key: ek, msg: msg})
		}
	}
	cv.FieldByIndex(a.index).Set(out)
	return problems
}

// writtenAsTable reports whether the document writes the array of
// tables a as a plain table: a header [limits.override], or a dotted key
// of one of its keys (limits.override.users = ...). A header of an
// unknown table below it ([[limits.override.x]]) is reported as such.
func (idx *docIndex) writtenAsTable(a *arrayTable) bool {
	for _, k := range idx.at {
		if k == a.key {
			return true
		}
		for _, l := range a.leaves {
			if k == l.key {
				return true
			}
		}
	}
	return false
}

// problem is one thing wrong with a configuration.
type problem struct {
	file      string
	line, col int    // 1-based; 0 when unknown or not shown
	key       string // dotted key the message is about, if any
	msg       string
	sortCol   int // column of the key, to order problems on one line
}

// Error formats the problem as FILE:LINE[:COL]: [KEY: ]MSG.
func (p *problem) Error() string {
	var b strings.Builder
	if p.file != "" {
		b.WriteString(p.file)
		if p.line > 0 {
			b.WriteString(":" + strconv.Itoa(p.line))
			if p.col > 0 {
				b.WriteString(":" + strconv.Itoa(p.col))
			}
		}
		b.WriteString(": ")
	}
	if p.key != "" {
		b.WriteString(p.key + ": ")
	}
	b.WriteString(p.msg)
	return b.String()
}

// docIndex locates the keys of a document, which go-toml's decoder does
// not report for values it decoded without error.
type docIndex struct {
	file       string
	lineStarts []int // byte offset at which each line starts
	// first holds, for every dotted key and every prefix of one, where it
	// first occurs and what kind of value it has there.
	first map[string]keyInfo
	// at maps the position of the first part of every key written in the
	// document to the full dotted key.
	at map[position]string
	// entries counts the entries of each array of tables written with
	// [[headers]]; first also holds each entry ("limits.override[1]")
	// and its keys ("limits.override[1].users").
	entries map[string]int
}

type keyInfo struct {
	line, col int
	kind      string // "integer", "table", ...
}

type position struct{ line, col int }

// indexDocument parses data with go-toml's low-level parser, recording
// where each key is. A syntax error is returned as a problem.
func indexDocument(name string, data []byte) (*docIndex, error) {
	idx := &docIndex{
		file:       name,
		lineStarts: []int{0},
		first:      map[string]keyInfo{},
		at:         map[position]string{},
		entries:    map[string]int{},
	}
	for i, c := range data {
		if c == '\n' {
			idx.lineStarts = append(idx.lineStarts, i+1)
		}
	}

	var p unstable.Parser
	p.Reset(data)
	var table []string // the key of the current [table]
	entry := ""        // the current entry of an array of tables
	for p.NextExpression() {
		n := p.Expression()
		switch n.Kind {
		case unstable.Table, unstable.ArrayTable:
			kind := "table"
			parts, offset := keyParts(n)
			entry = ""
			if n.Kind == unstable.ArrayTable {
				kind = "array of tables"
				key := joinKey(parts)
				idx.entries[key]++
				entry = key + "[" + strconv.Itoa(idx.entries[key]) + "]"
				line, col := idx.position(offset)
				idx.first[entry] = keyInfo{line: line, col: col, kind: "table"}
			}
			idx.add(parts, offset, kind)
			table = parts
		case unstable.KeyValue:
			idx.addKeyValue(table, n)
			if entry != "" {
				parts, offset := keyParts(n)
				line, col := idx.position(offset)
				k := entry + "." + joinKey(parts)
				if idx.first[k] == (keyInfo{}) {
					idx.first[k] = keyInfo{line: line, col: col, kind: kindName(n.Value().Kind)}
				}
				idx.at[position{line, col}] = k // an unknown key is named by its entry
			}
		}
	}
	if err := p.Error(); err != nil {
		pr := &problem{file: name, msg: "invalid TOML: " + err.Error()}
		var perr *unstable.ParserError
		if errors.As(err, &perr) {
			if offset, ok := offsetIn(data, perr.Highlight); ok {
				pr.line, pr.col = idx.position(offset)
			}
		}
		return nil, pr
	}
	return idx, nil
}

// offsetIn returns the offset of sub within data, if sub is a subslice of
// data.
func offsetIn(data, sub []byte) (int, bool) {
	offset := cap(data) - cap(sub)
	if offset < 0 || offset > len(data) {
		return 0, false
	}
	if len(sub) > 0 && (offset == len(data) || &data[offset] != &sub[0]) {
		return 0, false
	}
	return offset, true
}

// keyParts returns the parts of the key of a KeyValue, Table or ArrayTable
// node and the offset of its first part.
func keyParts(n *unstable.Node) (parts []string, offset int) {
	it := n.Key()
	first := true
	for it.Next() {
		k := it.Node()
		if first {
			offset = int(k.Raw.Offset)
			first = false
		}
		parts = append(parts, string(k.Data))
	}
	return parts, offset
}

// addKeyValue records a key-value in the table with key prefix, and the
// key-values of an inline table value.
func (idx *docIndex) addKeyValue(prefix []string, n *unstable.Node) {
	parts, offset := keyParts(n)
	full := append(slices.Clip(prefix), parts...)
	value := n.Value()
	idx.add(full, offset, kindName(value.Kind))
	if value.Kind == unstable.InlineTable {
		it := value.Children()
		for it.Next() {
			if c := it.Node(); c.Kind == unstable.KeyValue {
				idx.addKeyValue(full, c)
			}
		}
	}
}

// maxKeyDepth bounds the prefixes of long dotted keys that add records:
// recording all of them would take time quadratic in the key's length.
const maxKeyDepth = 3

// add records the dotted key parts, written at offset, holding a kind.
func (idx *docIndex) add(parts []string, offset int, kind string) {
	line, col := idx.position(offset)
	for i := 1; i <= len(parts); i++ {
		if i > maxKeyDepth && i < len(parts) {
			continue // no key of the schema is this deep
		}
		key := joinKey(parts[:i])
		if _, ok := idx.first[key]; ok {
			continue
		}
		k := "table" // a prefix of a dotted key
		if i == len(parts) {
			k = kind
		}
		idx.first[key] = keyInfo{line: line, col: col, kind: k}
	}
	idx.at[position{line, col}] = joinKey(parts)
}

// position returns the 1-based line and column (in bytes) of offset.
func (idx *docIndex) position(offset int) (line, col int) {
	i := sort.Search(len(idx.lineStarts), func(i int) bool { return idx.lineStarts[i] > offset })
	return i, offset - idx.lineStarts[i-1] + 1
}

// keyAt returns the dotted key written at line:col, falling back to the
// key go-toml reports (which lacks the table for keys in inline tables).
func (idx *docIndex) keyAt(line, col int, fallback toml.Key) string {
	if k, ok := idx.at[position{line, col}]; ok {
		return k
	}
	return joinKey(fallback)
}

// strictProblem turns an error of go-toml's strict mode into a problem.
func (idx *docIndex) strictProblem(e *toml.DecodeError) *problem {
	line, col := e.Position()
	key := idx.keyAt(line, col, e.Key())
	pr := &problem{file: idx.file, line: line, sortCol: col}
	switch {
	case schema.tables[key]:
		// go-toml reports an array where a table belongs as unknown.
		pr.key = key
		pr.msg = "must be a table, got " + idx.first[key].kind
	case strings.Contains(e.Error(), "missing table"):
		pr.msg = "unknown table " + shorten(key)
	default:
		pr.msg = "unknown key " + shorten(key)
	}
	return pr
}

// decodeProblem turns an error of go-toml's decoder, other than strict
// mode, into a problem. The document parsed, so these are type errors on
// the tables or TOML errors the parser does not detect (duplicate keys,
// integer overflow, impossible dates).
func (idx *docIndex) decodeProblem(e *toml.DecodeError) *problem {
	line, col := e.Position()
	key := joinKey(e.Key())
	msg := strings.TrimPrefix(e.Error(), "toml: ")
	for _, a := range schema.arrays {
		if a.key == key {
			info := idx.first[key]
			return &problem{file: idx.file, line: info.line, key: key, msg: "must be an array of tables, written [[" + key + "]], got " + info.kind}
		}
	}
	if schema.tables[key] && (strings.HasPrefix(msg, "cannot decode TOML ") || strings.HasPrefix(msg, "cannot store an array table")) {
		info := idx.first[key]
		return &problem{file: idx.file, line: info.line, key: key, msg: "must be a table, got " + info.kind}
	}
	return &problem{file: idx.file, line: line, col: col, msg: "invalid TOML: " + msg}
}

// joinKey joins key parts with dots, quoting parts that are not bare keys.
func joinKey(parts []string) string {
	var b strings.Builder
	for i, p := range parts {
		if i > 0 {
			b.WriteByte('.')
		}
		if isBareKey(p) {
			b.WriteString(p)
		} else {
			b.WriteString(strconv.Quote(p))
		}
	}
	return b.String()
}

// shorten cuts a key for a message to at most 100 characters.
func shorten(key string) string {
	const maxRunes = 100
	if utf8.RuneCountInString(key) <= maxRunes {
		return key
	}
	return string([]rune(key)[:maxRunes-3]) + "..."
}

func isBareKey(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// kindName names the TOML type of a value node.
func kindName(k unstable.Kind) string {
	switch k {
	case unstable.String:
		return "string"
	case unstable.Integer:
		return "integer"
	case unstable.Float:
		return "float"
	case unstable.Bool:
		return "boolean"
	case unstable.Array:
		return "array"
	case unstable.InlineTable:
		return "table"
	case unstable.DateTime, unstable.LocalDateTime:
		return "date-time"
	case unstable.LocalDate:
		return "date"
	case unstable.LocalTime:
		return "time"
	default:
		return "value"
	}
}
