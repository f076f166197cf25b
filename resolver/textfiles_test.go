package resolver

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
)

// bom is the UTF-8 byte-order mark Windows editors put first in a file.
const bom = "\ufeff"

// windowsEncodings turn a file's lines into its bytes the ways a file saved
// on Windows differs from a plain one.
var windowsEncodings = []struct {
	name   string
	encode func(text string) string // text: LF-separated lines
}{
	{name: "BOM", encode: func(s string) string { return bom + s }},
	{name: "CRLF", encode: func(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }},
	{name: "BOM and CRLF", encode: func(s string) string { return bom + strings.ReplaceAll(s, "\n", "\r\n") }},
}

// bomConfig names one list in each accepted form and a client range file,
// with no other range for the policy: every entry and the range sit on the
// first line of their file, after the byte-order mark.
const bomConfig = `listen: ["127.0.0.1:0"]
upstreams: {{upstreams}}
allowed_clients: ["127.0.0.0/8", "::1/128"]
log: {queries: none}
policies:
  - name: gov
    client_files: ["networks/gov.txt"]
    block: ["lists/plain.txt", "lists/hosts.txt", "lists/wildcard.txt", "lists/dot.txt", "lists/adblock.txt"]
`

var bomFiles = map[string]string{
	"networks/gov.txt":   "127.0.0.0/24\n# more below\n::1/128\n",
	"lists/plain.txt":    "tiktok.com\ntiktokv.com\n",
	"lists/hosts.txt":    "0.0.0.0 capcut.com\n0.0.0.0 lemon8-app.com # B\n",
	"lists/wildcard.txt": "*.byteoversea.com\n",
	"lists/dot.txt":      ".ibytedtos.com\n",
	"lists/adblock.txt":  "||pangle.io^\n! comment\n",
}

// TestFilesWithBOMAndCRLFBlock serves a configuration, lists in every form
// and a client range file, all saved the Windows way, and checks over a
// real socket that a device in the range on the byte-order mark's line gets
// NXDOMAIN for the entry on each list's byte-order mark line: nothing is
// skipped and nothing is reported.
func TestFilesWithBOMAndCRLFBlock(t *testing.T) {
	up := startUpstream(t, nil)
	for _, enc := range windowsEncodings {
		t.Run(enc.name, func(t *testing.T) {
			files := map[string]string{}
			for name, content := range bomFiles {
				files[name] = enc.encode(content)
			}
			// startFence requires a snapshot without warnings.
			f := startFence(t, enc.encode(bomConfig), files, up.addr)
			for _, name := range []string{"www.tiktok.com.", "tiktokv.com.", "capcut.com.", "lemon8-app.com.",
				"a.byteoversea.com.", "ibytedtos.com.", "x.pangle.io."} {
				r := ask(t, f.addr, "127.0.0.9", "udp", question(name, dns.TypeA, true))
				assert.Equal(t, dns.RcodeNameError, r.Rcode, name)
				assert.Empty(t, r.Answer, name)
				require.Len(t, r.Ns, 1, name)
				assert.IsType(t, &dns.SOA{}, r.Ns[0], name)
				require.NotNil(t, ede(r), name)
				assert.Equal(t, dns.ExtendedErrorCodeBlocked, ede(r).InfoCode, name)
			}
			r := ask(t, f.addr, "127.0.0.9", "udp", question("example.org.", dns.TypeA, false))
			assert.Equal(t, dns.RcodeSuccess, r.Rcode, "other names are forwarded")
			require.Len(t, r.Answer, 1)
			r = ask(t, f.addr, "127.0.1.9", "udp", question("tiktok.com.", dns.TypeA, false))
			assert.Equal(t, dns.RcodeSuccess, r.Rcode, "outside the range: forwarded")

			snap := f.handler.Snapshot()
			cr, ok := snap.PolicyFor(netipMustParse("127.0.0.9"))
			require.True(t, ok)
			assert.Equal(t, 1, cr.Range.Line, "the range is on line 1")
			raw, err := os.ReadFile(filepath.Join(f.dir, "lists/plain.txt"))
			require.NoError(t, err)
			sum := sha256.Sum256(raw)
			assert.Equal(t, hex.EncodeToString(sum[:]), snap.Lists[filepath.Join(f.dir, "lists/plain.txt")].Hash(), "list_sha256 is of the raw bytes")
		})
	}
}

// TestConfigWithBOMAndCRLFReportsLines checks that errors in a
// configuration saved the Windows way name the right line and key.
func TestConfigWithBOMAndCRLFReportsLines(t *testing.T) {
	for _, enc := range windowsEncodings {
		t.Run(enc.name, func(t *testing.T) {
			dir := testnet.WriteTree(t, map[string]string{"l.txt": "tiktok.com\n"})
			path := filepath.Join(dir, "c.yaml")
			require.NoError(t, os.WriteFile(path, []byte(enc.encode(
				"upstreams: [\"127.0.0.1:53\"]\npolicies:\n  - name: gov\n    clients: [\"10.0.0.0/33\"]\n    block: [l.txt]\nbogus: 1\n")), 0o644))
			_, err := config.Load(path)
			require.Error(t, err)
			assert.Contains(t, err.Error(), path+`:6: unknown key "bogus"`)
			assert.Contains(t, err.Error(), path+":4: ")
			assert.NotContains(t, err.Error(), "\r")
			assert.NotContains(t, err.Error(), bom)
		})
	}
}

// TestResolvConfWithBOMAndCRLF reads upstreams from a resolv.conf saved
// the Windows way: the nameserver on the byte-order mark's line counts.
func TestResolvConfWithBOMAndCRLF(t *testing.T) {
	for _, enc := range windowsEncodings {
		t.Run(enc.name, func(t *testing.T) {
			conf := filepath.Join(t.TempDir(), "resolv.conf")
			require.NoError(t, os.WriteFile(conf, []byte(enc.encode("nameserver 127.0.0.53\n# x\nnameserver ::1\n")), 0o644))
			cfg := &config.Config{Listen: []string{"127.0.0.1:5353"}, Upstreams: []string{conf}}
			got, err := cfg.ResolveUpstreams()
			require.NoError(t, err)
			assert.Equal(t, []string{"127.0.0.53:53", "[::1]:53"}, got)
		})
	}
}

// rangeFileConfig has one policy whose only clients are in gov.txt, and
// one list, tiktok.txt; {{upstreams}} is replaced.
const rangeFileConfig = `listen: ["127.0.0.1:0"]
upstreams: {{upstreams}}
allowed_clients: ["127.0.0.0/8"]
log: {queries: none}
policies:
  - name: gov
    client_files: ["gov.txt"]
    block: ["tiktok.txt"]
`

// TestRangeFileWithNoUsableRange checks that a client range file that
// yields no range is an error that names the file (and its first bad
// line), at start and at reload (which keeps the last good state): one of
// bad lines only whatever else the policy holds (a web page saved under
// its name: its devices would be in no policy), one with no lines at all
// for a policy with no other range.
func TestRangeFileWithNoUsableRange(t *testing.T) {
	conf := rangeFileConfig
	bad := []struct {
		name    string
		content string
		err     error
		want    []string // in the error
	}{
		{name: "bad lines only", content: "10.0.0.0/33\r\n127.0.0.1/8\n", err: ErrOnlyBadLines,
			want: []string{`gov.txt: not one entry could be read, only 2 bad lines, the first `,
				`gov.txt:1: prefix length /33 is longer than an IPv4 address (at most /32): "10.0.0.0/33"; refusing it`}},
		{name: "comments only", content: "# to be filled in\n\n", err: ErrNoClientRanges,
			want: []string{`gov.txt: no usable client range for policy "gov", which has no other range: it would apply to no device (the file holds no ranges)`}},
		{name: "empty", content: "", err: ErrNoClientRanges,
			want: []string{`gov.txt: no usable client range for policy "gov"`}},
	}
	up := startUpstream(t, nil)
	for _, tc := range bad {
		t.Run("start/"+tc.name, func(t *testing.T) {
			dir := testnet.WriteTree(t, map[string]string{"gov.txt": tc.content, "tiktok.txt": "tiktok.com\n",
				"c.yaml": strings.ReplaceAll(conf, "{{upstreams}}", `["`+up.addr+`"]`)})
			cfg, err := config.Load(filepath.Join(dir, "c.yaml"))
			require.NoError(t, err)
			_, err = BuildSnapshot(cfg, nil)
			require.ErrorIs(t, err, tc.err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), filepath.Join(dir, w))
			}
		})
		t.Run("reload/"+tc.name, func(t *testing.T) {
			f := startFence(t, conf, map[string]string{"gov.txt": "127.0.0.0/24\n", "tiktok.txt": "tiktok.com\n"}, up.addr)
			r := NewReloader(zaptest.NewLogger(t), f.handler, func() (*config.Config, error) {
				return config.Load(filepath.Join(f.dir, "dnsfence.yaml"))
			})
			writeAtomic(t, filepath.Join(f.dir, "gov.txt"), tc.content)
			err := r.Reload(true) // even SIGHUP refuses it
			require.ErrorIs(t, err, tc.err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), filepath.Join(f.dir, w))
			}
			assert.False(t, r.Status().OK)
			assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.0.0.9", "tiktok.com."), "the last good ranges still apply")
		})
	}
	t.Run("another range in the policy: bad lines only still refused", func(t *testing.T) {
		dir := testnet.WriteTree(t, map[string]string{"gov.txt": "10.0.0.0/33\n", "more.txt": "127.0.0.0/24\n", "tiktok.txt": "tiktok.com\n",
			"c.yaml": strings.ReplaceAll(strings.Replace(conf, `["gov.txt"]`, `["gov.txt", "more.txt"]`, 1), "{{upstreams}}", `["`+up.addr+`"]`)})
		cfg, err := config.Load(filepath.Join(dir, "c.yaml"))
		require.NoError(t, err)
		_, err = BuildSnapshot(cfg, nil)
		require.ErrorIs(t, err, ErrOnlyBadLines)
	})
	t.Run("a bad line beside a range: a warning", func(t *testing.T) {
		dir := testnet.WriteTree(t, map[string]string{"gov.txt": "10.0.0.0/33\n127.0.0.0/24\n", "tiktok.txt": "tiktok.com\n",
			"c.yaml": strings.ReplaceAll(conf, "{{upstreams}}", `["`+up.addr+`"]`)})
		cfg, err := config.Load(filepath.Join(dir, "c.yaml"))
		require.NoError(t, err)
		snap, err := BuildSnapshot(cfg, nil)
		require.NoError(t, err)
		require.Len(t, snap.Warnings, 1)
		assert.EqualError(t, snap.Warnings[0], filepath.Join(dir, "gov.txt")+`:1: prefix length /33 is longer than an IPv4 address (at most /32): "10.0.0.0/33"`)
		_, ok := snap.PolicyFor(netipMustParse("127.0.0.9"))
		assert.True(t, ok)
	})
	t.Run("the file fixed, the reload applies", func(t *testing.T) {
		f := startFence(t, conf, map[string]string{"gov.txt": "127.0.0.0/24\n", "tiktok.txt": "tiktok.com\n"}, up.addr)
		r := NewReloader(zaptest.NewLogger(t), f.handler, func() (*config.Config, error) {
			return config.Load(filepath.Join(f.dir, "dnsfence.yaml"))
		})
		// Written by a Windows editor: a byte-order mark and CRLF. (A
		// file whose range moved elsewhere instead would be held: its
		// devices would lose their policy.)
		writeAtomic(t, filepath.Join(f.dir, "gov.txt"), bom+"127.0.0.0/24\r\n127.0.1.0/24\r\n")
		require.NoError(t, r.Reload(false))
		assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.0.1.9", "tiktok.com."))
		assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.0.0.9", "tiktok.com."))
		assert.Equal(t, dns.RcodeSuccess, rcodeOf(t, f.addr, "127.0.2.9", "tiktok.com."))
	})
}

// TestConfigSyntaxErrorWithBOMAndCRLF: a syntax error in a configuration
// saved the Windows way gets the same message as in the plain file (a CR
// left at the end of a line read as text after a quoted value).
func TestConfigSyntaxErrorWithBOMAndCRLF(t *testing.T) {
	for _, src := range []string{
		"upstreams: [\"127.0.0.1:53\"]\nlog:\n  level: info\n format: \"json\"\n",
		"upstreams: [\"127.0.0.1:53\"]\npolicies:\n  - name: x\n  action: \"log\"\n",
	} {
		_, plain := config.Parse("c.yaml", []byte(src), nil)
		require.Error(t, plain)
		for _, enc := range windowsEncodings {
			t.Run(enc.name, func(t *testing.T) {
				_, err := config.Parse("c.yaml", []byte(enc.encode(src)), nil)
				require.Error(t, err)
				assert.Equal(t, plain.Error(), err.Error())
			})
		}
	}
}

// utf16LE is s in UTF-16, little-endian as Windows saves "Unicode", with
// its byte-order mark when bom is set.
func utf16LE(s string, bom bool) string {
	var b []byte
	if bom {
		b = append(b, 0xFF, 0xFE)
	}
	for _, u := range utf16.Encode([]rune(s)) {
		b = binary.LittleEndian.AppendUint16(b, u)
	}
	return string(b)
}

// gzipText is s compressed as `gzip` writes it.
func gzipText(t *testing.T, s string) string {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	_, err := w.Write([]byte(s))
	require.NoError(t, err)
	require.NoError(t, w.Close())
	return b.String()
}

// TestUTF16FilesAreRefused: a list or a client range file saved as UTF-16
// (or anything else with a NUL octet) would read as lines that are all
// invalid, so a list would load empty and block nothing; so would a
// compressed one, named so. It is an error
// that names the file and the line, at start and at reload, which keeps
// the last good state: the devices stay blocked.
func TestUTF16FilesAreRefused(t *testing.T) {
	conf := rangeFileConfig
	good := map[string]string{"gov.txt": "127.0.0.0/24\n", "tiktok.txt": "tiktok.com\n"}
	up := startUpstream(t, nil)
	for _, tc := range []struct {
		name, file, content, want string
	}{
		{"list in UTF-16 with a byte-order mark", "tiktok.txt", utf16LE("tiktok.com\r\n", true), "tiktok.txt:1: not UTF-8 text: it starts with the byte-order mark FF FE"},
		{"list in UTF-16 without a byte-order mark", "tiktok.txt", utf16LE("tiktok.com\n", false), "tiktok.txt:1: not UTF-8 text: a NUL octet"},
		{"list with a NUL octet on line 2", "tiktok.txt", "tiktok.com\ncapcut\x00.com\n", "tiktok.txt:2: not UTF-8 text: a NUL octet"},
		{"range file in UTF-16", "gov.txt", utf16LE("127.0.0.0/24\r\n", true), "gov.txt:1: not UTF-8 text"},
		{"big-endian UTF-16 list", "tiktok.txt", "\xFE\xFF\x00t", "tiktok.txt:1: not UTF-8 text: it starts with the byte-order mark FE FF"},
		// Saved as downloaded (list.txt.gz under the list's name): named,
		// not "a NUL octet" or lines of invalid UTF-8.
		{"list compressed with gzip", "tiktok.txt", gzipText(t, "tiktok.com\n"), "tiktok.txt:1: not UTF-8 text: it is a gzip file (it starts 1F 8B 08 00); decompress it"},
		{"list compressed with bzip2, no NUL octet", "tiktok.txt", "BZh91AY&SY\x8a\x16\xc0\x01\xff\xfe\nx\n", "tiktok.txt:1: not UTF-8 text: it is a bzip2 file"},
		{"range file compressed with gzip", "gov.txt", gzipText(t, "127.0.0.0/24\n"), "gov.txt:1: not UTF-8 text: it is a gzip file"},
	} {
		t.Run("start/"+tc.name, func(t *testing.T) {
			files := map[string]string{"c.yaml": strings.ReplaceAll(conf, "{{upstreams}}", `["`+up.addr+`"]`)}
			for k, v := range good {
				files[k] = v
			}
			files[tc.file] = tc.content
			dir := testnet.WriteTree(t, files)
			cfg, err := config.Load(filepath.Join(dir, "c.yaml"))
			require.NoError(t, err)
			_, err = BuildSnapshot(cfg, nil)
			require.ErrorIs(t, err, blocklist.ErrNotText)
			assert.Contains(t, err.Error(), filepath.Join(dir, tc.want))
		})
		t.Run("reload/"+tc.name, func(t *testing.T) {
			f := startFence(t, conf, good, up.addr)
			r := NewReloader(zaptest.NewLogger(t), f.handler, func() (*config.Config, error) {
				return config.Load(filepath.Join(f.dir, "dnsfence.yaml"))
			})
			writeAtomic(t, filepath.Join(f.dir, tc.file), tc.content)
			err := r.Reload(true) // even SIGHUP refuses it
			require.ErrorIs(t, err, blocklist.ErrNotText)
			assert.False(t, r.Status().OK)
			assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.0.0.9", "tiktok.com."), "the last good state still applies")
		})
	}
	t.Run("configuration in UTF-16", func(t *testing.T) {
		dir := testnet.WriteTree(t, map[string]string{"c.yaml": utf16LE(strings.ReplaceAll(conf, "{{upstreams}}", `["`+up.addr+`"]`), true)})
		_, err := config.Load(filepath.Join(dir, "c.yaml"))
		require.ErrorIs(t, err, blocklist.ErrNotText)
		assert.Contains(t, err.Error(), "c.yaml:1: not UTF-8 text")
	})
}

// htmlPage is a web page saved under a list's name (`curl -o` of the page
// that shows the list): three lines, not one entry.
const htmlPage = "<!DOCTYPE html>\n<html><head><title>tiktok.txt · lists</title></head>\n<body><pre>tiktok.com</pre></body></html>\n"

// onlyBadLinesConfig is rangeFileConfig with an RPZ block list beside
// tiktok.txt and an allow list.
var onlyBadLinesConfig = strings.Replace(rangeFileConfig, `block: ["tiktok.txt"]`,
	"block: [\"tiktok.txt\", \"capcut.rpz\"]\n    allow: [\"allow.txt\"]", 1)

// TestListOfOnlyBadLinesIsRefused: a list file that has lines but not one
// entry could be read of them (an HTML page saved as the list, a file of
// another format) would load as an empty list that blocks nothing while
// dnsfence reports itself ready. It is an error naming the file, how many
// bad lines it has and the first, at start and at reload, SIGHUP too,
// which keeps the last good state: the rule a URL's copy has. Block and
// allow lists alike. A file with no lines or only comments is an empty
// list, and one entry among bad lines leaves warnings only.
func TestListOfOnlyBadLinesIsRefused(t *testing.T) {
	conf := onlyBadLinesConfig
	good := map[string]string{"gov.txt": "127.0.0.0/24\n", "tiktok.txt": "tiktok.com\n",
		"capcut.rpz": rpzHead + "capcut.com CNAME .\n", "allow.txt": "ads.tiktok.com\n"}
	up := startUpstream(t, nil)
	with := func(file, content string) map[string]string {
		files := map[string]string{"c.yaml": strings.ReplaceAll(conf, "{{upstreams}}", `["`+up.addr+`"]`)}
		for k, v := range good {
			files[k] = v
		}
		files[file] = content
		return files
	}
	for _, tc := range []struct {
		name, file, content string
		bad                 int    // bad lines
		first               string // the first, after file:
	}{
		{name: "block list saved as a web page", file: "tiktok.txt", content: htmlPage,
			bad: 3, first: `1: unexpected text after the entry: "html>"`},
		{name: "RPZ zone of unsupported records", file: "capcut.rpz", content: rpzHead + "capcut.com A 192.0.2.1\n*.capcut.com A 192.0.2.1\n",
			bad: 2, first: "5: capcut.com.rpz.example.gov.: local data is not supported"},
		{name: "allow list of exception rules", file: "allow.txt", content: "@@||ads.tiktok.com^\n",
			bad: 1, first: `1: exception rules (@@) are not supported (to allow ads.tiktok.com and the names below it, write ads.tiktok.com in a list under a policy's allow, unless an $important rule of this list covers it, which ranks above the exception): "@@||ads.tiktok.com^"`},
	} {
		want := func(dir string) string {
			path := filepath.Join(dir, tc.file)
			lines := "bad lines"
			if tc.bad == 1 {
				lines = "bad line"
			}
			return fmt.Sprintf("reading list: %s: not one entry could be read, only %d %s, the first %s:%s", path, tc.bad, lines, path, tc.first)
		}
		t.Run("start/"+tc.name, func(t *testing.T) {
			dir := testnet.WriteTree(t, with(tc.file, tc.content))
			cfg, err := config.Load(filepath.Join(dir, "c.yaml"))
			require.NoError(t, err)
			_, err = BuildSnapshot(cfg, nil)
			require.ErrorIs(t, err, ErrOnlyBadLines)
			assert.Contains(t, err.Error(), want(dir))
			if strings.HasPrefix(tc.content, "<") {
				assert.Contains(t, err.Error(), `(it starts with "<!DOCTYPE html>\n<htm": a web page saved in place of the list? save the raw list)`)
			} else {
				assert.NotContains(t, err.Error(), "web page")
			}
		})
		t.Run("reload/"+tc.name, func(t *testing.T) {
			f := startFence(t, conf, good, up.addr)
			r := NewReloader(zaptest.NewLogger(t), f.handler, func() (*config.Config, error) {
				return config.Load(filepath.Join(f.dir, "dnsfence.yaml"))
			})
			writeAtomic(t, filepath.Join(f.dir, tc.file), tc.content)
			err := r.Reload(false)
			require.ErrorIs(t, err, ErrOnlyBadLines)
			assert.NotErrorIs(t, err, ErrHeld, "a failure, not a change SIGHUP applies")
			assert.Contains(t, err.Error(), want(f.dir))
			require.ErrorIs(t, r.Reload(true), ErrOnlyBadLines, "SIGHUP refuses it too")
			st := r.Status()
			assert.False(t, st.OK)
			assert.EqualValues(t, 2, st.Failures)
			v, _ := metricValue(t, f.registry, "dnsfence_reloads_total", "result", "failure")
			assert.Equal(t, 2.0, v)
			assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.0.0.9", "www.tiktok.com."), "the last good state still applies")
			assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.0.0.9", "capcut.com."))
			assert.Equal(t, dns.RcodeSuccess, rcodeOf(t, f.addr, "127.0.0.9", "ads.tiktok.com."))

			writeAtomic(t, filepath.Join(f.dir, tc.file), good[tc.file])
			require.NoError(t, r.Reload(false), "the fix applies")
		})
	}
	for _, tc := range []struct {
		name, file, content string
		warnings            int
	}{
		{name: "empty block list", file: "tiktok.txt", content: ""},
		{name: "block list of comments only", file: "tiktok.txt", content: "# to be filled in\n\n! Adblock comment\n[Adblock Plus 2.0]\n"},
		{name: "empty allow list", file: "allow.txt", content: "# none yet\n"},
		{name: "RPZ zone with no trigger", file: "capcut.rpz", content: rpzHead},
		{name: "one entry among bad lines", file: "tiktok.txt", content: htmlPage + "tiktok.com\n", warnings: 1},
	} {
		t.Run("accepted/"+tc.name, func(t *testing.T) {
			dir := testnet.WriteTree(t, with(tc.file, tc.content))
			cfg, err := config.Load(filepath.Join(dir, "c.yaml"))
			require.NoError(t, err)
			snap, err := BuildSnapshot(cfg, nil)
			require.NoError(t, err)
			assert.Len(t, snap.Warnings, tc.warnings)
		})
	}
}
