package resolver

import (
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/dnsfence/dnsfence/resolver/upstream"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
)

func TestShippedExampleConfigLoads(t *testing.T) {
	cfg, err := config.Load("../configs/dnsfence.yaml")
	require.NoError(t, err)
	snap, err := BuildSnapshot(cfg, nil)
	require.NoError(t, err)
	assert.Empty(t, snap.Warnings)
	require.Len(t, snap.Policies, 2)
	assert.True(t, snap.Policies[0].Blocks())
	assert.False(t, snap.Policies[1].Blocks())
	assert.Equal(t, "127.0.0.1:9153", cfg.HTTPAddr())
}

// TestSnapshotIsReadOnly: nothing writes to a published snapshot. Queries
// of every kind (blocked under each action, forwarded, cached, a blocked
// chain, the CHAOS explain, over TCP too), explain, lint and reloads (one
// that reuses its lists, one that replaces a list) all run against one
// snapshot, and everything it reaches, unexported fields and the lists'
// and tables' insides included, is the same afterwards. The forwarder
// (Snapshot.fwd) is left out: it is the live upstream state, not a
// decision input.
func TestSnapshotIsReadOnly(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := defaultAnswer(w, r)
		if r.Question[0].Name == "cloaked.example." {
			m.Answer = []dns.RR{mustRR("cloaked.example. 300 IN CNAME x.tiktokcdn.com."), mustRR("x.tiktokcdn.com. 300 IN A 192.0.2.5")}
		}
		return m
	})
	text := strings.Replace(testConfig, "blocked_ttl: 60",
		"blocked_ttl: 60\nexplain_clients: [\"127.0.0.1/32\"]\ncache: {prefetch: true, serve_stale: 1h}\nrate_limit: {rate: 1000, burst: 1000, exempt: []}", 1)
	f := startFence(t, text, testFiles, up.addr)
	snap := f.handler.Snapshot()
	before := dumpValue(snap)
	require.Greater(t, len(before), 100, "the dump reaches into the snapshot")

	for _, from := range []string{"", "127.0.0.3", "127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.9"} {
		for _, name := range []string{"www.tiktok.com.", "ads.tiktok.com.", "capcut.com.", "example.org.", "example.org.", "cloaked.example."} {
			for _, network := range []string{"udp", "tcp"} {
				m := question(name, dns.TypeA, true)
				_, err := exchange(f.addr, from, network, m)
				require.NoError(t, err, "%s %s from %s", network, name, from)
			}
		}
	}
	chaos := question("www.tiktok.com.explain.dnsfence.", dns.TypeTXT, false)
	chaos.Question[0].Qclass = dns.ClassCHAOS
	r := ask(t, f.addr, "", "udp", chaos)
	require.Equal(t, dns.RcodeSuccess, r.Rcode)
	e := snap.Explain(netipMustParse("127.0.0.1"), "www.tiktok.com.", dns.TypeA)
	snap.ExplainAnswer(&e, ask(t, up.addr, "", "udp", question("cloaked.example.", dns.TypeA, false)))
	_ = snap.Lint()

	path := snap.Config.File
	rl := NewReloader(zap.NewNop(), f.handler, func() (*config.Config, error) { return config.Load(path) })
	require.NoError(t, rl.Reload(false), "a reload that reuses every list")
	writeAtomic(t, filepath.Join(f.dir, "tiktok.txt"), testFiles["tiktok.txt"]+"new.example\n")
	require.NoError(t, rl.Reload(false), "a reload that replaces a list")
	require.NotSame(t, snap, f.handler.Snapshot())

	after := dumpValue(snap)
	var changed []string
	for i := range max(len(before), len(after)) {
		if i >= len(before) || i >= len(after) || before[i] != after[i] {
			changed = append(changed, fmt.Sprintf("line %d: before %q, after %q", i, at(before, i), at(after, i)))
		}
		if len(changed) == 10 {
			break
		}
	}
	assert.Empty(t, changed, "the snapshot changed after it was published")
}

// at is lines[i], or "" past the end.
func at(lines []string, i int) string {
	if i < len(lines) {
		return lines[i]
	}
	return ""
}

// dumpValue writes out everything v reaches, one "path = value" line each,
// in an order that does not depend on map iteration. Unexported fields are
// read too; a pointer reached again is named, not followed. The
// snapshot's forwarder (a *upstream.Forwarder) is left out, and a time's location is not followed (the
// process's local zone caches what it looked up).
func dumpValue(v any) []string {
	d := &dumper{seen: map[uintptr]string{}}
	d.walk("snapshot", reflect.ValueOf(v))
	return d.lines
}

type dumper struct {
	lines []string
	seen  map[uintptr]string
}

func (d *dumper) add(path string, format string, args ...any) {
	d.lines = append(d.lines, path+" = "+fmt.Sprintf(format, args...))
}

func (d *dumper) walk(path string, v reflect.Value) {
	switch v.Kind() {
	case reflect.Invalid:
		d.add(path, "invalid")
	case reflect.Bool:
		d.add(path, "%t", v.Bool())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		d.add(path, "%d", v.Int())
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		d.add(path, "%d", v.Uint())
	case reflect.Float32, reflect.Float64:
		d.add(path, "%g", v.Float())
	case reflect.String:
		d.add(path, "%q", v.String())
	case reflect.Func, reflect.Chan, reflect.UnsafePointer:
		d.add(path, "%s nil=%t", v.Kind(), v.IsNil())
	case reflect.Pointer, reflect.Interface:
		d.walkRef(path, v)
	case reflect.Slice, reflect.Array:
		if v.Kind() == reflect.Slice {
			d.add(path, "len %d nil=%t", v.Len(), v.IsNil())
		}
		for i := range v.Len() {
			d.walk(fmt.Sprintf("%s[%d]", path, i), v.Index(i))
		}
	case reflect.Map:
		d.walkMap(path, v)
	case reflect.Struct:
		for i := range v.NumField() {
			if f := v.Type().Field(i); f.Type != reflect.TypeFor[*upstream.Forwarder]() {
				d.walk(path+"."+f.Name, v.Field(i))
			}
		}
	default:
		d.add(path, "unhandled kind %s", v.Kind())
	}
}

func (d *dumper) walkRef(path string, v reflect.Value) {
	if v.Type() == reflect.TypeFor[*time.Location]() {
		d.add(path, "location")
		return
	}
	if v.IsNil() {
		d.add(path, "nil")
		return
	}
	if v.Kind() == reflect.Interface {
		d.add(path, "%s", v.Elem().Type())
		d.walk(path, v.Elem())
		return
	}
	if first, ok := d.seen[v.Pointer()]; ok {
		d.add(path, "same as %s", first)
		return
	}
	d.seen[v.Pointer()] = path
	d.walk(path, v.Elem())
}

// walkMap dumps a map's entries in the order of their keys' dumps.
func (d *dumper) walkMap(path string, v reflect.Value) {
	d.add(path, "len %d nil=%t", v.Len(), v.IsNil())
	type entry struct {
		key string
		v   reflect.Value
	}
	var entries []entry
	it := v.MapRange()
	for it.Next() {
		kd := &dumper{seen: map[uintptr]string{}}
		kd.walk("", it.Key())
		entries = append(entries, entry{strings.Join(kd.lines, ","), it.Value()})
	}
	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.key, b.key) })
	for _, e := range entries {
		d.walk(fmt.Sprintf("%s[%s]", path, e.key), e.v)
	}
}
