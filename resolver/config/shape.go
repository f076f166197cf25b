package config

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/resolver/upstream"
	"go.yaml.in/yaml/v3"
)

// The shape check walks the YAML tree against the Config type before it is
// decoded, so that a value of the wrong YAML type, an unknown key or a key
// given twice is reported in plain words, at its own line, with the full
// key path and an example of a right value, instead of as the decoder's
// "cannot unmarshal !!int into time.Duration".

// configExamples holds a right value for every key of the configuration
// file, written as in YAML flow style. Keys are paths with the sequence
// indexes left out: "policies[].action". TestConfigExamples checks that
// every key has one and that each is accepted.
var configExamples = map[string]string{
	"listen":                            `["127.0.0.1:53", "[::1]:53"]`,
	"listen[]":                          `127.0.0.1:53`,
	"upstreams":                         `["9.9.9.9:53", "149.112.112.112:53"]`,
	"upstreams[]":                       `9.9.9.9:53`,
	"upstream_timeout":                  `2s`,
	"upstream_strategy":                 `fastest`,
	"upstream_health_check":             `{name: corp.example., type: SOA}`,
	"upstream_health_check.name":        `corp.example.`,
	"upstream_health_check.type":        `SOA`,
	"allowed_clients":                   `["10.0.0.0/8", "192.168.0.0/16"]`,
	"allowed_clients[]":                 `10.0.0.0/8`,
	"trusted_proxies":                   `["10.1.1.1", "10.1.1.2"]`,
	"trusted_proxies[]":                 `10.1.1.1`,
	"explain_clients":                   `["127.0.0.0/8", "::1/128"]`,
	"explain_clients[]":                 `127.0.0.0/8`,
	"blocked_ttl":                       `60`,
	"policies":                          `[{name: government-devices, clients: ["10.0.0.0/8"], block: [lists/tiktok.txt]}]`,
	"policies[]":                        `{name: government-devices, clients: ["10.0.0.0/8"], block: [lists/tiktok.txt]}`,
	"policies[].name":                   `government-devices`,
	"policies[].clients":                `["10.0.0.0/8", "2001:db8::/32"]`,
	"policies[].clients[]":              `10.0.0.0/8`,
	"policies[].client_files":           `[networks/government.txt]`,
	"policies[].client_files[]":         `networks/government.txt`,
	"policies[].block":                  `[lists/tiktok.txt]`,
	"policies[].block[]":                `lists/tiktok.txt`,
	"policies[].allow":                  `[lists/allow.txt]`,
	"policies[].allow[]":                `lists/allow.txt`,
	"policies[].action":                 `nxdomain`,
	"policies[].doh_canary":             `true`,
	"cache":                             `{size: 20000, max_ttl: 86400}`,
	"cache.size":                        `20000`,
	"cache.min_ttl":                     `0`,
	"cache.max_ttl":                     `86400`,
	"cache.prefetch":                    `false`,
	"cache.serve_stale":                 `1h`,
	"cache.stale_refresh_time":          `30s`,
	"cache.stale_answer_client_timeout": `1.8s`,
	"log":                               `{level: info, format: json}`,
	"log.level":                         `info`,
	"log.format":                        `json`,
	"log.queries":                       `blocked`,
	"log.audit_limit":                   `60`,
	"log.output":                        `stdout`,
	"http":                              `127.0.0.1:9153`,
	"shutdown_delay":                    `5s`,
	"reload":                            `{debounce: 200ms, max_shrink: 0.5, writer_wait: 30s, unready_after: 5m}`,
	"reload.debounce":                   `200ms`,
	"reload.max_shrink":                 `0.5`,
	"reload.unready_after":              `5m`,
	"reload.writer_wait":                `30s`,
	"rate_limit":                        `{rate: 200, burst: 400}`,
	"rate_limit.rate":                   `200`,
	"rate_limit.burst":                  `400`,
	"rate_limit.exempt":                 `["127.0.0.0/8", "::1/128"]`,
	"rate_limit.exempt[]":               `127.0.0.0/8`,
	"limits":                            `{tcp_connections: 1000, tcp_pipeline: 64}`,
	"limits.tcp_connections":            `1000`,
	"limits.tcp_read_timeout":           `2s`,
	"limits.tcp_idle_timeout":           `10s`,
	"limits.tcp_pipeline":               `64`,
	"limits.upstream_inflight":          `1000`,
	"limits.tcp_connections_per_client": `32`,
	"limits.udp_receive_buffer":         `4194304`,
	"limits.udp_send_buffer":            `4194304`,
	"tls":                               `{cert: certs/dnsfence.crt, key: certs/dnsfence.key}`,
	"tls.cert":                          `certs/dnsfence.crt`,
	"tls.key":                           `certs/dnsfence.key`,
	"listen_tls":                        `["127.0.0.1:853"]`,
	"listen_tls[]":                      `127.0.0.1:853`,
	"listen_https":                      `["127.0.0.1:443"]`,
	"listen_https[]":                    `127.0.0.1:443`,
	"listen_quic":                       `["127.0.0.1:853"]`,
	"listen_quic[]":                     `127.0.0.1:853`,
	"ddr":                               `true`,
	"upstream_ca":                       `certs/pdns-ca.pem`,
	"sources":                           `{refresh: 1h, cache_dir: /var/lib/dnsfence/sources}`,
	"sources.refresh":                   `1h`,
	"sources.cache_dir":                 `/var/lib/dnsfence/sources`,
	"sources.max_bytes":                 `67108864`,
	"sources.servfail_until_ready":      `true`,
	"sources.tsig":                      `{name: xfr-key., algorithm: hmac-sha256, secret: "c2VjcmV0LWtleS1mb3ItdGVzdHM="}`,
	"sources.tsig.name":                 `xfr-key.`,
	"sources.tsig.algorithm":            `hmac-sha256`,
	"sources.tsig.secret":               `"c2VjcmV0LWtleS1mb3ItdGVzdHM="`,
}

// example is "e.g. key: value" for a key of a mapping and "e.g. value" for
// an item of a list: what the user writes on that line.
func example(path []any) string {
	return exampleOf(path, configExamples[schemaKey(path)])
}

// exampleOf is example with the value ex: "" when ex is.
func exampleOf(path []any, ex string) string {
	if ex == "" {
		return ""
	}
	if len(path) > 0 {
		if leaf, ok := path[len(path)-1].(string); ok {
			return "e.g. " + leaf + ": " + ex
		}
	}
	return "e.g. " + ex
}

// exampleIn is the example for the key at path, whose value f (as
// written) names the folder dir where a file belongs: a file of the
// folder (the first by name, not hidden), as the key would name it,
// rather than the key's own example, which may be the very path given
// (lists/tiktok.txt made a folder: "e.g. lists/tiktok.txt"); the key's
// example when the folder holds no such file.
func exampleIn(path []any, f, dir string) string {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".") {
			return exampleOf(path, filepath.Join(f, e.Name()))
		}
	}
	return example(path)
}

// schemaKey is keyName without the indexes: "policies[].action".
func schemaKey(path []any) string {
	var b strings.Builder
	for _, p := range path {
		switch v := p.(type) {
		case string:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(v)
		case int:
			b.WriteString("[]")
		}
	}
	return b.String()
}

var durationType = reflect.TypeFor[time.Duration]()

// secretKeys are the keys whose values no message shows: a configuration
// error goes to stderr, the journal and, at a reload, the log a
// department ships to its SIEM, and a TSIG secret there is a key to the
// zones its primary serves. (A URL's user information is hidden wherever
// a value is shown: quoteValue.)
var secretKeys = map[string]bool{"sources.tsig.secret": true}

// shapeChecker walks the YAML tree along the Config type.
type shapeChecker struct {
	errs *configErrors
	// budget bounds the nodes visited: aliases can make a small file a
	// very large tree.
	budget int
	// badMerge is set when a merge key's value is no mapping: the decoder
	// then stops with an error of no line, which this check has said at
	// its line.
	badMerge bool
}

// checkShape reports every value of root whose YAML type cannot be the Go
// type of its key, every unknown key and every key given twice. It
// reports whether a merge key (<<) has a value that is no mapping, an
// alias of one or a list of those, on which the decoder stops.
func checkShape(errs *configErrors, root *yaml.Node) (badMerge bool) {
	if root == nil || len(root.Content) == 0 {
		return false
	}
	s := &shapeChecker{errs: errs, budget: 100000}
	s.value(root.Content[0], reflect.TypeFor[Config](), nil)
	return s.badMerge
}

// value checks node n against Go type t at path.
func (s *shapeChecker) value(n *yaml.Node, t reflect.Type, path []any) {
	line := n.Line
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if s.budget--; s.budget < 0 || n == nil {
		return
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		if len(path) > 0 {
			if _, item := path[len(path)-1].(int); item {
				// The decoder drops a null item from a list, so an item
				// a template or a half-deleted line left empty (`- `
				// alone) would be gone without a word, and the items
				// after it move up one: validate, which would name them
				// at the wrong index and line, says nothing of the list.
				s.errs.record(line, path, "an empty list item (a - or a comma with no value); give a value, %s, or delete the item", example(path))
				s.errs.skip = append(s.errs.skip, keyName(path[:len(path)-1]))
			}
		}
		return // an empty value: the default applies
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case len(path) == 0 && n.Kind != yaml.MappingNode:
		s.bad(line, path, "%s; a configuration file is keys and values, e.g. upstreams: [\"9.9.9.9:53\"]", shapeOf(n))
	case n.Kind == yaml.ScalarNode && envReference(n.Value) != "":
		s.bad(line, path, "%s is not expanded: dnsfence reads the configuration as written, with no environment variables; write the value itself, or fill the file in before dnsfence reads it (envsubst < dnsfence.yaml.in > dnsfence.yaml), %s",
			envReference(n.Value), example(path))
	case t.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			s.bad(line, path, "%s; give keys and values, %s", shapeOf(n), example(path))
			return
		}
		s.mapping(n, t, path)
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			shape := shapeOf(n)
			if _, curly := curlyInner(n); curly {
				shape += " in " + curlyWhy("value")
			}
			s.bad(line, path, "%s; give a list, %s", shape, listExample(n, path))
			return
		}
		for i, item := range n.Content {
			s.value(item, t.Elem(), append(slices.Clip(path), i))
		}
	case n.Kind != yaml.ScalarNode:
		if addr := colonEnded(n); addr != "" {
			s.bad(line, path, "%s ends with a colon, which YAML reads as a key; put the address in quotes: %q", addr, addr)
			return
		}
		s.bad(line, path, "%s; give a single value, %s", shapeOf(n), example(path))
	case secretKeys[schemaKey(path)]:
		// Its value is never shown, not even cut or in part.
		if _, curly := curlyInner(n); curly {
			s.bad(line, path, "the secret is in %s; write it in straight quotes, %s", curlyWhy("value"), example(path))
		} else if n.Decode(new(string)) != nil {
			// Only an explicit tag (!!int, !!binary) makes a scalar
			// that is not text.
			s.bad(line, path, "the secret cannot be read as text under its YAML tag %q; write it without the tag, %s", n.ShortTag(), example(path))
		}
	default:
		if msg := typographicQuotes(n, t); msg != "" {
			s.bad(line, path, "%s", msg)
			return
		}
		if msg, exact := scalarProblem(n, t, strings.HasSuffix(schemaKey(path), "ttl")); exact {
			s.bad(line, path, "%s", msg)
		} else if msg != "" {
			s.bad(line, path, "%s, %s", msg, example(path))
		}
	}
}

// bad records a shape problem and marks path so that validate does not
// report the same value again as its zero or default.
func (s *shapeChecker) bad(line int, path []any, format string, args ...any) {
	s.errs.record(line, path, format, args...)
	s.errs.skip = append(s.errs.skip, keyName(path))
}

// mapping checks the keys of a mapping node against struct type t.
func (s *shapeChecker) mapping(n *yaml.Node, t reflect.Type, path []any) {
	// The decoder leaves a mapping with a repeated key empty: report the
	// repeats, and nothing validate would say about the empty mapping.
	type key struct {
		kind  yaml.Kind
		value string
	}
	first := map[key]int{}
	for i := 0; i < len(n.Content); i += 2 {
		k := n.Content[i]
		if line, dup := first[key{k.Kind, k.Value}]; dup {
			s.errs.record(k.Line, append(slices.Clip(path), k.Value), "given twice (first at line %d); keep one", line)
			if !slices.Contains(s.errs.skip, keyName(path)) {
				s.errs.skip = append(s.errs.skip, keyName(path))
			}
			continue
		}
		first[key{k.Kind, k.Value}] = k.Line
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k, v := n.Content[i], n.Content[i+1]; k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" && !mergeable(v) {
			s.errs.record(k.Line, path, "<< (a YAML merge key) takes a mapping, an alias of one or a list of those, e.g. <<: *defaults")
			s.errs.skip = append(s.errs.skip, keyName(path))
			s.badMerge = true
		}
	}
	fields := yamlFields(t)
	for _, pair := range mappingPairs(n) {
		k, v := pair[0], pair[1]
		if k.Kind != yaml.ScalarNode {
			s.bad(k.Line, path, "a list or mapping as a key; keys are plain words, e.g. %s", firstExample(path, fields))
			continue
		}
		f, ok := fields[k.Value]
		if !ok {
			s.unknown(k, fields, path, n)
			continue
		}
		s.value(v, f.Type, append(slices.Clip(path), k.Value))
	}
}

// firstExample is "key: example" for the first key of a mapping.
func firstExample(path []any, fields map[string]reflect.StructField) string {
	first := fieldNames(fields)[0]
	return first + ": " + configExamples[schemaKey(append(slices.Clip(path), first))]
}

// mappingPairs lists the key and value nodes of a mapping, with the pairs
// of merged mappings (`<<: *defaults`) in place of the merge key, as the
// decoder reads them. A mapping merged again at the same depth adds no key
// the first time did not, and is not listed again: merges of twenty
// mappings that each merge twenty, eight deep, are 20^8 merges of 1 KB.
func mappingPairs(n *yaml.Node) [][2]*yaml.Node {
	type merge struct {
		n     *yaml.Node
		depth int
	}
	seen := map[merge]bool{}
	var pairs func(n *yaml.Node, depth int) [][2]*yaml.Node
	pairs = func(n *yaml.Node, depth int) [][2]*yaml.Node {
		var out, merged [][2]*yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" && depth < 8 {
				for _, m := range mergeSources(v) {
					if !seen[merge{m, depth + 1}] {
						seen[merge{m, depth + 1}] = true
						merged = append(merged, pairs(m, depth+1)...)
					}
				}
				continue
			}
			out = append(out, [2]*yaml.Node{k, v})
		}
		// A key written in the mapping wins over a merged one, and an
		// earlier merged mapping over a later one.
		have := map[string]bool{}
		for _, p := range out {
			have[p[0].Value] = true
		}
		for _, p := range merged {
			if !have[p[0].Value] {
				have[p[0].Value] = true
				out = append(out, p)
			}
		}
		return out
	}
	return pairs(n, 0)
}

// mergeable reports whether the decoder merges v, the value of a merge
// key: a mapping, an alias of one, or a list of those.
func mergeable(v *yaml.Node) bool {
	isMap := func(n *yaml.Node) bool {
		return n.Kind == yaml.MappingNode || n.Kind == yaml.AliasNode && (n.Alias == nil || n.Alias.Kind == yaml.MappingNode)
	}
	if v.Kind != yaml.SequenceNode {
		return isMap(v)
	}
	for _, c := range v.Content {
		if !isMap(c) {
			return false
		}
	}
	return true
}

// mergeSources are the mappings a merge key's value names: one alias or a
// list of them.
func mergeSources(v *yaml.Node) []*yaml.Node {
	deref := func(n *yaml.Node) *yaml.Node {
		if n.Kind == yaml.AliasNode {
			return n.Alias
		}
		return n
	}
	var out []*yaml.Node
	if v = deref(v); v == nil {
		return nil
	}
	switch v.Kind {
	case yaml.MappingNode:
		out = append(out, v)
	case yaml.SequenceNode:
		for _, c := range v.Content {
			if c = deref(c); c != nil && c.Kind == yaml.MappingNode {
				out = append(out, c)
			}
		}
	}
	return out
}

// unknown reports key k, not a field of this mapping, with the key it most
// likely meant. A suggested key the mapping lacks is marked, so that its
// absence is not reported a second time.
func (s *shapeChecker) unknown(k *yaml.Node, fields map[string]reflect.StructField, path []any, n *yaml.Node) {
	names := fieldNames(fields)
	if inner, curly := curlyInner(k); curly && slices.Contains(names, inner) {
		// “listen”: copied from a document with its quotes.
		s.errs.record(k.Line, path, "key %s is in %s; write %s", strconv.Quote(k.Value), curlyWhy("key"), inner)
		s.meant(n, path, inner)
		return
	}
	guess := Closest(k.Value, names)
	where := keyElsewhere(k.Value, len(path) == 0)
	if guess == "" && where == "" {
		guess = affixMatch(k.Value, names)
	}
	switch {
	case guess != "":
		s.errs.record(k.Line, path, "unknown key %q; did you mean %s?", k.Value, guess)
		s.meant(n, path, guess)
	case where != "":
		s.errs.record(k.Line, path, "unknown key %q here; %s is a key of %s", k.Value, k.Value, where)
	default:
		level := "the top level"
		switch {
		case schemaKey(path) == "policies[]":
			level = "a policy"
		case len(path) > 0:
			level = keyName(path)
		}
		s.errs.record(k.Line, path, "unknown key %q; the keys of %s are %s", k.Value, level, strings.Join(names, ", "))
	}
}

// meant marks key of the mapping n at path as written, under another
// spelling the error already names, when n does not hold it: its absence
// is not reported a second time.
func (s *shapeChecker) meant(n *yaml.Node, path []any, key string) {
	if nodeAt(&yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{n}}, []any{key}) == nil {
		s.errs.skip = append(s.errs.skip, keyName(append(slices.Clip(path), key)))
	}
}

// yamlFields maps the YAML key names of struct type t to its fields.
func yamlFields(t reflect.Type) map[string]reflect.StructField {
	out := map[string]reflect.StructField{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name != "" && name != "-" && f.IsExported() {
			out[name] = f
		}
	}
	return out
}

// fieldNames are the keys of fields in the order the struct declares them.
func fieldNames(fields map[string]reflect.StructField) []string {
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	slices.SortFunc(names, func(a, b string) int { return slices.Compare(fields[a].Index, fields[b].Index) })
	return names
}

// keyElsewhere names the mapping that has key name, as a user reads it
// ("cache", "each policy (under policies)", "the top level"), or "" when
// no mapping has it. top says the key was found at the top level.
func keyElsewhere(name string, top bool) string {
	var found string
	var visit func(t reflect.Type, where string)
	visit = func(t reflect.Type, where string) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || t == durationType || found != "" {
			return
		}
		fields := yamlFields(t)
		if _, ok := fields[name]; ok && (where != "the top level" || !top) {
			found = where
			return
		}
		for _, key := range fieldNames(fields) {
			sub := key
			if key == "policies" {
				sub = "each policy (under policies)"
			}
			visit(fields[key].Type, sub)
		}
	}
	visit(reflect.TypeFor[Config](), "the top level")
	return found
}

// Closest returns the candidate that word most likely misspells: the same
// but for case or '-' for '_', or within a small edit distance (1 for
// words of up to 4 letters, 2 up to 8, else 3). It returns "" when none is
// that close. The configuration's keys and values ask it, and the command
// line's commands and flags.
func Closest(word string, candidates []string) string {
	w := normKey(word)
	best, bestDist := "", math.MaxInt
	for _, c := range candidates {
		if normKey(c) == w {
			return c
		}
		if d := editDistance(w, normKey(c)); d < bestDist {
			best, bestDist = c, d
		}
	}
	limit := 1
	switch {
	case len(w) > 8:
		limit = 3
	case len(w) > 4:
		limit = 2
	}
	if bestDist <= limit {
		return best
	}
	return ""
}

// affixMatch returns the one candidate of 4 letters or more that starts or
// ends word, or that word starts ("blocklists" for block), or "" when
// none or several do.
func affixMatch(word string, candidates []string) string {
	w := normKey(word)
	var found []string
	for _, c := range candidates {
		short, long := c, w
		if len(short) > len(long) {
			short, long = long, short
		}
		if len(short) >= 4 && (strings.HasPrefix(long, short) || strings.HasSuffix(long, short)) {
			found = append(found, c)
		}
	}
	if len(found) == 1 {
		return found[0]
	}
	return ""
}

func normKey(s string) string { return strings.ReplaceAll(strings.ToLower(s), "-", "_") }

// editDistance is the optimal string alignment distance between a and b:
// insertions, deletions, substitutions and swaps of neighbours, each 1.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return math.MaxInt // nothing that long is a typo of a key
	}
	prev2 := make([]int, len(b)+1)
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
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}

// colonEnded is the IPv6 address (or range) that mapping n was written
// as, "" when it is no such thing: unquoted, `- 2001:db8::` and `- ::`
// end with ": ", the mark of a key with no value (Blocky issue 1709;
// AdGuard Home issue 5752, where `::` turned into "").
func colonEnded(n *yaml.Node) string {
	if n.Kind != yaml.MappingNode || len(n.Content) != 2 || n.Content[1].ShortTag() != "!!null" || n.Content[1].Value != "" {
		return ""
	}
	k := n.Content[0]
	if k.Kind != yaml.ScalarNode || inQuotes(k) {
		return ""
	}
	text := k.Value + ":"
	if _, err := netip.ParseAddr(text); err == nil {
		return text
	}
	return ""
}

// inQuotes reports a scalar written in quotes, single or double: text,
// whatever it spells.
func inQuotes(n *yaml.Node) bool {
	return n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0
}

// shapeOf says what a node is where it does not belong, in the words of
// someone reading the file: `"9.9.9.9:53" is a single value`.
func shapeOf(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list is not allowed here"
	case yaml.MappingNode:
		return "keys and values are not allowed here"
	}
	return quoteValue(n) + " is a single value"
}

// listExample is the user's own single value written as a list when that
// is the likely fix (`upstreams: ["9.9.9.9:53"]`), else the key's example.
func listExample(n *yaml.Node, path []any) string {
	leaf, _ := path[len(path)-1].(string)
	if n.Kind == yaml.ScalarNode && leaf != "" && configExamples[schemaKey(path)+"[]"] != "" {
		v := n.Value
		if inner, curly := curlyInner(n); curly {
			v = inner
		}
		if item, ok := itemMeant(schemaKey(path), v); ok {
			return "e.g. " + leaf + ": [" + strconv.Quote(blocklist.RedactURL(item)) + "]"
		}
	}
	return example(path)
}

// itemMeant is v, a single value written where the address or range
// list key belongs, as the list's item is written: v's fix when it has
// one (addrPortProblem: `listen: 5353` is ["127.0.0.1:5353"], not
// ["5353"], which is refused in turn; a range's meant, a
// blocklist.RangeMeantError's:
// `clients: 10.1.2.3/8` is ["10.0.0.0/8"]), v for any other key or
// value; false when v is refused as an item with nothing to write instead
// (`upstreams: 53`, `allowed_clients: gov-phones`), for the key's example
// to be offered.
func itemMeant(key, v string) (string, bool) {
	switch key {
	case "policies[].clients", "allowed_clients", "trusted_proxies", "explain_clients", "rate_limit.exempt":
		_, err := blocklist.ParsePrefix(v)
		if err == nil {
			return v, true
		}
		if e, ok := errors.AsType[*blocklist.RangeMeantError](err); ok {
			return e.Meant.String(), true
		}
		return "", false
	}
	port, ok := map[string]uint16{"listen": upstream.PlainPort, "listen_tls": upstream.DoTPort, "listen_quic": upstream.DoQPort, "upstreams": upstream.PlainPort}[key]
	if !ok {
		return v, true
	}
	if _, bare := portless(v); key == "upstreams" && (bare || IsResolvConf(v) || strings.Contains(v, "://")) {
		return v, true // an upstream without its port is taken as written, and so are the others upstreams takes
	}
	msg, fix := addrPortProblem(v, port, key != "upstreams")
	if meant, _, ok := offeredValue("; write " + fix); ok {
		return meant, true
	}
	return v, msg == ""
}

// envVariable is a reference to an environment variable as a shell, a
// systemd unit, Docker Compose or a Corefile writes one: ${NAME} (and
// ${NAME:-default}), {$NAME}, or $NAME opening the value.
var envVariable = regexp.MustCompile(`\$\{[A-Za-z_][A-Za-z0-9_]*(?:[:?+-][^}]*)?\}|\{\$[A-Za-z_][A-Za-z0-9_]*\}|^\$[A-Za-z_][A-Za-z0-9_]*`)

// envReference is the first reference to an environment variable in v,
// "" when there is none: dnsfence expands none, so `cache_dir:
// ${STATE_DIRECTORY}/sources` would be a folder of that name beside the
// configuration, and `upstreams: ["${UPSTREAM}"]` no address, where the
// writer expected the variable's value.
func envReference(v string) string {
	return envVariable.FindString(v)
}

// quoteValue writes a scalar as the user wrote it: numbers, true and false
// bare, text in quotes, long values cut; a URL's user information
// (scheme://USER:PASSWORD@HOST) hidden as blocklist.RedactURL hides it, before
// the cut, which could leave part of it.
func quoteValue(n *yaml.Node) string {
	v := blocklist.RedactURL(n.Value)
	if len(v) > 60 {
		v = v[:57] + "..."
	}
	switch n.ShortTag() {
	case "!!int", "!!float", "!!bool", "!!null":
		if !inQuotes(n) {
			return v
		}
	}
	return strconv.Quote(v)
}

var wholeNumber = regexp.MustCompile(`^[-+]?[0-9_]+$`)

var looksLikeDuration = regexp.MustCompile(`^-?[0-9.]+\s*[a-zµ]+$`)

// scalarProblem says what is wrong with scalar n as a value of Go type t,
// or "" when the decoder takes it as the user meant it. exact says the
// message already names the right value; else an example should follow.
func scalarProblem(n *yaml.Node, t reflect.Type, ttl bool) (msg string, exact bool) {
	tag := n.ShortTag()
	v := quoteValue(n)
	if numeric := t.Kind() >= reflect.Int && t.Kind() <= reflect.Float64; numeric && !inQuotes(n) {
		if msg := leadingZeroProblem(n.Value); msg != "" {
			return msg, true
		}
	}
	switch {
	case t == durationType:
		return durationProblem(n)
	case t.Kind() == reflect.Bool:
		if err := n.Decode(new(bool)); err != nil {
			return v + " is not true or false; give true or false", false
		}
	case t.Kind() == reflect.String:
		if err := n.Decode(new(string)); err != nil {
			// Only an explicit tag (!!int, !!binary) makes a scalar
			// that is not text.
			return fmt.Sprintf("%s cannot be read as text under its YAML tag %q; write it without the tag", v, n.ShortTag()), false
		}
	case t.Kind() == reflect.Float64 || t.Kind() == reflect.Float32:
		if tag == "!!str" {
			return notNumber(n, "a number")
		}
		if tag != "!!int" && tag != "!!float" || n.Decode(new(float64)) != nil {
			return v + " is not a number; give a number", false
		}
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return integerProblem(n, t, ttl)
	}
	return "", false
}

// curlyQuotes are the quotation marks a word processor, a wiki or a web
// page writes for " and ': YAML takes them as text.
const curlyQuotes = "“”„‟‘’‚‛«»"

// typographicQuotes says what is wrong with a plain scalar that starts or
// ends with a curly quotation mark (`upstreams: [“9.9.9.9:53”]`, copied
// from a document), "" when n is none: the marks would be part of the
// value, an upstream whose "port is not a number", a list file that does
// not exist, a policy named “gov”.
func typographicQuotes(n *yaml.Node, t reflect.Type) string {
	inner, curly := curlyInner(n)
	if !curly {
		return ""
	}
	inner = blocklist.RedactURL(inner)
	want := strconv.Quote(inner)
	if t.Kind() != reflect.String {
		want = inner
	}
	return fmt.Sprintf("%s is in %s; write %s", strconv.Quote(blocklist.RedactURL(n.Value)), curlyWhy("value"), want)
}

// curlyWhy says why typographic quotes around a value (or a key: what)
// are a mistake.
func curlyWhy(what string) string {
	return "typographic quotes (“ ” or ‘ ’), as text copied from a document or a web page is, and they would be part of the " + what
}

// curlyInner is a plain scalar's value without the curly quotation marks
// it starts or ends with, and whether it has any: a quoted scalar is
// text, whatever it spells.
func curlyInner(n *yaml.Node) (inner string, curly bool) {
	if n.Kind != yaml.ScalarNode || inQuotes(n) {
		return "", false
	}
	first, _ := utf8.DecodeRuneInString(n.Value)
	last, _ := utf8.DecodeLastRuneInString(n.Value)
	if !strings.ContainsRune(curlyQuotes, first) && !strings.ContainsRune(curlyQuotes, last) {
		return "", false
	}
	return strings.TrimFunc(n.Value, func(r rune) bool { return strings.ContainsRune(curlyQuotes, r) }), true
}

var leadingZero = regexp.MustCompile(`^([-+]?)0+([0-9][0-9_]*)$`)

// leadingZeroProblem says what is wrong with a whole number written with
// a leading zero, "" when v is none: YAML 1.1, which the decoder follows
// here, reads 060 as octal (48) and 08 as a float, where YAML 1.2 and the
// writer mean 60 and 8 (the 0644 of file modes, padded columns). Neither
// is guessed. 0o60, 0x3c and 0 itself are what they say.
func leadingZeroProblem(v string) string {
	m := leadingZero.FindStringSubmatch(v)
	if m == nil {
		return ""
	}
	want := m[1] + m[2]
	if oct, err := strconv.ParseInt(strings.ReplaceAll(m[2], "_", ""), 8, 64); err == nil && oct != 0 {
		return fmt.Sprintf("%s has a leading zero, which YAML reads as octal (%s%d); write %s", v, m[1], oct, want)
	}
	return fmt.Sprintf("%s has a leading zero; write %s", v, want)
}

// durationProblem checks a duration: text with a unit, never a bare number
// (is 2 two seconds or two milliseconds?).
func durationProblem(n *yaml.Node) (string, bool) {
	v := quoteValue(n)
	const units = "a duration with a unit (ms, s, m or h)"
	switch n.ShortTag() {
	case "!!int", "!!float":
		return v + " is a number without a unit; give " + units, false
	case "!!str":
		s := strings.TrimSpace(n.Value)
		if _, err := time.ParseDuration(n.Value); err == nil {
			return "", false
		}
		if _, err := strconv.ParseFloat(s, 64); err == nil {
			return v + " is a number without a unit; give " + units, false
		}
		if d, ok := strings.CutSuffix(s, "d"); ok {
			if days, err := strconv.Atoi(d); err == nil && days >= 0 && days < 1e5 {
				return fmt.Sprintf("%s: d (days) is not a unit; write %dh", v, 24*days), true
			}
		}
		if _, err := time.ParseDuration(strings.ReplaceAll(s, " ", "")); err == nil {
			return fmt.Sprintf("%s has a space in it; write %s", v, strings.ReplaceAll(s, " ", "")), true
		}
	}
	return v + " is not a duration; give " + units, false
}

// integerProblem checks a whole number against the range of Go type t.
// A ttl is seconds in a DNS record.
func integerProblem(n *yaml.Node, t reflect.Type, ttl bool) (string, bool) {
	v := quoteValue(n)
	switch n.ShortTag() {
	case "!!int":
	case "!!float":
		if wholeNumber.MatchString(n.Value) { // too long for 64 bits
			if strings.HasPrefix(n.Value, "-") {
				return v + " is too small; give a larger number", false
			}
			return v + " is too large; give a smaller number", false
		}
		if f, err := strconv.ParseFloat(n.Value, 64); err == nil && f == math.Trunc(f) && math.Abs(f) < 1e15 {
			return v + " is not written as a whole number; write " + strconv.FormatFloat(f, 'f', -1, 64), true
		}
		return v + " is not a whole number; give a whole number", false
	case "!!str":
		return notNumber(n, "a whole number")
	default:
		return v + " is not a number; give a whole number", false
	}
	if t.Kind() >= reflect.Uint && t.Kind() <= reflect.Uint64 {
		var u uint64
		if err := n.Decode(&u); err != nil || reflect.Zero(t).OverflowUint(u) {
			if strings.HasPrefix(strings.TrimSpace(n.Value), "-") {
				return v + " is negative; give a whole number of seconds", false
			}
			if ttl {
				return fmt.Sprintf("%s is above %d, the largest TTL (RFC 2181 §8)", v, MaxTTL), false
			}
			return fmt.Sprintf("%s is too large; the largest is %d", v, uint64(math.MaxUint64)>>(64-t.Bits())), false
		}
		return "", false
	}
	var i int64
	if err := n.Decode(&i); err != nil || reflect.Zero(t).OverflowInt(i) {
		if strings.HasPrefix(strings.TrimSpace(n.Value), "-") {
			return v + " is too small; give a larger number", false
		}
		return v + " is too large; give a smaller number", false
	}
	return "", false
}

// notNumber explains a text value where a number belongs: a number in
// quotes, a duration where seconds are counted, or just not a number.
func notNumber(n *yaml.Node, want string) (string, bool) {
	v := quoteValue(n)
	s := strings.TrimSpace(n.Value)
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		return v + " is text in quotes; write the number without quotes: " + s, true
	}
	if looksLikeDuration.MatchString(s) {
		return v + " has a unit; give " + want + " without a unit", false
	}
	return v + " is not a number; give " + want, false
}
