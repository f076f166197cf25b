package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/dnsfence/dnsfence/blocklist"
	"go.yaml.in/yaml/v3"
)

// syntaxHints turn the YAML parser's problems into what to change, each
// with an example of a right line. The first hint whose problem starts the
// parser's message is used.
var syntaxHints = []struct{ problem, hint string }{
	{"found a tab character", tabHint},
	{"did not find expected ',' or ']'",
		`a list opened with [ is not closed with ] (or a value in it needs quotes); e.g. ` + listHintExample},
	{"did not find expected ',' or '}'",
		`a mapping opened with { is not closed with } (or a value in it needs quotes); e.g. ` + mapHintExample},
	{"mapping values are not allowed in this context",
		`a second "key:" on one line; put each key on its own line, or quote a value that holds ": ", e.g. name: "gov: phones"`},
	{"mapping keys are not allowed in this context",
		`a "?" key where a value belongs; quote the value, e.g. name: "?gov"`},
	{"block sequence entries are not allowed in this context",
		`a list item ("- ") on the line of its key; start the items on the next lines, indented, or write the list as [a, b], e.g. upstreams: ["9.9.9.9:53"]`},
	{"did not find expected key",
		`this line is not indented like the keys around it; keys of one mapping start in the same column, indented with spaces`},
	{"did not find expected '-' indicator",
		`a key among list items; every item of a list starts with "- " in the same column`},
	{"could not find expected ':'",
		`a key without a colon, or a quoted value that never ends; write key: value`},
	{"did not find expected node content",
		`a value is missing (an empty item in a list, or a value starting with a reserved character); write the value, in quotes if it starts with one of [ ] { } , & * ! | > % @, or with : inside [ ] (an IPv6 address: ["::1/128"])`},
	{"found unexpected end of stream",
		`a quoted value is not closed; end it with the quote it starts with, e.g. name: "gov"`},
	{"found unknown escape character",
		`an unknown escape after \ in a double-quoted value; use single quotes for text with backslashes, e.g. path: 'C:\lists\tiktok.txt'`},
	{"found invalid Unicode character escape code",
		`an invalid \u or \x escape in a double-quoted value; use single quotes for text with backslashes`},
	{"did not find expected comment or line break",
		`text after a value that ended; put the whole value inside the quotes, and # comments after a space`},
	{"did not find expected alphabetic or numeric character",
		`& and * start YAML anchors and aliases; quote a value that starts with them, e.g. name: "*gov"`},
	{"found character that cannot start any token",
		"a value starts with a character YAML reserves (@ or `); put the value in quotes, e.g. name: \"@gov\""},
	{"unknown anchor",
		`an alias (*name) with no anchor (&name) above it; define the anchor first or quote the value, e.g. name: "*gov"`},
	{"found incompatible YAML document",
		`a %YAML directive of a version other than 1.1, which the YAML reader refuses (%YAML 1.2 included); delete the %YAML line: the file is read the same without it`},
	{"did not find expected <document start>",
		`text after the end of the configuration; every top-level key starts in column 1 as key: value`},
	{"found unexpected document indicator",
		`a line starting with --- or ... inside a value; quote the value`},
	{"document contains excessive aliasing",
		`anchors and aliases (& and *) expand to too much; write the values out`},
	{"control characters are not allowed", "an invisible control character (often pasted in with the text); delete it and type the line again"},
	{"invalid leading UTF-8 octet", notTextHint},
	{"invalid trailing UTF-8 octet", notTextHint},
	{"incomplete UTF-8 octet sequence", notTextHint},
	{"invalid length of a UTF-8 sequence", notTextHint},
	{"incomplete UTF-16", notTextHint},
	{"invalid Unicode character", notTextHint},
}

const (
	listHintExample = `upstreams: ["9.9.9.9:53", "149.112.112.112:53"]`
	mapHintExample  = `log: {level: info, format: json}`
	tabHint         = "a tab character; YAML indents with spaces only: replace the tab with spaces"
	notTextHint     = "the file is not UTF-8 text; save it as UTF-8 (plain text)"
)

// quoteProblems are the parser's words for what a quote left open causes.
var quoteProblems = []string{
	"did not find expected key", "could not find expected ':'", "found unexpected end of stream",
	"did not find expected ',' or", "did not find expected comment or line break",
	"mapping values are not allowed in this context", "did not find expected '-' indicator",
	"did not find expected <document start>",
}

var (
	textAfterQuote = regexp.MustCompile(`(?:^|[:\-][ \t])[ \t]*(?:"(?:[^"\\]|\\.)*"|'(?:[^']|'')*')[ \t]*[^ \t#,\]}]`)
	keyColon       = regexp.MustCompile(`[^ \t]:(?:[ \t]|$)`)
	quoteStart     = regexp.MustCompile(`(?:^|[:\-\[,{])[ \t]*'`)
	yamlLine       = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
	yamlUnknown    = regexp.MustCompile(`^field (\S+) not found in type \S+$`)
	keyOnLine      = regexp.MustCompile(`^[ \t]*(?:-[ \t]+)*([A-Za-z0-9_-]+)[ \t]*:(?:[ \t]|$)`)
	leadingSpace   = regexp.MustCompile(`^[ \t-]*`)
)

// yamlError rewrites a YAML syntax error as "file:line: key: what to
// change". The parser's own line is often one off or missing, so the line
// is found again: the first line at which the file, read up to and
// including it, fails the same way.
func yamlError(file string, data []byte, err error) error {
	problem := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if g := yamlLine.FindStringSubmatch(problem); g != nil {
		line, _ = strconv.Atoi(g[1])
		problem = g[2]
	}
	found := syntaxLine(data, problem, max(line, 1))
	if found == 0 && line == 0 && strings.HasPrefix(problem, "document contains excessive aliasing") {
		// The decoder says it with no line, and the file reads as nodes
		// without a fault: name the first alias.
		found = firstAlias(data)
	}
	text := lineText(data, found)
	hint := "YAML syntax: " + problem
	for _, h := range syntaxHints {
		if strings.HasPrefix(problem, h.problem) {
			hint = h.hint
			break
		}
	}
	switch q := unclosedQuote(data, found); {
	case found == 0:
	case strings.Contains(leadingSpace.FindString(text), "\t") && !strings.HasPrefix(problem, "did not find expected ',' or") ||
		strings.HasPrefix(problem, "found character that cannot start any token") && strings.Contains(text, "\t"):
		// A tab inside [ ] or { } is a space to YAML: a list or mapping
		// left open is said as such, not as the tab on its next line.
		hint = tabHint
	case q > 0 && slices.ContainsFunc(quoteProblems, func(p string) bool { return strings.HasPrefix(problem, p) }):
		found, text = q, lineText(data, q)
		hint = `a quoted value is not closed; end it with the quote it starts with, e.g. name: "gov"`
	case textAfterQuote.MatchString(text):
		hint = `text after a quoted value; put the whole value inside the quotes, e.g. name: "gov phones"`
	case problem == "mapping values are not allowed in this context" && len(keyColon.FindAllString(text, -1)) == 1:
		hint = "this key is indented more than the key above it, so YAML reads it as part of that value; start the keys of one mapping in the same column"
	}
	if hint == notTextHint {
		// The parser's line for a byte that is not UTF-8 is where the
		// bytes after it stop fitting, often the next line (a Latin-1
		// "é" before a line end): name the byte's own line, and it.
		if off := blocklist.InvalidUTF8(data); off >= 0 {
			found = 1 + bytes.Count(data[:off], []byte{'\n'})
			text = lineText(data, found)
			hint = fmt.Sprintf("the file is not UTF-8 text (octet %02X); save it as UTF-8 (plain text)", data[off])
		}
	}
	ce := &Error{File: file, Line: found, Err: errors.New(hint)}
	if found == 0 {
		ce.Line = line
	}
	if g := keyOnLine.FindStringSubmatch(strings.ReplaceAll(text, "\t", " ")); g != nil && found > 0 {
		ce.Key = g[1]
		// The example of the key on the line, if it is a list or a mapping.
		for k, ex := range configExamples {
			switch {
			case k != ce.Key && !strings.HasSuffix(k, "."+ce.Key):
			case strings.HasPrefix(ex, "["):
				hint = strings.Replace(hint, listHintExample, ce.Key+": "+ex, 1)
			case strings.HasPrefix(ex, "{"):
				hint = strings.Replace(hint, mapHintExample, ce.Key+": "+ex, 1)
			}
		}
		ce.Err = errors.New(hint)
	}
	return ce
}

// syntaxLine is the first line, from line from on, at which data read up to
// and including that line fails with problem; 0 if none does within a
// bounded amount of parsing. The last line is tried when from is past it:
// the parser names the line after a final line break for a quote opened
// on the first line and never closed.
func syntaxLine(data []byte, problem string, from int) int {
	budget := 1 << 20 // bytes parsed in all
	end := 0
	for line := 1; end < len(data); line++ {
		if nl := bytes.IndexByte(data[end:], '\n'); nl >= 0 {
			end += nl + 1
		} else {
			end = len(data)
		}
		if line < from && end < len(data) {
			continue
		}
		if budget -= end; budget < 0 {
			return 0
		}
		if err := decodeAll(data[:end]); err != nil {
			p := strings.TrimPrefix(err.Error(), "yaml: ")
			if g := yamlLine.FindStringSubmatch(p); g != nil {
				p = g[2]
			}
			if p == problem {
				return line
			}
		}
	}
	return 0
}

// firstAlias is the line of the first alias (*name) of data's first
// document, 0 if it has none or cannot be read.
func firstAlias(data []byte) int {
	var root yaml.Node
	if yaml.NewDecoder(bytes.NewReader(data)).Decode(&root) != nil {
		return 0
	}
	first := 0
	var visit func(n *yaml.Node)
	visit = func(n *yaml.Node) {
		if n.Kind == yaml.AliasNode && (first == 0 || n.Line < first) {
			first = n.Line
		}
		for _, c := range n.Content {
			visit(c)
		}
	}
	visit(&root)
	return first
}

// decodeAll decodes every YAML document of data, as parse reads the
// first and looks into the one after it: an error only the second
// raises ("" x, a value and text after it) is found again too.
func decodeAll(data []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		if err := dec.Decode(&n); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
	}
}

// unclosedQuote is the first line up to line last that opens a quoted
// value and does not close it, or 0.
func unclosedQuote(data []byte, last int) int {
	for i, line := range blocklist.Lines(string(data)) {
		if i > last {
			break
		}
		text := strings.TrimSpace(line)
		if strings.HasPrefix(text, "#") {
			continue
		}
		double := strings.Count(text, `"`) - strings.Count(text, `\"`)
		single := strings.Count(text, "'") - 2*strings.Count(text, "''")
		if double%2 == 1 || single%2 == 1 && quoteStart.MatchString(text) {
			return i
		}
	}
	return 0
}

// lineText is line n of data (1-based), or "" past its end; a CRLF line
// end or a byte-order mark is not part of it (blocklist.Lines).
func lineText(data []byte, n int) string {
	for i, line := range blocklist.Lines(string(data)) {
		if i == n {
			return line
		}
	}
	return ""
}

// decoderErrors reports the decoder's own type errors, in case the shape
// check let one through (FuzzConfig checks that it never does).
func (e *configErrors) decoderErrors(te *yaml.TypeError) {
	for _, m := range te.Errors {
		g := yamlLine.FindStringSubmatch(m)
		if g == nil {
			e.errs = append(e.errs, &Error{File: e.file, Err: errors.New(m)})
			continue
		}
		line, _ := strconv.Atoi(g[1])
		what, key := g[2], keyAtLine(e.root, line)
		if u := yamlUnknown.FindStringSubmatch(what); u != nil {
			what, key = fmt.Sprintf("unknown key %q", u[1]), ""
		}
		e.errs = append(e.errs, &Error{File: e.file, Line: line, Key: key, Err: errors.New(what)})
	}
}
