package blocklist

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// encodings are the ways a file saved on Windows (or joined from such
// files) differs from a plain one: each turns the lines of a file into its
// bytes.
var encodings = []struct {
	name   string
	encode func(lines []string) string
}{
	{name: "LF", encode: func(l []string) string { return strings.Join(l, "\n") + "\n" }},
	{name: "BOM", encode: func(l []string) string { return byteOrderMark + strings.Join(l, "\n") + "\n" }},
	{name: "CRLF", encode: func(l []string) string { return strings.Join(l, "\r\n") + "\r\n" }},
	{name: "BOM and CRLF", encode: func(l []string) string { return byteOrderMark + strings.Join(l, "\r\n") + "\r\n" }},
	{name: "BOM and CRLF, no final line end", encode: func(l []string) string { return byteOrderMark + strings.Join(l, "\r\n") }},
	{name: "joined files, each with its BOM", encode: func(l []string) string {
		return byteOrderMark + l[0] + "\r\n" + byteOrderMark + strings.Join(l[1:], "\r\n") + "\r\n"
	}},
}

// TestListsWithBOMAndCRLF parses every list form with the entry on the
// first line, after the byte-order mark, in every encoding: each line loads
// with its line number, nothing is reported, and the hash is the raw
// file's.
func TestListsWithBOMAndCRLF(t *testing.T) {
	forms := []struct {
		name  string
		lines []string
		want  []string // entries, in file order; all on lines 1 and 3
	}{
		{name: "plain", lines: []string{"tiktok.com", "# comment", "tiktokv.com"}, want: []string{"tiktok.com", "tiktokv.com"}},
		{name: "hosts", lines: []string{"0.0.0.0 tiktok.com", "", "0.0.0.0 tiktokv.com www.tiktokv.com"},
			want: []string{"tiktok.com", "tiktokv.com", "www.tiktokv.com"}},
		{name: "hosts with a trailing comment", lines: []string{"0.0.0.0 tiktok.com # A", "  ", "::\ttiktokv.com  # B"},
			want: []string{"tiktok.com", "tiktokv.com"}},
		{name: "wildcard", lines: []string{"*.tiktok.com", "# *.x", "*.tiktokv.com"}, want: []string{"tiktok.com", "tiktokv.com"}},
		{name: "leading dot", lines: []string{".tiktok.com", "# .x", ".tiktokv.com"}, want: []string{"tiktok.com", "tiktokv.com"}},
		{name: "adblock", lines: []string{"||tiktok.com^", "! Title: x", "||tiktokv.com^"}, want: []string{"tiktok.com", "tiktokv.com"}},
		{name: "unicode", lines: []string{"TikTok.com.", "", "bücher.example"}, want: []string{"tiktok.com", "xn--bcher-kva.example"}},
	}
	for _, form := range forms {
		for _, enc := range encodings {
			t.Run(form.name+"/"+enc.name, func(t *testing.T) {
				data := []byte(enc.encode(form.lines))
				l, err := Parse("lists/tiktok.txt", data)
				require.NoError(t, err)
				var got []string
				var lines []int
				for e := range l.All() {
					got = append(got, e.Name)
					lines = append(lines, e.Line)
				}
				assert.Equal(t, form.want, got)
				assert.Equal(t, 1, lines[0], "the entry after the byte-order mark is on line 1")
				assert.Equal(t, 3, lines[len(lines)-1])
				assert.Equal(t, sha256.Sum256(data), l.Sum(), "the hash is of the raw bytes")
				e, ok := l.Match("www.TikTok.com.")
				assert.True(t, ok)
				assert.Equal(t, 1, e.Line)
			})
		}
	}
}

// TestRangesWithBOMAndCRLF parses a client range file whose first range
// is on the byte-order mark's line, in every encoding, and through
// LoadRanges from disk.
func TestRangesWithBOMAndCRLF(t *testing.T) {
	lines := []string{"127.0.0.0/24", "# press office elsewhere", "2001:db8::/32 # v6"}
	for _, enc := range encodings {
		t.Run(enc.name, func(t *testing.T) {
			data := []byte(enc.encode(lines))
			path := filepath.Join(t.TempDir(), "gov.txt")
			require.NoError(t, os.WriteFile(path, data, 0o644))
			rf, err := LoadRanges(path, "networks/gov.txt")
			require.NoError(t, err)
			var got []string
			for _, r := range rf.Ranges {
				got = append(got, fmt.Sprintf("%s@%s:%d", r.Prefix, r.File, r.Line))
			}
			assert.Equal(t, []string{"127.0.0.0/24@networks/gov.txt:1", "2001:db8::/32@networks/gov.txt:3"}, got)
			assert.Equal(t, sha256.Sum256(data), rf.Sum, "the hash is of the raw bytes")
		})
	}
}

// TestLoadFileWithBOMAndCRLF reads a hosts-format list from disk, the
// reported case: `<BOM>0.0.0.0 tiktok.com` was rejected and not blocked.
func TestLoadFileWithBOMAndCRLF(t *testing.T) {
	for _, enc := range encodings {
		t.Run(enc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "hosts.txt")
			require.NoError(t, os.WriteFile(path, []byte(enc.encode([]string{"0.0.0.0 tiktok.com", "0.0.0.0 capcut.com"})), 0o644))
			l, err := LoadFile(path, "lists/hosts.txt")
			require.NoError(t, err)
			e, ok := l.Match("tiktok.com")
			require.True(t, ok)
			assert.Equal(t, 1, e.Line)
			assert.Equal(t, 2, l.Len())
		})
	}
}

// TestBadLinesWithBOMAndCRLF checks that errors in such files name the
// line and the token without a stray byte-order mark or carriage return.
func TestBadLinesWithBOMAndCRLF(t *testing.T) {
	data := byteOrderMark + "bad..example\r\ngood.example\r\n10.0.0.1\r\n"
	_, err := Parse("lists/x.txt", []byte(data))
	assert.EqualError(t, err, "lists/x.txt:1: empty label: \"bad..example\"\n"+
		`lists/x.txt:3: an address alone is not a domain name (to block the answers that hold 10.0.0.1, as Blocky reads an address in a denylist, write "32.1.0.0.10.rpz-ip CNAME ." in a policy zone, a file ending .rpz; "CNAME rpz-passthru." there lets them through): "10.0.0.1"`)
	_, err = ParseRanges("networks/gov.txt", []byte(byteOrderMark+"10.0.0.0/33\r\n"))
	assert.EqualError(t, err, `networks/gov.txt:1: prefix length /33 is longer than an IPv4 address (at most /32): "10.0.0.0/33"`)
}

func TestLines(t *testing.T) {
	tests := []struct {
		name string
		data string
		want []string
	}{
		{name: "empty", data: "", want: nil},
		{name: "no final line end", data: "a\nb", want: []string{"1:a", "2:b"}},
		{name: "CRLF", data: "a\r\n\r\nb\r\n", want: []string{"1:a", "2:", "3:b"}},
		{name: "BOM only", data: byteOrderMark, want: []string{"1:"}},
		{name: "BOM then CRLF", data: byteOrderMark + "\r\na\r\n", want: []string{"1:", "2:a"}},
		{name: "lone CR inside a line is kept", data: "a\rb\n", want: []string{"1:a\rb"}},
		{name: "BOM of a joined part", data: "a\n" + byteOrderMark + "b\n", want: []string{"1:a", "2:b"}},
		{name: "BOM inside a line is kept", data: "a" + byteOrderMark + "b\n", want: []string{"1:a" + byteOrderMark + "b"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for n, line := range Lines(tc.data) {
				got = append(got, fmt.Sprintf("%d:%s", n, line))
			}
			assert.Equal(t, tc.want, got)
		})
	}
	assert.Equal(t, []byte("a: 1\r\n"), Text([]byte(byteOrderMark+"a: 1\r\n")))
	assert.Equal(t, []byte("a"+byteOrderMark), Text([]byte("a"+byteOrderMark)))
	assert.True(t, slices.Equal([]byte(nil), Text(nil)))
}

// gzipped is s compressed with gzip, as `gzip` writes it.
func gzipped(s string) string {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Write([]byte(s))
	w.Close()
	return b.String()
}

func TestCheckText(t *testing.T) {
	for _, tc := range []struct {
		name, data, want string // want: "" for text
	}{
		{"empty", "", ""},
		{"plain", "tiktok.com\n", ""},
		{"UTF-8 byte-order mark and CRLF", "\ufefftiktok.com\r\n", ""},
		{"UTF-8 beyond ASCII", "# Bücher\ntiktok.com\n", ""},
		{"UTF-16LE mark", "\xFF\xFEt\x00", "list.txt:1: not UTF-8 text: it starts with the byte-order mark FF FE"},
		{"UTF-16BE mark", "\xFE\xFF\x00t", "list.txt:1: not UTF-8 text: it starts with the byte-order mark FE FF"},
		{"UTF-32BE mark", "\x00\x00\xFE\xFF", "list.txt:1: not UTF-8 text: it starts with the byte-order mark 00 00 FE FF"},
		{"NUL on line 3", "a.example\nb.example\nc\x00.example\n", "list.txt:3: not UTF-8 text: a NUL octet"},
		// A list saved compressed, as downloaded, is named so, before
		// its NUL octets or invalid UTF-8 are (a bzip2 file may hold
		// none: each of its lines would have been a bad line).
		{"gzip", gzipped("tiktok.com\n"), "list.txt:1: not UTF-8 text: it is a gzip file (it starts 1F 8B 08 00); decompress it"},
		{"zip", "PK\x03\x04\x14\x00\x00\x00\x08\x00", "list.txt:1: not UTF-8 text: it is a zip file (it starts 50 4B 03 04)"},
		{"xz", "\xfd7zXZ\x00\x00\x04", "it is a xz file"},
		{"zstd", "\x28\xb5\x2f\xfd\x04\x58\x59", "it is a zstd file"},
		{"7-Zip", "7z\xbc\xaf\x27\x1c\x00\x04", "it is a 7-Zip file"},
		{"bzip2 with no NUL octet", "BZh91AY&SY\x8a\x16\xc0\x01\xff\xfe\nx\n", "list.txt:1: not UTF-8 text: it is a bzip2 file (it starts 42 5A 68 39)"},
		{"bzip2's end of stream", "BZh9\x17\x72\x45\x38\x50\x90\x00\x00\x00\x00", "it is a bzip2 file"},
		{"bzip2's end of stream, its ten first octets", "BZh9\x17\x72\x45\x38\x50\x90", "it is a bzip2 file"},
		{"bzip2 of the smallest block size", "BZh1\x17\x72\x45\x38\x50\x90", "it is a bzip2 file"},
		// bzip2's magic is `BZh`, a block size from 1 to 9 and a block's
		// or the end's six octets: anything else is no bzip2 file
		// (CheckText refuses such data only for a NUL octet in it).
		{"bzip2's end after a block size 0", "BZh0\x17\x72\x45\x38\x50\x90", ""},
		{"bzip2's end after a block size that is no digit", "BZh:\x17\x72\x45\x38\x50\x90", ""},
		{"bzip2's end after no BZh", "BZx5\x17\x72\x45\x38\x50\x90", ""},
		{"bzip2's end but its sixth octet", "BZh9\x17\x72\x45\x38\x50\x91", ""},
		// Text that starts as a format does is text.
		{"text starting BZh", "BZhotel.example\ntiktok.com\n", ""},
		{"text that is bzip2's magic", "BZh91AY&SY.example\n", ""},
		{"text starting PK and 3, 4", "PK\x03\x04.example\n", ""},
		// A file's first octets (ReadList's first piece) cut inside a
		// character are still text.
		{"first octets cut in a character", "PK\x03\x04b\u00fccher.example"[:6], ""},
		{"first octets cut in a four-octet character", "PK\x03\x04\U0001F600"[:7], ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckText("list.txt", []byte(tc.data))
			if tc.want == "" {
				assert.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrNotText)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// TestInvalidUTF8: the offset of the first octet that starts no valid
// UTF-8 sequence, the first octet of the data too, or -1.
func TestInvalidUTF8(t *testing.T) {
	for _, tc := range []struct {
		data string
		want int
	}{
		{"", -1},
		{"tiktok.com\n", -1},
		{"b\u00fccher.example", -1},
		{"\xfftiktok.com", 0},
		{"tiktok\x80.com", 6},
		{"caf\xe9.example", 3},
		{"\u00fc\xc3", 2}, // a character cut at the end
	} {
		assert.Equal(t, tc.want, InvalidUTF8([]byte(tc.data)), "%q", tc.data)
	}
}

// TestMarkup: the start of an HTML or XML page (at most 20 octets, after
// white space and a byte-order mark), '<' then a letter, '!' or '?'; ""
// for what no page starts with.
func TestMarkup(t *testing.T) {
	for _, tc := range []struct{ data, want string }{
		{"<!DOCTYPE html><html><head>", "<!DOCTYPE html><html"},
		{"\ufeff\r\n  <html>", "<html>"},
		{"<?xml version=\"1.0\"?>", "<?xml version=\"1.0\"?"},
		{"<HTML>", "<HTML>"},
		{"<a", "<a"},
		{"<z", "<z"},
		{"<", ""},
		{"<1", ""},
		{"<[", ""},
		{"<@", ""},
		{"tiktok.com\n<html>", ""},
		{"", ""},
	} {
		assert.Equal(t, tc.want, Markup([]byte(tc.data)), "%q", tc.data)
	}
}
