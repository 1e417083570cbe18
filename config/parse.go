package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// searchPaths is where Find looks when no path is given (DESIGN §3).
var searchPaths = []string{"pagewire.yml", "litefs.yml", "/etc/pagewire.yml", "/etc/litefs.yml"}

// Find returns the configuration file to load. With explicit set (the
// -config flag) it returns explicit, which must be an existing file.
// Otherwise it returns the first existing one of ./pagewire.yml,
// ./litefs.yml, /etc/pagewire.yml and /etc/litefs.yml, or "" and a nil error
// when there is none: the caller then runs Default().
func Find(explicit string) (path string, err error) {
	if explicit != "" {
		fi, err := os.Stat(explicit)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return "", fmt.Errorf("config file %s does not exist: check the -config path", explicit)
		case err != nil:
			return "", fmt.Errorf("config file: %w", err)
		case fi.IsDir():
			return "", fmt.Errorf("config file %s is a directory: give -config the path of a YAML file", explicit)
		}
		return explicit, nil
	}
	for _, p := range searchPaths {
		fi, err := os.Stat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			return "", fmt.Errorf("look for config file: %w", err)
		case fi.IsDir():
			continue
		}
		return p, nil
	}
	return "", nil
}

// Load reads the file at path and parses it with Parse; errors name path.
func Load(path string, getenv func(string) string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	return Parse(data, path, getenv)
}

// Parse builds a Config from the litefs.yml-compatible text data. It expands
// environment references (see Expand; getenv nil means os.Getenv), decodes
// the YAML over Default so that keys left out keep their defaults, fills in
// lease.hostname and lease.advertise-url, and calls Validate.
//
// Decoding is strict: an unknown key, a key set twice or a value of the
// wrong type is an error. Errors are *Error values naming filename, the line
// and the dotted key, e.g. `litefs.yml:7: unknown key "fuse.dirr": did you
// mean "fuse.dir"?`; several are joined with errors.Join. Lines are those of
// the expanded text, the file's own unless a variable's value holds a line
// break.
func Parse(data []byte, filename string, getenv func(string) string) (Config, error) {
	text, err := Expand(string(data), getenv)
	if err != nil {
		return Config{}, inFile(err, filename)
	}

	c := defaults()
	c.file = filename
	c.lines = map[string]int{}

	dec := yaml.NewDecoder(strings.NewReader(text))
	var doc yaml.Node
	switch err := dec.Decode(&doc); {
	case errors.Is(err, io.EOF):
		// Empty, or only comments: all defaults.
	case err != nil:
		return Config{}, yamlError(err, filename)
	default:
		var extra yaml.Node
		switch err := dec.Decode(&extra); {
		case errors.Is(err, io.EOF):
		case err != nil:
			return Config{}, yamlError(err, filename)
		default:
			return Config{}, &Error{File: filename, Line: extra.Line,
				Msg: `the file holds more than one YAML document: keep one, and remove the "---" before it`}
		}

		w := walker{file: filename, lines: c.lines, budget: maxNodes}
		w.document(&doc)
		if len(w.errs) > 0 {
			sort.SliceStable(w.errs, func(i, j int) bool { return w.errs[i].Line < w.errs[j].Line })
			return Config{}, join(w.errs)
		}

		c.Ignored = w.ignored
		// The walk found no unknown keys or bad types, and dropped the
		// ignored LiteFS keys; this strict decode is a second guard and
		// fills c.
		if len(w.ignored) > 0 {
			stripped, err := yaml.Marshal(&doc)
			if err != nil {
				return Config{}, yamlError(err, filename)
			}
			text = string(stripped)
		}
		dec := yaml.NewDecoder(strings.NewReader(text))
		dec.KnownFields(true)
		if err := dec.Decode(&c); err != nil {
			return Config{}, yamlError(err, filename)
		}
	}

	c.fillHost()
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// inFile sets the file name on the *Error values in err.
func inFile(err error, filename string) error {
	var e *Error
	if errors.As(err, &e) {
		e.File = filename
	}
	return err
}

// yamlLine matches the "yaml: line N: " or "line N: " prefix of yaml.v3's
// messages.
var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// yamlError turns an error from the yaml decoder into *Error values.
func yamlError(err error, filename string) error {
	msgs := []string{err.Error()}
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	}
	errs := make([]*Error, 0, len(msgs))
	for _, m := range msgs {
		e := &Error{File: filename, Msg: strings.TrimPrefix(m, "yaml: ")}
		if sub := yamlLine.FindStringSubmatch(m); sub != nil {
			e.Line, _ = strconv.Atoi(sub[1])
			e.Msg = sub[2]
		}
		e.Msg = "invalid YAML: " + e.Msg
		errs = append(errs, e)
	}
	return join(errs)
}

// join returns the one error in errs, or all of them joined.
func join(errs []*Error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	all := make([]error, len(errs))
	for i, e := range errs {
		all[i] = e
	}
	return errors.Join(all...)
}

// maxNodes bounds the nodes a walk visits, so that aliases (a "billion
// laughs" file, or an alias inside its own anchor) cannot make it run long.
const maxNodes = 100_000

// walker checks a YAML tree against Config's types before it is decoded, so
// that every error can name the dotted key and its line, and records the
// line of each key for Validate.
type walker struct {
	file    string
	lines   map[string]int // dotted key path -> line
	errs    []*Error
	ignored []Ignored
	budget  int                 // nodes left to visit
	active  map[*yaml.Node]bool // mappings and lists being walked, to catch an alias inside its own anchor
}

// enter marks the container n as being walked; it returns false, after
// recording an error, if n is already being walked: an alias inside its own
// anchor. The caller calls leave(n) when enter returned true.
func (w *walker) enter(n *yaml.Node, key string) bool {
	if w.active[n] {
		w.fail(n.Line, key, "%s uses an alias inside its own anchor &%s: remove the alias", describe(key), n.Anchor)
		return false
	}
	if w.active == nil {
		w.active = map[*yaml.Node]bool{}
	}
	w.active[n] = true
	return true
}

func (w *walker) leave(n *yaml.Node) { delete(w.active, n) }

// fail records a problem at line.
func (w *walker) fail(line int, key, format string, args ...any) {
	w.errs = append(w.errs, &Error{File: w.file, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)})
}

var (
	configType   = reflect.TypeFor[Config]()
	execListType = reflect.TypeFor[ExecList]()
	execCmdType  = reflect.TypeFor[ExecCmd]()
	unmarshaler  = reflect.TypeFor[yaml.Unmarshaler]()
)

// document walks the root of a file.
func (w *walker) document(doc *yaml.Node) {
	root := doc
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return
		}
		root = doc.Content[0]
	}
	root, ok := w.deref(root, "")
	if !ok || isNull(root) {
		return
	}
	if root.Kind != yaml.MappingNode {
		w.fail(root.Line, "", "the file must be a mapping of keys such as fuse: and data:, not a %s", kindName(root.Kind))
		return
	}
	w.mapping(root, configType, "", false)
}

// deref follows aliases and spends budget; ok is false once the budget is
// spent, after recording an error.
func (w *walker) deref(n *yaml.Node, key string) (_ *yaml.Node, ok bool) {
	for {
		if w.budget <= 0 {
			return nil, false
		}
		w.budget--
		if w.budget == 0 {
			w.fail(n.Line, key, "the file expands to too many values (more than %d): use fewer aliases", maxNodes)
			return nil, false
		}
		if n.Kind != yaml.AliasNode {
			return n, true
		}
		if n.Alias == nil {
			w.fail(n.Line, key, "alias %q is not defined: define the anchor &%s first", n.Value, n.Value)
			return nil, false
		}
		n = n.Alias
	}
}

// value checks n as the value of key, of type t.
func (w *walker) value(n *yaml.Node, t reflect.Type, key string) {
	n, ok := w.deref(n, key)
	if !ok || isNull(n) {
		return // null keeps the default, as yaml.v3 decodes it
	}
	switch {
	case t == execListType:
		w.exec(n, key)
	case reflect.PointerTo(t).Implements(unmarshaler):
		w.decode(n, t, key)
	case t.Kind() == reflect.Struct:
		w.mapping(n, t, key, false)
	case t.Kind() == reflect.Slice:
		w.list(n, t.Elem(), key)
	default:
		w.decode(n, t, key)
	}
}

// mapping checks n as a mapping for struct type t. merged is set for the
// mapping of a "<<" merge key, whose keys the mapping's own keys override.
func (w *walker) mapping(n *yaml.Node, t reflect.Type, key string, merged bool) {
	if n.Kind != yaml.MappingNode {
		w.fail(n.Line, key, "%s must be a mapping of keys (%s), not a %s", key, keyList(t), kindName(n.Kind))
		return
	}
	if !w.enter(n, key) {
		return
	}
	defer w.leave(n)

	// A LiteFS Cloud backup's keys are ignored (see liteFSCloudKeys).
	cloud := key == "backup" && scalarValue(n, "type") == BackupTypeLiteFSCloud

	// Walk the keys: each must be a plain name, set once.
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, ok := w.deref(n.Content[i], key)
		if !ok {
			return
		}
		v := n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			w.fail(k.Line, key, "a key in %s is a %s: keys must be plain names", describe(key), kindName(k.Kind))
			continue
		}
		if isMerge(k) {
			w.merge(v, t, key)
			continue
		}

		// A key may be set only once.
		full := joinKey(key, k.Value)
		if prev, dup := seen[k.Value]; dup {
			w.fail(k.Line, full, "%s is set twice, on lines %d and %d: keep one", full, prev, k.Line)
			continue
		}
		seen[k.Value] = k.Line

		// Keys only LiteFS uses are dropped; unknown ones fail.
		f, ok := fieldByKey(t, k.Value)
		switch {
		case cloud && k.Value == "type":
			// Kept, so that Validate knows the backup is LiteFS Cloud's.
			w.ignored = append(w.ignored, Ignored{Key: full, Line: k.Line})
		case (!ok && liteFSOnly[full]) || (cloud && liteFSCloudKeys[k.Value]):
			// A LiteFS key pagewire has no use for: keep the user's file
			// working, say so, and drop it before decoding.
			w.ignored = append(w.ignored, Ignored{Key: full, Line: k.Line})
			n.Content = append(n.Content[:i], n.Content[i+2:]...)
			i -= 2
			continue
		case !ok && key == "backup" && liteFSCloudKeys[k.Value]:
			w.fail(k.Line, full, `%s is a LiteFS Cloud key, which means something only with backup.type %q, and LiteFS Cloud closed in October 2024: remove it`,
				full, BackupTypeLiteFSCloud)
			continue
		case !ok:
			w.unknown(k.Line, full, t, key, k.Value)
			continue
		}

		// Record the key's line (a merge keeps an earlier one), then check its value.
		if _, set := w.lines[full]; !set || !merged {
			w.lines[full] = k.Line
		}
		w.value(v, f.Type, full)
	}
}

// merge checks the value of a "<<" key: a mapping or a list of mappings.
func (w *walker) merge(v *yaml.Node, t reflect.Type, key string) {
	v, ok := w.deref(v, key)
	if !ok {
		return
	}
	if v.Kind != yaml.SequenceNode {
		w.mapping(v, t, key, true)
		return
	}
	for _, item := range v.Content {
		item, ok := w.deref(item, key)
		if !ok {
			return
		}
		w.mapping(item, t, key, true)
	}
}

// list checks n as a sequence of elem values.
func (w *walker) list(n *yaml.Node, elem reflect.Type, key string) {
	if n.Kind != yaml.SequenceNode {
		w.fail(n.Line, key, "%s must be a list, e.g. [\"a\", \"b\"], not a %s", key, kindName(n.Kind))
		return
	}
	if !w.enter(n, key) {
		return
	}
	defer w.leave(n)
	for i, item := range n.Content {
		ik := fmt.Sprintf("%s[%d]", key, i)
		w.lines[ik] = item.Line
		w.value(item, elem, ik)
	}
}

// exec checks the exec key: a command string or a list of commands.
func (w *walker) exec(n *yaml.Node, key string) {
	switch n.Kind {
	case yaml.ScalarNode:
		return
	case yaml.SequenceNode:
	default:
		w.fail(n.Line, key, "%s must be a command string or a list of {cmd, if-candidate}, not a %s", key, kindName(n.Kind))
		return
	}
	if !w.enter(n, key) {
		return
	}
	defer w.leave(n)
	for i, item := range n.Content {
		ik := fmt.Sprintf("%s[%d]", key, i)
		w.lines[ik] = item.Line
		item, ok := w.deref(item, ik)
		if !ok {
			return
		}
		switch item.Kind {
		case yaml.ScalarNode:
		case yaml.MappingNode:
			w.mapping(item, execCmdType, ik, false)
		default:
			w.fail(item.Line, ik, "%s must be a command string or a mapping with cmd and if-candidate, not a %s", ik, kindName(item.Kind))
		}
	}
}

// decode checks that n decodes into a value of type t.
func (w *walker) decode(n *yaml.Node, t reflect.Type, key string) {
	isUnmarshaler := reflect.PointerTo(t).Implements(unmarshaler)
	if n.Kind != yaml.ScalarNode && !isUnmarshaler {
		w.fail(n.Line, key, "%s must be a single value, not a %s", key, kindName(n.Kind))
		return
	}
	err := n.Decode(reflect.New(t).Interface())
	if err == nil {
		return
	}
	switch {
	case isUnmarshaler:
		w.fail(n.Line, key, "%s %s", key, err)
	case t.Kind() == reflect.Bool:
		w.fail(n.Line, key, "%s %q is not a boolean: use true or false", key, n.Value)
	case t.Kind() == reflect.Int:
		w.fail(n.Line, key, "%s %q is not a whole number: use e.g. 0 or 2", key, n.Value)
	default:
		w.fail(n.Line, key, "%s %q is not valid: %v", key, n.Value, err)
	}
}

// liteFSOnly holds the LiteFS keys that pagewire has no use for. A file
// that sets them still loads; Config.Ignored lists them so that the node can
// say so.
var liteFSOnly = map[string]bool{
	"strict-verify":                   true,
	"tracing":                         true,
	"data.retention-monitor-interval": true,
	"http.snapshot-timeout":           true,
	"proxy.debug":                     true,
	"lease.reconnect-delay":           true,
	"lease.databases":                 true,
	"log.timestamp":                   true,
}

// liteFSCloudKeys are the keys of the backup section that LiteFS's
// "litefs-cloud" backups use. With that type they are all listed in
// Config.Ignored: backup.type is kept, so that Validate and Kind know the
// backup is LiteFS Cloud's, and the others are dropped. cluster and
// auth-token mean nothing with any other type: setting them then is an
// error.
var liteFSCloudKeys = map[string]bool{"type": true, "path": true, "url": true, "cluster": true, "auth-token": true}

// scalarValue returns the value of the plain key name in the mapping n, or
// "" if n does not set it to a single value. Merge keys are not followed.
func scalarValue(n *yaml.Node, name string) string {
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if v.Kind == yaml.AliasNode && v.Alias != nil {
			v = v.Alias
		}
		if k.Kind == yaml.ScalarNode && k.Value == name && v.Kind == yaml.ScalarNode {
			return v.Value
		}
	}
	return ""
}

// unknown records an unknown key, saying what to do about it.
func (w *walker) unknown(line int, full string, t reflect.Type, parent, name string) {
	keys := yamlKeys(t)
	switch near := closest(name, keys); {
	case near != "":
		w.fail(line, full, "unknown key %q: did you mean %q?", full, joinKey(parent, near))
	case len(keys) == 0:
		w.fail(line, full, "unknown key %q: %s takes no keys yet: remove it", full, describe(parent))
	default:
		w.fail(line, full, "unknown key %q: %s takes %s", full, describe(parent), keyList(t))
	}
}

// closest returns the key in keys nearest to name by edit distance, if it is
// near enough to be a likely typo, or "".
func closest(name string, keys []string) string {
	best, bestDist := "", 3 // at most two edits
	if len(name) <= 3 {
		bestDist = 2
	}
	for _, k := range keys {
		if d := editDistance(name, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
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

// fieldByKey returns the field of struct type t whose yaml name is key.
func fieldByKey(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if f.IsExported() && yamlName(f) == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// yamlKeys lists the yaml names of struct type t's fields.
func yamlKeys(t reflect.Type) []string {
	var keys []string
	for i := range t.NumField() {
		if f := t.Field(i); f.IsExported() && yamlName(f) != "-" {
			keys = append(keys, yamlName(f))
		}
	}
	return keys
}

// keyList formats yamlKeys(t) for a message.
func keyList(t reflect.Type) string {
	keys := yamlKeys(t)
	if len(keys) == 0 {
		return "no keys"
	}
	return strings.Join(keys, ", ")
}

func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "" {
		return strings.ToLower(f.Name)
	}
	return name
}

// describe names a mapping in a message.
func describe(key string) string {
	if key == "" {
		return "the top level"
	}
	return key
}

func joinKey(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

// isMerge reports whether k is the "<<" merge key.
func isMerge(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.Value == "<<" && (k.Tag == "" || k.Tag == "!" || k.ShortTag() == "!!merge")
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// kindName names a node kind for a message.
func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	case yaml.ScalarNode:
		return "single value"
	case yaml.AliasNode:
		return "alias"
	case yaml.DocumentNode:
		return "document"
	default:
		return "empty value"
	}
}
