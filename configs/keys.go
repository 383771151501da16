package configs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
)

// KeyError is a problem with one key of the configuration file.
type KeyError struct {
	// Key is the dotted path of the key, e.g. "storage.gcDelay" or
	// "storage.subPaths./a.rootDirectory". Known keys are spelled as pier
	// documents them, whatever case the file used; unknown keys as the file
	// has them. Empty for a problem with the file as a whole.
	Key string
	// Message says what is wrong.
	Message string
}

// Error implements error.
func (e *KeyError) Error() string {
	if e.Key == "" {
		return e.Message
	}

	return e.Key + ": " + e.Message
}

// decoder fills the file* structs (schema.go) from JSON. On top of what
// encoding/json does, it gives pier what zot users get from viper, and adds
// what viper does not:
//   - keys match case-insensitively, and a key given twice (in any case) is
//     an error, where encoding/json would silently keep the last;
//   - a key the schema lacks is an error naming its full path;
//   - every error names its key path, including errors returned by a value's
//     own UnmarshalJSON, which encoding/json passes on without one.
//
// It also records the path of every key that has a non-null value, which is
// what warnings and refusals are decided on.
type decoder struct {
	present map[string]bool
	errs    []error
}

// decode decodes data, which must hold one JSON object, into dst, a pointer
// to a struct. It returns the set of key paths present, or every error found.
func decode(data []byte, dst any) (map[string]bool, error) {
	if err := checkSyntax(data); err != nil {
		return nil, err
	}

	d := &decoder{present: map[string]bool{}}
	d.object("", data, reflect.ValueOf(dst).Elem())

	if len(d.errs) > 0 {
		return nil, errors.Join(d.errs...)
	}

	return d.present, nil
}

// checkSyntax rejects malformed JSON up front, with a line and column a
// person can find, so the walk below only meets well-formed values.
func checkSyntax(data []byte) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return &KeyError{Message: "the configuration is empty"}
	}

	var v any

	err := json.Unmarshal(data, &v)

	var syntax *json.SyntaxError
	if errors.As(err, &syntax) {
		line, col := position(data, syntax.Offset)

		return &KeyError{Message: fmt.Sprintf("line %d, column %d: %v", line, col, err)}
	}

	return err
}

// position turns a byte offset into a 1-based line and column.
func position(data []byte, offset int64) (line, col int) {
	before := data[:min(int(offset), len(data))]
	line = bytes.Count(before, []byte("\n")) + 1
	col = len(before) - (bytes.LastIndexByte(before, '\n') + 1) // the offset is just past the bad byte

	return line, col
}

func (d *decoder) fail(key, message string) {
	d.errs = append(d.errs, &KeyError{Key: key, Message: message})
}

// object decodes the JSON object raw into the struct v.
func (d *decoder) object(path string, raw json.RawMessage, v reflect.Value) {
	members, ok := objectMembers(raw)
	if !ok {
		d.fail(path, "expected an object, got "+jsonKind(raw))

		return
	}

	fields := fieldsOf(v.Type())
	seen := map[string]string{}

	for _, m := range members {
		lower := strings.ToLower(m.key)

		f, known := fields[lower]
		if !known {
			d.fail(joinKey(path, m.key), "unknown key"+suggest(m.key, fields))

			continue
		}

		if first, dup := seen[lower]; dup {
			d.fail(joinKey(path, m.key), fmt.Sprintf("given twice (as %q and %q; keys match case-insensitively)", first, m.key))

			continue
		}

		seen[lower] = m.key
		d.value(joinKey(path, f.name), m.value, v.FieldByIndex(f.index))
	}
}

// value decodes raw into v, the field at key path.
func (d *decoder) value(path string, raw json.RawMessage, v reflect.Value) {
	// zot's viper treats null as unset; so does pier, everywhere.
	if jsonKind(raw) == "null" {
		return
	}

	d.present[path] = true
	t := v.Type()

	switch {
	case isStructPointer(t):
		p := reflect.New(t.Elem())
		d.object(path, raw, p.Elem())
		v.Set(p)
	case t.Kind() == reflect.Map && isStructPointer(t.Elem()):
		d.objectMap(path, raw, v)
	case t.Kind() == reflect.Slice && isStructPointer(t.Elem()):
		d.objectList(path, raw, v)
	default:
		if err := json.Unmarshal(raw, v.Addr().Interface()); err != nil {
			d.fail(path, leafMessage(err, t))
		}
	}
}

// objectMap decodes a JSON object whose member names are data (subPaths)
// into v, a map of struct pointers.
func (d *decoder) objectMap(path string, raw json.RawMessage, v reflect.Value) {
	members, ok := objectMembers(raw)
	if !ok {
		d.fail(path, "expected an object, got "+jsonKind(raw))

		return
	}

	m := reflect.MakeMapWithSize(v.Type(), len(members))

	for _, member := range members {
		key := joinKey(path, member.key)
		if m.MapIndex(reflect.ValueOf(member.key)).IsValid() {
			d.fail(key, "given twice")

			continue
		}

		p := reflect.New(v.Type().Elem().Elem())
		d.present[key] = true
		d.object(key, member.value, p.Elem())
		m.SetMapIndex(reflect.ValueOf(member.key), p)
	}

	v.Set(m)
}

// objectList decodes a JSON list of objects (retention policies) into v,
// a slice of struct pointers; each element's keys are checked as any
// object's, named path[i].
func (d *decoder) objectList(path string, raw json.RawMessage, v reflect.Value) {
	var elems []json.RawMessage
	if err := json.Unmarshal(raw, &elems); err != nil {
		d.fail(path, "expected a list of objects, got "+jsonKind(raw))

		return
	}

	list := reflect.MakeSlice(v.Type(), 0, len(elems))

	for i, elem := range elems {
		p := reflect.New(v.Type().Elem().Elem())
		d.object(fmt.Sprintf("%s[%d]", path, i), elem, p.Elem())
		list = reflect.Append(list, p)
	}

	v.Set(list)
}

type member struct {
	key   string
	value json.RawMessage
}

// objectMembers lists the members of a JSON object in file order, keeping
// duplicates, which a map would lose. ok is false when raw is not an object.
func objectMembers(raw json.RawMessage) (members []member, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(raw))

	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, false
	}

	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, false
		}

		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return nil, false
		}

		members = append(members, member{key: tok.(string), value: value})
	}

	return members, true
}

type field struct {
	name  string // as documented, from the json tag
	index []int
}

// fieldsOf maps the lower-cased json name of each field of struct type t to
// the field, looking through embedded structs as encoding/json does.
func fieldsOf(t reflect.Type) map[string]field {
	fields := map[string]field{}

	for i := range t.NumField() {
		sf := t.Field(i)

		if sf.Anonymous && sf.Type.Kind() == reflect.Struct {
			for lower, f := range fieldsOf(sf.Type) {
				fields[lower] = field{name: f.name, index: append([]int{i}, f.index...)}
			}

			continue
		}

		name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
		if !sf.IsExported() || name == "-" {
			continue
		}

		if name == "" {
			name = sf.Name
		}

		fields[strings.ToLower(name)] = field{name: name, index: []int{i}}
	}

	return fields
}

func isStructPointer(t reflect.Type) bool {
	return t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct
}

func joinKey(path, key string) string {
	if path == "" {
		return key
	}

	return path + "." + key
}

// jsonKind names the kind of a well-formed JSON value for messages.
func jsonKind(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "nothing"
	}

	switch raw[0] {
	case '{':
		return "an object"
	case '[':
		return "a list"
	case '"':
		return "a string"
	case 't', 'f':
		return "true/false"
	case 'n':
		return "null"
	default:
		return "a number"
	}
}

// leafMessage turns a decoding error for a value of type t into a message
// for a person editing the file. Errors from the schema's own types (duration,
// port) already are such messages.
func leafMessage(err error, t reflect.Type) string {
	var typeErr *json.UnmarshalTypeError
	if !errors.As(err, &typeErr) {
		return err.Error()
	}

	return fmt.Sprintf("expected %s, got %s", describe(t), typeErr.Value)
}

// describe names what a value of type t looks like in JSON.
func describe(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}

	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "a whole number"
	case reflect.Slice:
		return "a list of " + strings.TrimPrefix(strings.TrimPrefix(describe(t.Elem()), "a "), "an ") + "s"
	case reflect.Map:
		return "an object"
	default:
		return t.String()
	}
}

// suggest offers the known key closest to an unknown one, for typos such as
// "rootDirectry". It returns "" when nothing is close.
func suggest(key string, fields map[string]field) string {
	best, bestDist := "", 3 // more than two edits away is not a typo

	names := make([]string, 0, len(fields))
	for _, f := range fields {
		names = append(names, f.name)
	}

	slices.Sort(names) // the same suggestion on every run

	for _, name := range names {
		if dist := editDistance(strings.ToLower(key), strings.ToLower(name)); dist < bestDist {
			best, bestDist = name, dist
		}
	}

	if best == "" {
		return ""
	}

	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)

	for j := range prev {
		prev[j] = j
	}

	for i := 1; i <= len(a); i++ {
		cur[0] = i

		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}

			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}

		prev, cur = cur, prev
	}

	return prev[len(b)]
}
