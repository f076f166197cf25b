package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// snippet is one small configuration of a message-kind table.
type snippet struct{ title, body string }

// readSnippets splits a table file at its "## title" lines.
func readSnippets(t *testing.T, path string) []snippet {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var out []snippet
	for _, line := range strings.SplitAfter(string(data), "\n") {
		if title, ok := strings.CutPrefix(line, "## "); ok {
			out = append(out, snippet{title: strings.TrimSpace(title)})
			continue
		}
		require.NotEmpty(t, out, "%s must start with a ## title line", path)
		out[len(out)-1].body += line
	}
	return out
}

// messagesTree is the folder the message tables' snippets are read in:
// the lists, ranges and certificates they name, and a list made a folder.
func messagesTree(t *testing.T) string {
	t.Helper()
	ca, caKey := testCert(t, time.Now().Add(time.Hour))
	return testnet.WriteTree(t, map[string]string{
		"lists/tiktok.txt":        "tiktok.com\n",
		"lists/allow.txt":         "ads.tiktok.com\n",
		"lists/bytedance.txt/new": "capcut.com\n", // a list made a folder
		"empty/.keep":             "",
		"networks/government.txt": "10.9.0.0/16\n",
		"resolv.conf":             "nameserver 192.0.2.1\n",
		"certs/dnsfence.crt":      "read at start, not by Parse\n",
		"certs/dnsfence.key":      "read at start, not by Parse\n",
		"certs/ca.pem":            string(ca),
		"certs/ca-key.pem":        string(caKey),
	})
}

// TestConfigMessages checks the error text of every kind of configuration
// mistake: each testdata/config/messages/KIND.txt is a table of small
// configurations under "## title" lines, and KIND.golden holds what each
// gives ("=> accepted" when it is right). A snippet without upstreams gets
// one after its own lines. Run with -update to rewrite the golden files.
func TestConfigMessages(t *testing.T) {
	dir := messagesTree(t)
	tables, err := filepath.Glob("testdata/config/messages/*.txt")
	require.NoError(t, err)
	require.NotEmpty(t, tables)
	for _, table := range tables {
		t.Run(filepath.Base(table), func(t *testing.T) {
			var out strings.Builder
			for _, sn := range readSnippets(t, table) {
				cfg := sn.body
				if !strings.Contains(cfg, "upstreams") {
					cfg += "upstreams: [\"192.0.2.53:53\"]\n"
				}
				_, err := Parse(filepath.Join(dir, "c.yaml"), []byte(cfg), os.ReadFile)
				fmt.Fprintf(&out, "## %s\n%s", sn.title, sn.body)
				if err == nil {
					out.WriteString("=> accepted\n\n")
					continue
				}
				checkConfigErrors(t, err)
				for _, line := range strings.Split(err.Error(), "\n") {
					out.WriteString("=> " + strings.ReplaceAll(line, dir+string(filepath.Separator), "") + "\n")
				}
				out.WriteString("\n")
			}
			golden := strings.TrimSuffix(table, ".txt") + ".golden"
			if *update {
				require.NoError(t, os.WriteFile(golden, []byte(out.String()), 0o644))
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err, "run go test ./resolver/config -run TestConfigMessages -update to create it")
			assert.Equal(t, string(want), out.String())
		})
	}
}

// goInternals are words of the YAML decoder and of Go's types that a
// configuration error must never show, outside the quoted values it echoes.
var goInternals = []string{"!!", "cannot unmarshal", "time.Duration", "uint32", "int64", "float64", "[]string", "struct {", "resolver.", "config.", "yaml:"}

// joined is the errors err joins (errors.Join), or err alone.
func joined(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

var quoted = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)

// checkConfigErrors asserts what every configuration error must be: one
// *Error a line of text, each with a message and no Go internals,
// in line order with those about missing keys last.
func checkConfigErrors(t *testing.T, err error) {
	t.Helper()
	list := joined(err)
	require.NotEmpty(t, list)
	last := 0
	for _, e := range list {
		var ce *Error
		require.True(t, errors.As(e, &ce), "%T is not a *Error: %v", e, e)
		msg := ce.Err.Error()
		assert.NotEmpty(t, strings.TrimSpace(msg), "empty message in %q", e.Error())
		assert.NotContains(t, msg, "\n", "one line each")
		for _, w := range goInternals {
			assert.NotContains(t, quoted.ReplaceAllString(msg, `""`), w, "Go internals in %q", e.Error())
		}
		line := ce.Line
		if line == 0 {
			line = int(^uint(0) >> 1)
		}
		assert.GreaterOrEqual(t, line, last, "not in line order: %q", err.Error())
		last = line
	}
}

// schemaKeys lists every key path of type t the way configExamples writes
// them: "cache.size", "policies[]", "policies[].clients[]".
func schemaKeys(t reflect.Type, prefix string) []string {
	var out []string
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t.Kind() == reflect.Slice:
		out = append(out, prefix+"[]")
		out = append(out, schemaKeys(t.Elem(), prefix+"[]")...)
	case t.Kind() == reflect.Struct:
		fields := yamlFields(t)
		for _, name := range fieldNames(fields) {
			key := name
			if prefix != "" {
				key = prefix + "." + name
			}
			out = append(out, key)
			out = append(out, schemaKeys(fields[name].Type, key)...)
		}
	}
	return out
}

// setPath puts v at a configExamples key in a decoded YAML tree, in the
// first item of every list on the way.
func setPath(tree any, key string, v any) any {
	if key == "" {
		return v
	}
	if rest, ok := strings.CutPrefix(key, "[]"); ok {
		list, _ := tree.([]any)
		if len(list) == 0 {
			list = []any{nil}
		}
		list[0] = setPath(list[0], strings.TrimPrefix(rest, "."), v)
		return list
	}
	m, _ := tree.(map[string]any)
	if m == nil {
		m = map[string]any{}
	}
	i := strings.IndexAny(key, ".[")
	if i < 0 {
		m[key] = v
		return m
	}
	m[key[:i]] = setPath(m[key[:i]], strings.TrimPrefix(key[i:], "."), v)
	return m
}

// TestConfigExamples checks that every key of the configuration has the
// example its error messages show, and that each example is accepted.
func TestConfigExamples(t *testing.T) {
	keys := schemaKeys(reflect.TypeFor[Config](), "")
	for _, k := range keys {
		assert.Contains(t, configExamples, k, "no example for %s", k)
	}
	for k := range configExamples {
		assert.Contains(t, keys, k, "an example for %s, which is not a key", k)
	}
	ca, _ := testCert(t, time.Now().Add(time.Hour))
	dir := testnet.WriteTree(t, map[string]string{
		"lists/tiktok.txt":        "tiktok.com\n",
		"lists/allow.txt":         "ads.tiktok.com\n",
		"networks/government.txt": "10.9.0.0/16\n",
		"resolv.conf":             "nameserver 192.0.2.1\n",
		"certs/dnsfence.crt":      "read at start, not by Parse\n",
		"certs/dnsfence.key":      "read at start, not by Parse\n",
		"certs/pdns-ca.pem":       string(ca),
	})
	for _, k := range keys {
		t.Run(k, func(t *testing.T) {
			var tree, ex any
			// The encrypted listeners' examples need the certificate.
			require.NoError(t, yaml.Unmarshal([]byte(`{upstreams: ["192.0.2.53:53"], policies: [{name: p, clients: ["10.0.0.0/8"]}], tls: {cert: certs/dnsfence.crt, key: certs/dnsfence.key}}`), &tree))
			require.NoError(t, yaml.Unmarshal([]byte(configExamples[k]), &ex))
			data, err := yaml.Marshal(setPath(tree, k, ex))
			require.NoError(t, err)
			_, err = Parse(filepath.Join(dir, "c.yaml"), data, os.ReadFile)
			assert.NoError(t, err, "%s", data)
		})
	}
}

// TestConfigSuggestions checks the did-you-mean guesses on their own.
func TestConfigSuggestions(t *testing.T) {
	keys := []string{"upstreams", "upstream_timeout", "upstream_strategy", "allowed_clients", "explain_clients", "block", "allow"}
	for _, tc := range []struct{ word, want string }{
		{"upstream", "upstreams"},
		{"UPSTREAMS", "upstreams"},
		{"upstream-timeout", "upstream_timeout"},
		{"upstream_timout", "upstream_timeout"},
		{"upsteram_strategy", "upstream_strategy"}, // two letters swapped
		{"blokc", "block"},
		{"alow", "allow"},
		{"clients", ""}, // ends two keys: no single guess
		{"timeout", ""}, // too far from every key
		{"frobnicate", ""},
		{strings.Repeat("x", 100), ""},
	} {
		assert.Equal(t, tc.want, Closest(tc.word, keys), tc.word)
	}
	// The candidate is measured as the word is: in lower case, '-' as '_'.
	assert.Equal(t, "AB-CD", Closest("ab-c", []string{"AB-CD"}))
	assert.Equal(t, "block", affixMatch("blocklists", keys))
	assert.Equal(t, "", affixMatch("clients", keys), "two keys end with it")
	assert.Equal(t, "upstream_strategy", affixMatch("strategy", keys), "a key that ends with the word")
	assert.Equal(t, "file", affixMatch("logfile", []string{"log", "file"}), "of 4 letters or more")
	// How far a guess may be grows with the word: 1 edit up to 4
	// letters, 2 up to 8, 3 beyond.
	for _, tc := range []struct{ word, candidate, want string }{
		{"axxd", "abcd", ""},                    // 4 letters, 2 edits
		{"blxxk", "block", "block"},             // 5 letters, 2 edits
		{"abcdexyz", "abcdefgh", ""},            // 8 letters, 3 edits
		{"abcdefxyz", "abcdefghi", "abcdefghi"}, // 9 letters, 3 edits
		{"abcdewxyz", "abcdefghi", ""},          // 9 letters, 4 edits
	} {
		assert.Equal(t, tc.want, Closest(tc.word, []string{tc.candidate}), tc.word)
	}
	assert.Equal(t, "abcd", Closest("abcx", []string{"abcd", "abce"}), "the first of equally close candidates")
	assert.Equal(t, 1, editDistance("ab", "ba"))
	assert.Equal(t, 1, editDistance("abc", "ac"))
	assert.Equal(t, 3, editDistance("kitten", "sitting"))
}

// TestConfigFixesAccepted: where an error names the value to write
// ("; write 127.0.0.1:53"), that value is accepted at its key. Every
// snippet of the message tables is tried: the value the error offers
// replaces the one written, and the key must then have no error. An
// offered value refused in turn sends a user round in a circle, as
// "fe80::1%eth0:53 ...; write [fe80::1%eth0]:53" did (the forwarder
// refuses a zone), "-030 ...; write -30" (negative) and "127.0.0.1:53:
// DNS over TLS never uses port 53; write 127.0.0.1:853" beside a
// listen_tls of 127.0.0.1:853 (two listeners on one port).
func TestConfigFixesAccepted(t *testing.T) {
	dir := messagesTree(t)
	tables, err := filepath.Glob("testdata/config/messages/*.txt")
	require.NoError(t, err)
	var snippets []snippet
	for _, table := range tables {
		for _, sn := range readSnippets(t, table) {
			sn.title = filepath.Base(table) + ": " + sn.title
			if !strings.Contains(sn.body, "upstreams") {
				sn.body += "upstreams: [\"192.0.2.53:53\"]\n"
			}
			snippets = append(snippets, sn)
		}
	}
	files, err := filepath.Glob("testdata/config/*.yaml") // TestConfigErrors's
	require.NoError(t, err)
	for _, f := range files {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		snippets = append(snippets, snippet{title: f, body: string(data)})
	}
	tried := 0
	for _, sn := range snippets {
		_, err := Parse(filepath.Join(dir, "c.yaml"), []byte(sn.body), os.ReadFile)
		n, unwritten := checkOffersTaken(t, sn.title, filepath.Join(dir, "c.yaml"), []byte(sn.body), err, os.ReadFile)
		assert.Zero(t, unwritten, "%s: offered values not written in where offered", sn.title)
		tried += n
	}
	t.Logf("%d offered values tried", tried)
	assert.Greater(t, tried, 30, "fewer offered values than the tables hold")
}

// checkOffersTaken fails t when a value err offers for the configuration
// data ("; write X", "; did you mean X?") is refused in turn, at its key
// or at one that had no problem, by a problem the file as written did not
// have, and returns how many it tried and how many of those withValue
// could not write in. When err offers more than weighOffers weighs
// (weighable), none is tried.
func checkOffersTaken(t *testing.T, title, file string, data []byte, err error, readFile func(string) ([]byte, error)) (tried, unwritten int) {
	t.Helper()
	type offer struct {
		ce  *Error
		fix string
	}
	var offers []offer
	had := map[string]bool{}
	before := map[string]bool{}
	for _, e := range joined(err) {
		if ce, ok := errors.AsType[*Error](e); ok {
			had[ce.Key] = true
			before[ce.Error()] = true
		}
		if ce, ok := errors.AsType[*Error](e); ok && ce.path != nil {
			if fix, _, ok := offeredValue(ce.Err.Error()); ok {
				offers = append(offers, offer{ce, fix})
			}
		}
	}
	if len(offers) > weighable(len(blocklist.Text(data))) {
		return 0, 0
	}
	text := blocklist.Text(data)
	var root yaml.Node
	if err := yaml.Unmarshal(text, &root); err != nil {
		return 0, 0
	}
	for _, o := range offers {
		fixed, ok := withValue(text, &root, o.ce.path, o.ce.Line, o.fix)
		if !ok {
			unwritten++
			continue
		}
		_, err := Parse(file, fixed, readFile)
		for _, e := range joined(err) {
			if again, ok := errors.AsType[*Error](e); ok && (again.Key == o.ce.Key || !had[again.Key]) && !before[again.Error()] {
				t.Errorf("%s: %s offers %s, which is refused: %v", title, o.ce.Key, o.fix, again)
			}
		}
	}
	return len(offers), unwritten
}

// TestWeighOffersBounded: each offer weighed is a parse of the whole
// file, so a large file with many offers has fewer weighed: the reparses
// read 1 MiB at most, not one file's size for each offer (40 offers in
// 370 kB, 20,000 clients, took 5 s where the file alone parses in 0.15 s).
func TestWeighOffersBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("upstreams:\n")
	for i := range 40 {
		fmt.Fprintf(&b, "  - localhost:%d\n", 5300+i)
	}
	b.WriteString("allowed_clients:\n")
	for i := range 20000 {
		fmt.Fprintf(&b, "  - 10.%d.%d.0/24\n", i>>8&255, i&255)
	}
	data := []byte(b.String())
	_, err := parse("c.yaml", data, os.ReadFile, false, false)
	var problems []*Error
	for _, e := range joined(err) {
		if ce, ok := errors.AsType[*Error](e); ok {
			problems = append(problems, ce)
		}
	}
	require.Len(t, problems, 40)
	var root yaml.Node
	require.NoError(t, yaml.Unmarshal(data, &root))
	read := 0
	weighOffers(problems, data, &root, func(text []byte) error {
		read += len(text)
		return nil
	})
	assert.Positive(t, read, "no offer weighed")
	assert.LessOrEqual(t, read, 1<<20, "bytes reparsed for %d bytes of file", len(data))

	// Each offer refused with another, as a refusal's own offer is
	// weighed in turn: the rounds count against the bound too.
	read, n := 0, 0
	weighOffers(problems, data, &root, func(text []byte) error {
		read += len(text)
		n++
		var again []error
		for _, p := range problems {
			again = append(again, &Error{File: p.File, Line: p.Line, Key: p.Key, Err: fmt.Errorf("refused %d; write localhost:%d", n, 6000+n)})
		}
		return &InvalidError{errs: again}
	})
	assert.Greater(t, n, 1, "no refusal's offer weighed in turn")
	assert.LessOrEqual(t, read, 1<<20, "bytes reparsed for %d bytes of file, offers refused", len(data))
}

// TestWithValue: weighOffers reparses the file with the offered value
// written where the one refused is, every other byte kept; a scalar
// whose end withValue cannot find, or that is not the one at path on
// the problem's line, is no text at all ("" here), never another value
// edited or a line cut short. Each case is one YAML shape a user may
// write a refused value in: quoted with its quote escaped, followed by
// a comment, in a block scalar, after a line that ends in a CR alone
// (YAML ends a line there, bytes.SplitAfter "\n" does not).
func TestWithValue(t *testing.T) {
	for _, c := range []struct {
		name, data string
		path       []any
		line       int
		v, want    string
	}{
		{"plain in a flow list", "a: [x, y]\n", []any{"a", 0}, 1, "127.0.0.1:53", "a: [\"127.0.0.1:53\", y]\n"},
		{"plain, space before its comment", "a:\n  - x # c\n", []any{"a", 0}, 2, "b", "a:\n  - \"b\" # c\n"},
		{"plain, tab before its comment", "a:\n  - x\t# c\n", []any{"a", 0}, 2, "b", "a:\n  - \"b\"\t# c\n"},
		{"single-quoted with a quote doubled", "a: ['it''s', y]\n", []any{"a", 0}, 1, "b", "a: [\"b\", y]\n"},
		{"single-quoted and empty", "a: ['', y]\n", []any{"a", 0}, 1, "b", "a: [\"b\", y]\n"},
		{"single-quoted, the file's last bytes", "a: 'x'", []any{"a"}, 1, "b", "a: \"b\""},
		{"single-quoted over two lines", "a:\n  - 'x\n    y'\n", []any{"a", 0}, 2, "b", ""},
		{"double-quoted with a quote escaped", "a: [\"x\\\"y\", z]\n", []any{"a", 0}, 1, "b", "a: [\"b\", z]\n"},
		{"a number written plain", "a: [x]\n", []any{"a", 0}, 1, "60", "a: [60]\n"},
		{"columns count characters", "a: [\"é\", x]\n", []any{"a", 1}, 1, "b", "a: [\"é\", \"b\"]\n"},
		{"a key given twice: the one on line", "a: [x]\na: [y]\n", []any{"a", 0}, 2, "b", "a: [x]\na: [\"b\"]\n"},
		{"through an alias, at its anchor", "b: &n [x]\na: *n\n", []any{"a", 0}, 1, "c", "b: &n [\"c\"]\na: *n\n"},
		{"a block scalar", "a:\n  - >-\n    x\n", []any{"a", 0}, 3, "b", ""},
		{"a plain scalar over two lines", "a:\n  - x\n    y\n", []any{"a", 0}, 2, "b", ""},
		{"an anchored scalar", "a: [&n x]\n", []any{"a", 0}, 1, "b", ""},
		{"a tagged scalar", "a: [!!str x]\n", []any{"a", 0}, 1, "b", ""},
		{"not on line", "a: [x]\n", []any{"a", 0}, 5, "b", ""},
		{"a mapping, not a scalar", "a: {b: c}\n", []any{"a"}, 1, "b", ""},
		{"an index past the list", "a: [x]\n", []any{"a", 3}, 1, "b", ""},
		{"a key the file lacks", "a: [x]\n", []any{"c", 0}, 1, "b", ""},
		{"an empty file", "", []any{"a", 0}, 1, "b", ""},
		{"on a line after the last LF", "b: 1\ra: [x]", []any{"a", 0}, 2, "b", ""},
		{"on a line shorter than its column", "b: 1\ra: [x]\n#\n", []any{"a", 0}, 2, "b", ""},
		{"another value where its column is", "a: [x]\rb: [x]\nc: [x]\n", []any{"b", 0}, 2, "q", ""},
		{"a line the edit leaves no YAML", "a: [x]\rb: [x]\nc:  x]\n", []any{"b", 0}, 2, "q", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			var root yaml.Node
			require.NoError(t, yaml.Unmarshal([]byte(c.data), &root))
			text, ok := withValue([]byte(c.data), &root, c.path, c.line, c.v)
			assert.Equal(t, c.want != "", ok)
			assert.Equal(t, c.want, string(text))
		})
	}
}

// TestConfigOfferWithValueDeclines: a refused value in a block scalar
// (`- >-` and the value on the next line) is one withValue cannot write
// an offer in place of; its offer stands as it is, unweighed, and no
// reparse of other text may speak for it (were refuseOffer to reparse
// withValue's nil text, an empty file's "at least one upstream is
// required" would be said of the listen address's offer).
func TestConfigOfferWithValueDeclines(t *testing.T) {
	data := "listen:\n  - >-\n    localhost\nupstreams: [\"192.0.2.53:53\"]\n"
	_, err := Parse("c.yaml", []byte(data), os.ReadFile)
	require.Error(t, err)
	assert.Equal(t, `c.yaml:2: listen[0]: "localhost" is a name, not an IP address; write 127.0.0.1:53`, err.Error())
}

// TestDecoderErrorsFallback: the shape check says every wrong type and
// unknown key in plain words, and parse turns the decoder's own type
// errors into problems only when it has said nothing (decoderErrors;
// FuzzConfig finds none it lets through). Were one let through, the
// configuration must still be refused, each problem at the decoder's
// line and the key written on it (keyAtLine), an unknown key by its
// name, a message without a line as it is: never decoded with the
// value left at its zero.
func TestDecoderErrorsFallback(t *testing.T) {
	data := []byte("upstreams: [\"192.0.2.53:53\"]\ncache: {size: [1]}\npolicies:\n  - name: press\n    clients: [\"10.1.0.0/16\"]\n  - clients: [\"10.0.0.0/8\"]\n    name: [gov]\nbogus: 1\n")
	var root yaml.Node
	require.NoError(t, yaml.Unmarshal(data, &root))
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	te, ok := errors.AsType[*yaml.TypeError](dec.Decode(&Config{}))
	require.True(t, ok, "the decoder found no type error")
	te.Errors = append(te.Errors, "a problem without a line")
	errs := &configErrors{file: "c.yaml", root: &root}
	errs.decoderErrors(te)
	var got []string
	for _, e := range errs.errs {
		got = append(got, e.Error())
	}
	assert.Equal(t, []string{
		"c.yaml:2: cache.size: cannot unmarshal !!seq into int",
		"c.yaml:7: policies[1].name: cannot unmarshal !!seq into string",
		`c.yaml:8: unknown key "bogus"`,
		"c.yaml: a problem without a line",
	}, got)
}
