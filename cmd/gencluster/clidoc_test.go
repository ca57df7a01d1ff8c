package main

import (
	"encoding"
	"fmt"
	"io"
	"maps"
	"os"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/gencluster/gencluster/training"
)

// cliDocPath is the CLI reference TestCLIDoc checks.
const cliDocPath = "../../docs/CLI.md"

// cliJSONTypes is what each command with --json prints: the Go value its
// output marshals. A new --json command needs its line here.
var cliJSONTypes = map[string]reflect.Type{
	"gencluster eval":              reflect.TypeFor[evalResult](),
	"gencluster version":           reflect.TypeFor[versionJSON](),
	"gencluster status":            reflect.TypeFor[statusJSON](),
	"gencluster checkpoint list":   reflect.TypeFor[[]checkpointListJSON](),
	"gencluster checkpoint verify": reflect.TypeFor[[]verifyJSON](),
	"gencluster bench compute":     reflect.TypeFor[training.ComputeBench](),
	"gencluster bench peak":        reflect.TypeFor[peakJSON](),
	"gencluster bench allreduce":   reflect.TypeFor[allreduceBench](),
	"gencluster bench cluster":     reflect.TypeFor[clusterBench](),
}

// TestCLIDoc checks docs/CLI.md against the command tree the binary runs:
// every command has a section with its synopsis and exit codes, every
// flag is documented with its type and default (global ones under "Global
// flags"), every --json field is documented, and nothing documented is
// missing from the binary.
func TestCLIDoc(t *testing.T) {
	doc, err := os.ReadFile(cliDocPath)
	if err != nil {
		t.Fatal(err)
	}
	problems := checkCLIDoc(cliCommandTree(), string(doc))
	if len(problems) > 0 {
		t.Errorf("docs/CLI.md does not match the gencluster command tree; fix the doc (or the command):\n  %s",
			strings.Join(problems, "\n  "))
	}
}

// TestCLIDocCatchesDrift edits the doc in memory the ways it goes stale
// and checks that each is reported.
func TestCLIDocCatchesDrift(t *testing.T) {
	b, err := os.ReadFile(cliDocPath)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	edits := []struct {
		name, old, new, want string
	}{
		{"flag row removed", "| `--every` | duration | `2s` | interval of `--watch` |\n", "", "`gencluster status` has flag --every"},
		{"fake flag added", "| `--split` |", "| `--bogus-flag` | int | `0` | made up |\n| `--split` |", "documents --bogus-flag"},
		{"wrong default", "| `--batch` | int | `500` |", "| `--batch` | int | `501` |", `--batch defaults to "500"`},
		{"wrong type", "| `--split` | string |", "| `--split` | int |", "--split is of type string"},
		{"global flag removed", "| `--log-format` | string | `text` |", "| `--log-formats` | string | `text` |", "--log-format"},
		{"json field removed", "| `bits_per_dim` | number |", "| `bits_per_dims` | number |", "field bits_per_dim"},
		{"fake command", "### `gencluster help`", "### `gencluster frobnicate`\n\n### `gencluster help`", "gencluster frobnicate"},
	}
	root := cliCommandTree()
	for _, e := range edits {
		if !strings.Contains(doc, e.old) {
			t.Errorf("%s: docs/CLI.md no longer contains %q; update this test's edit", e.name, e.old)
			continue
		}
		problems := checkCLIDoc(root, strings.Replace(doc, e.old, e.new, 1))
		if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, e.want) }) {
			t.Errorf("%s: no problem mentions %q; got:\n  %s", e.name, e.want, strings.Join(problems, "\n  "))
		}
	}
}

// cliCommandTree is the command tree as run() executes it: the root with
// cobra's help and completion commands and every command's --help flag.
func cliCommandTree() *cobra.Command {
	root := (&app{stdout: io.Discard, stderr: io.Discard}).rootCommand()
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		c.InitDefaultHelpFlag()
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
	return root
}

// docSection is one part of the doc: a command's (heading `gencluster
// ...`), the global flags', or another.
type docSection struct {
	heading string
	line    int      // of the heading
	cmds    []string // command paths it documents
	global  bool     // the "Global flags" section
	text    string
	flags   map[string]docRow // by flag name without dashes
	fields  map[string]docRow // --json fields by path
	jsonAt  int               // line of the first field table (0: none)
}

type docRow struct {
	line  int
	cells []string
}

var (
	headingRE   = regexp.MustCompile("^(#{1,6})\\s+(.*?)\\s*$")
	cmdHeadRE   = regexp.MustCompile("^`(gencluster(?: [^`]+)?)`$")
	flagNameRE  = regexp.MustCompile("`(?:-[a-z], )?--([a-z0-9][a-z0-9-]*)`")
	codeSpanRE  = regexp.MustCompile("`([^`]*)`")
	separatorRE = regexp.MustCompile(`^\|(\s*:?-+:?\s*\|)+\s*$`)
)

// parseCLIDoc splits the doc into sections and reads their flag and field
// tables. Problems with the doc's own shape are returned too.
func parseCLIDoc(doc string) ([]*docSection, []string) {
	var sections []*docSection
	var problems []string
	cur := &docSection{heading: "(top)", line: 1}
	sections = append(sections, cur)
	inCode, tableKind := false, ""
	for i, line := range strings.Split(doc, "\n") {
		n := i + 1
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			inCode = !inCode
		}
		if !inCode {
			if m := headingRE.FindStringSubmatch(line); m != nil {
				cur = &docSection{heading: m[2], line: n, flags: map[string]docRow{}, fields: map[string]docRow{}}
				if c := cmdHeadRE.FindStringSubmatch(m[2]); c != nil {
					cur.cmds = expandAlternatives(c[1])
				}
				cur.global = strings.EqualFold(m[2], "Global flags")
				sections = append(sections, cur)
				tableKind = ""
				continue
			}
		}
		cur.text += line + "\n"
		if inCode || !strings.HasPrefix(line, "|") {
			tableKind = ""
			continue
		}
		cells := tableCells(line)
		switch {
		case tableKind == "": // a header row
			tableKind = strings.ToLower(cells[0])
			if tableKind == "field" && cur.jsonAt == 0 {
				cur.jsonAt = n
			}
			continue
		case separatorRE.MatchString(line):
			continue
		}
		where := fmt.Sprintf("docs/CLI.md:%d", n)
		switch tableKind {
		case "flag":
			if len(cur.cmds) == 0 && !cur.global {
				problems = append(problems, fmt.Sprintf("%s: a flag row under %q, which is neither a command's section nor Global flags", where, cur.heading))
				continue
			}
			m := flagNameRE.FindStringSubmatch(cells[0])
			if m == nil || len(cells) != 4 {
				problems = append(problems, fmt.Sprintf("%s: a flag row must be | `--name` | type | `default` | meaning |, got %q", where, line))
				continue
			}
			if old, dup := cur.flags[m[1]]; dup {
				problems = append(problems, fmt.Sprintf("%s: --%s is documented twice in %q (also line %d)", where, m[1], cur.heading, old.line))
			}
			cur.flags[m[1]] = docRow{n, cells}
		case "field":
			m := codeSpanRE.FindStringSubmatch(cells[0])
			if m == nil || len(cells) != 3 {
				problems = append(problems, fmt.Sprintf("%s: a --json field row must be | `name` | type | meaning |, got %q", where, line))
				continue
			}
			if old, dup := cur.fields[m[1]]; dup {
				problems = append(problems, fmt.Sprintf("%s: field %s is documented twice in %q (also line %d)", where, m[1], cur.heading, old.line))
			}
			cur.fields[m[1]] = docRow{n, cells}
		}
	}
	return sections, problems
}

// expandAlternatives turns "gencluster completion bash|zsh" into one path
// per alternative of the last word.
func expandAlternatives(path string) []string {
	words := strings.Fields(path)
	last := words[len(words)-1]
	if !strings.Contains(last, "|") {
		return []string{strings.Join(words, " ")}
	}
	var out []string
	for _, alt := range strings.Split(last, "|") {
		out = append(out, strings.Join(append(slices.Clone(words[:len(words)-1]), alt), " "))
	}
	return out
}

// tableCells splits a Markdown table row at its unescaped pipes.
func tableCells(line string) []string {
	line = strings.TrimSpace(line)
	line = strings.TrimPrefix(line, "|")
	line = strings.TrimSuffix(line, "|")
	var cells []string
	var cell strings.Builder
	for i := 0; i < len(line); i++ {
		switch {
		case line[i] == '\\' && i+1 < len(line) && line[i+1] == '|':
			cell.WriteByte('|')
			i++
		case line[i] == '|':
			cells = append(cells, strings.TrimSpace(cell.String()))
			cell.Reset()
		default:
			cell.WriteByte(line[i])
		}
	}
	return append(cells, strings.TrimSpace(cell.String()))
}

// checkCLIDoc lists every difference between doc and the command tree
// under root, each saying what to add or remove where.
func checkCLIDoc(root *cobra.Command, doc string) []string {
	sections, problems := parseCLIDoc(doc)
	byCmd := map[string]*docSection{}
	var global *docSection
	for _, s := range sections {
		if s.global {
			if global != nil {
				problems = append(problems, fmt.Sprintf("docs/CLI.md:%d: a second Global flags section (first at line %d)", s.line, global.line))
			}
			global = s
		}
		for _, p := range s.cmds {
			if old, dup := byCmd[p]; dup {
				problems = append(problems, fmt.Sprintf("docs/CLI.md:%d: a second section for `%s` (first at line %d)", s.line, p, old.line))
			}
			byCmd[p] = s
		}
	}
	if global == nil {
		problems = append(problems, "docs/CLI.md has no \"## Global flags\" section (the flags every command takes)")
		global = &docSection{flags: map[string]docRow{}, fields: map[string]docRow{}}
	}

	// Every visible command, and the sections that name none.
	cmds := map[string]*cobra.Command{}
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Deprecated != "" {
			return
		}
		cmds[c.CommandPath()] = c
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
	for _, s := range sections {
		for _, p := range s.cmds {
			if cmds[p] == nil {
				problems = append(problems, fmt.Sprintf("docs/CLI.md:%d: a section for `%s`, which is not a gencluster command (removed, renamed or hidden?): remove it", s.line, p))
			}
		}
	}

	// The global flags: root's persistent flags and --help.
	globals := map[string]*pflag.Flag{}
	root.PersistentFlags().VisitAll(func(f *pflag.Flag) { globals[f.Name] = f })
	if h := root.Flags().Lookup("help"); h != nil {
		globals["help"] = h
	}
	for _, name := range slices.Sorted(maps.Keys(globals)) {
		problems = append(problems, checkFlagRow(global, "the Global flags section", globals[name])...)
	}
	for _, name := range slices.Sorted(maps.Keys(global.flags)) {
		if globals[name] == nil {
			problems = append(problems, fmt.Sprintf("docs/CLI.md:%d: Global flags documents --%s, which is not a global flag of gencluster: remove it or move it to its command's section",
				global.flags[name].line, name))
		}
	}

	for _, path := range slices.Sorted(maps.Keys(cmds)) {
		c := cmds[path]
		c.InheritedFlags().VisitAll(func(f *pflag.Flag) {
			if globals[f.Name] != nil || f.Hidden {
				return
			}
			// A persistent flag of a parent other than the root (bench's
			// --cpuprofile) is documented once, in that parent's section.
			owner := c.Parent()
			for owner != nil && owner.PersistentFlags().Lookup(f.Name) == nil {
				owner = owner.Parent()
			}
			if owner == nil || owner == root {
				problems = append(problems, fmt.Sprintf("`%s` inherits --%s, which is not a root flag: this test expects every inherited flag to be global", path, f.Name))
			} else if s := byCmd[owner.CommandPath()]; s == nil || !hasRow(s.flags, f.Name) {
				problems = append(problems, fmt.Sprintf("`%s` inherits --%s from `%s`, whose section does not document it", path, f.Name, owner.CommandPath()))
			}
		})
		if c == root {
			continue // its section is Global flags; its exit codes are the Exit codes section
		}
		s := byCmd[path]
		if s == nil {
			problems = append(problems, fmt.Sprintf("docs/CLI.md has no section for `%s`: add a heading ### `%s` with its synopsis, flags table, exit codes%s",
				path, path, map[bool]string{true: " and --json fields", false: ""}[c.Flags().Lookup("json") != nil]))
			continue
		}
		where := fmt.Sprintf("docs/CLI.md:%d (`%s`)", s.line, path)
		if use := strings.TrimSuffix(c.UseLine(), " [flags]"); !strings.Contains(s.text, use) {
			problems = append(problems, fmt.Sprintf("%s: the synopsis %q (the command's usage line) is missing", where, use))
		}
		if !strings.Contains(s.text, "**Exit:**") {
			problems = append(problems, fmt.Sprintf("%s: no **Exit:** line saying its exit codes", where))
		}
		local := map[string]*pflag.Flag{}
		c.LocalFlags().VisitAll(func(f *pflag.Flag) {
			if f.Name != "help" && !f.Hidden {
				local[f.Name] = f
			}
		})
		for _, name := range slices.Sorted(maps.Keys(local)) {
			problems = append(problems, checkFlagRow(s, "`"+path+"`", local[name])...)
		}
		for _, name := range slices.Sorted(maps.Keys(s.flags)) {
			switch {
			case local[name] != nil:
			case globals[name] != nil:
				problems = append(problems, fmt.Sprintf("docs/CLI.md:%d: `%s` documents --%s, a global flag: it belongs only under Global flags", s.flags[name].line, path, name))
			default:
				problems = append(problems, fmt.Sprintf("docs/CLI.md:%d: `%s` documents --%s, which `%s` does not have: remove the row", s.flags[name].line, path, name, path))
			}
		}
		problems = append(problems, checkJSONFields(c, s)...)
	}
	for p := range cliJSONTypes {
		if c := cmds[p]; c == nil || c.Flags().Lookup("json") == nil {
			problems = append(problems, fmt.Sprintf("clidoc_test.go: cliJSONTypes names `%s`, which has no --json flag: remove it", p))
		}
	}
	return problems
}

// checkFlagRow checks that s documents f with its type and default.
func checkFlagRow(s *docSection, what string, f *pflag.Flag) []string {
	typ := flagType(f)
	row, ok := s.flags[f.Name]
	if !ok {
		return []string{fmt.Sprintf("%s has flag --%s (%s, default %q: %s), but docs/CLI.md does not document it there: add | `--%s` | %s | `%s` | meaning |",
			what, f.Name, typ, f.DefValue, f.Usage, f.Name, typ, docDefault(f.DefValue))}
	}
	var out []string
	if got := strings.Trim(row.cells[1], "` "); got != typ {
		out = append(out, fmt.Sprintf("docs/CLI.md:%d: %s: --%s is of type %s, the doc says %q", row.line, what, f.Name, typ, got))
	}
	got := ""
	if m := codeSpanRE.FindStringSubmatch(row.cells[2]); m != nil {
		got = m[1]
	}
	cores := f.DefValue == strconv.Itoa(runtime.NumCPU()) && strings.Contains(row.cells[2], "number of cores")
	if got != docDefault(f.DefValue) && !cores {
		out = append(out, fmt.Sprintf("docs/CLI.md:%d: %s: --%s defaults to %q, the doc says %q (write `%s` in the default column)",
			row.line, what, f.Name, f.DefValue, row.cells[2], docDefault(f.DefValue)))
	}
	return out
}

// flagType is the type word --help shows for f (bool for bool flags).
func flagType(f *pflag.Flag) string {
	if name, _ := pflag.UnquoteUsage(f); name != "" {
		return name
	}
	return f.Value.Type()
}

// docDefault is how the doc writes a default: as is, "" for empty.
func docDefault(v string) string {
	if v == "" {
		return `""`
	}
	return v
}

// checkJSONFields checks the --json field table of c's section against
// the JSON of c's output type.
func checkJSONFields(c *cobra.Command, s *docSection) []string {
	path := c.CommandPath()
	typ, known := cliJSONTypes[path]
	hasJSON := c.Flags().Lookup("json") != nil
	switch {
	case hasJSON && !known:
		return []string{fmt.Sprintf("`%s` has --json, but clidoc_test.go does not know what it prints: add its output type to cliJSONTypes", path)}
	case !hasJSON:
		if s.jsonAt != 0 {
			return []string{fmt.Sprintf("docs/CLI.md:%d: `%s` has a --json field table but no --json flag: remove the table", s.jsonAt, path)}
		}
		return nil
	case s.jsonAt == 0:
		return []string{fmt.Sprintf("docs/CLI.md:%d: `%s` has --json but its section has no field table (| field | type | meaning |) for the %s it prints", s.line, path, typ)}
	}
	want := jsonFields(typ)
	var out []string
	for _, name := range slices.Sorted(maps.Keys(want)) {
		f := want[name]
		row, ok := s.fields[name]
		if !ok {
			out = append(out, fmt.Sprintf("`%s --json` prints field %s (%s), which docs/CLI.md does not document: add | `%s` | %s | meaning | to its field table (line %d)",
				path, name, f.kind, name, f.kind, s.jsonAt))
			continue
		}
		if got := strings.Fields(row.cells[1]); len(got) == 0 || got[0] != f.kind {
			out = append(out, fmt.Sprintf("docs/CLI.md:%d: `%s --json` field %s is of JSON type %s, the doc says %q", row.line, path, name, f.kind, row.cells[1]))
		}
		if f.omitempty && !strings.Contains(row.cells[1]+row.cells[2], "omitted") {
			out = append(out, fmt.Sprintf("docs/CLI.md:%d: `%s --json` field %s is omitted when empty (omitempty): say so in its row", row.line, path, name))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(s.fields)) {
		if _, ok := want[name]; !ok {
			out = append(out, fmt.Sprintf("docs/CLI.md:%d: `%s --json` prints no field %s (%s has none): remove the row", s.fields[name].line, path, name, typ))
		}
	}
	return out
}

// jsonField is one field of a JSON output: its JSON type and whether
// encoding/json leaves it out when empty.
type jsonField struct {
	kind      string
	omitempty bool
}

// jsonFields lists the fields encoding/json writes for a value of type t
// (or, for a slice, for each element), by path: "a", "a.b" inside an
// object, "a[].b" inside an array of objects. A struct type met a second
// time is not listed again (the doc refers to its first listing).
func jsonFields(t reflect.Type) map[string]jsonField {
	out := map[string]jsonField{}
	t = derefType(t)
	if t.Kind() == reflect.Slice {
		t = derefType(t.Elem())
	}
	walkJSONFields(t, "", map[reflect.Type]bool{t: true}, out)
	return out
}

func walkJSONFields(t reflect.Type, prefix string, seen map[reflect.Type]bool, out map[string]jsonField) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" && derefType(f.Type).Kind() == reflect.Struct {
			walkJSONFields(derefType(f.Type), prefix, seen, out) // promoted fields
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		path := prefix + name
		out[path] = jsonField{kind: jsonKind(f.Type), omitempty: slices.Contains(strings.Split(opts, ","), "omitempty")}
		elem, sep := derefType(f.Type), "."
		if elem.Kind() == reflect.Slice {
			elem, sep = derefType(elem.Elem()), "[]."
		}
		if elem.Kind() == reflect.Struct && !isTextMarshaler(elem) && !seen[elem] {
			seen[elem] = true
			walkJSONFields(elem, path+sep, seen, out)
		}
	}
}

// jsonKind is the JSON type encoding/json writes for t.
func jsonKind(t reflect.Type) string {
	t = derefType(t)
	if isTextMarshaler(t) {
		return "string" // time.Time and the like
	}
	switch t.Kind() {
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.String:
		return "string"
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return "string" // base64
		}
		return "array"
	case reflect.Struct, reflect.Map:
		return "object"
	}
	return "any"
}

func derefType(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

func isTextMarshaler(t reflect.Type) bool {
	tm := reflect.TypeFor[encoding.TextMarshaler]()
	return t.Implements(tm) || reflect.PointerTo(t).Implements(tm)
}

func hasRow(rows map[string]docRow, name string) bool {
	_, ok := rows[name]
	return ok
}
