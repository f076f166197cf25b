package blocklist

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// readTextFiles are list files whose lines, line ends, marks and errors
// fall on every side of a piece's end at the piece sizes of
// TestReadTextAsParse.
func readTextFiles() map[string][]byte {
	var many, bad, grown, shrunk, header strings.Builder
	nameOf := func(i int) string {
		return fmt.Sprintf("%s%d.tracker%d.example.com", strings.Repeat("h", i%40), i, i%13)
	}
	for i := range 3000 {
		// Names of 20 to 63 octets, a repeat of the line 3 before every
		// 7th line, CRLF every 5th, a comment every 11th.
		name := nameOf(i)
		if i%7 == 0 && i >= 3 {
			name = nameOf(i - 3)
		}
		end := "\n"
		if i%5 == 0 {
			end = "\r\n"
		}
		if i%11 == 0 {
			many.WriteString("# a comment\n")
		}
		many.WriteString(name + end)
	}
	for i := range 150 { // more bad lines than are reported one by one
		fmt.Fprintf(&bad, "ok%d.example.com\nbad..%d.example.com\n", i, i)
	}
	// Long lines first, then short ones: the estimates from the first
	// piece are too low, and the list's nodes, labels and table grow;
	// the other way round, too high, and the slack is dropped.
	long := func(i int) string {
		return fmt.Sprintf("%s.x%d.%s.example.org\n", strings.Repeat("long", 15), i, strings.Repeat("label", 12))
	}
	for i := range 400 {
		grown.WriteString(long(i))
		fmt.Fprintf(&shrunk, "a%d.io\n", i)
	}
	for i := range 4000 {
		fmt.Fprintf(&grown, "a%d.io\n", i)
		shrunk.WriteString(long(i))
	}
	// A header of comments and blank lines, with no entry in it.
	for range 300 {
		header.WriteString("# the list of the department, generated nightly\n\n")
	}
	header.WriteString(many.String())
	return map[string][]byte{
		"empty":          nil,
		"one line end":   []byte("\n"),
		"no line end":    []byte("tiktok.com\nbytedance.com"),
		"marks":          []byte(byteOrderMark + "tiktok.com\r\n" + byteOrderMark + "capcut.com\r\nlemon8-app.com\r\n"),
		"forms":          []byte("0.0.0.0 tiktok.com tiktokv.com\n127.0.0.1 localhost\n||capcut.com^\n*.byteoversea.com\n.ibytedtos.com\nhttps://www.tiktok.com/\n# c\n! adblock\n[Adblock Plus]\nbücher.example\n10.0.0.1\n"),
		"long line":      []byte("a.example\n" + strings.Repeat("x", 700) + ".example\nb.example\n" + strings.Repeat("y", 300)),
		"many":           []byte(many.String()),
		"bad lines":      []byte(bad.String()),
		"estimates grow": []byte(grown.String()),
		"estimates drop": []byte(shrunk.String()),
		"header":         []byte(header.String()),
		// Text that starts as a compressed file does is read whole, to
		// be told from one (CheckText), and parsed as it is.
		"starts as bzip2": []byte("BZh91AY&SY.example\n" + many.String()),
		"starts as zip":   []byte("PK\x03\x04.example\n" + many.String()),
	}
}

// assertSameList asserts that got, read a piece at a time, is want, the
// same file parsed whole: entries, lines, repeats, hash and bad lines.
func assertSameList(t *testing.T, want *List, wantWarn error, got *List, gotWarn error) {
	t.Helper()
	newListWant(want, wantWarn).check(t, got, gotWarn)
}

// listWant is what assertSameList holds a list to, made once for a list
// that is read many ways (TestReadTextAsParse: 75 reads of each file,
// where making it anew for each was a third of the test's time under
// -race).
type listWant struct {
	l       *List
	warn    string
	entries []string // entries(l)
	all     []Entry  // l.All()
	asked   []string // "www." + each entry's name + "."
}

func newListWant(l *List, warn error) *listWant {
	w := &listWant{l: l, warn: fmt.Sprint(warn), entries: entries(l)}
	for e := range l.All() {
		w.all = append(w.all, e)
		w.asked = append(w.asked, "www."+e.Name+".")
	}
	return w
}

// check asserts that got and gotWarn are the list and warning w was made
// of: the same entries on the same lines, duplicates, hash and warning,
// and every entry's subdomain matched on its line.
func (w *listWant) check(t *testing.T, got *List, gotWarn error) {
	t.Helper()
	assert.Equal(t, w.l.Len(), got.Len())
	assert.Equal(t, w.entries, entries(got))
	assert.Equal(t, w.l.Duplicates(), got.Duplicates())
	assert.Equal(t, w.l.Hash(), got.Hash())
	assert.Equal(t, w.warn, fmt.Sprint(gotWarn))
	for i, e := range w.all {
		if m, ok := got.Match(w.asked[i]); !ok || m.Line != e.Line {
			t.Errorf("%s matches %v, %v; want line %d", e.Name, m, ok, e.Line)
		}
	}
}

// TestReadTextAsParse reads list files a piece at a time, at piece sizes
// from 8 octets to the real one, with the size given right, none (0), too
// small, too big and negative, through readers that return short reads
// or the end with the last octets, and asserts each gives the list that
// Parse gives for the file read whole.
func TestReadTextAsParse(t *testing.T) {
	for name, data := range readTextFiles() {
		want, wantWarn := Parse("l.txt", data)
		if name == "many" {
			require.Len(t, want.Duplicates(), 3000/7, "a repeat every 7th line")
		}
		w := newListWant(want, wantWarn)
		for _, piece := range []int{8, 13, 64, 1000, readPiece} {
			for _, size := range []int64{int64(len(data)), 0, int64(len(data)) / 2, 10 * int64(len(data)), -100} {
				readers := map[string]io.Reader{
					"whole":    bytes.NewReader(data),
					"half":     iotest.HalfReader(bytes.NewReader(data)),
					"with end": iotest.DataErrReader(bytes.NewReader(data)),
				}
				for rname, r := range readers {
					t.Run(fmt.Sprintf("%s/%d/%d/%s", name, piece, size, rname), func(t *testing.T) {
						got, gotWarn, err := readText("l.txt", r, size, piece)
						require.NoError(t, err)
						w.check(t, got, gotWarn)
					})
				}
			}
		}
	}
}

// TestReadTextRefusesWhatCheckTextRefuses: a file that is not UTF-8 text
// is refused with CheckText's error for the whole file, naming the same
// line, wherever the NUL falls among the pieces.
func TestReadTextRefusesWhatCheckTextRefuses(t *testing.T) {
	var lines strings.Builder
	for i := range 200 {
		fmt.Fprintf(&lines, "host%d.example.com\n", i)
	}
	text := lines.String()
	files := map[string][]byte{
		"UTF-16LE mark": append([]byte{0xFF, 0xFE}, "t\x00.\x00c\x00"...),
		"UTF-16BE mark": append([]byte{0xFE, 0xFF}, "\x00t\x00.\x00c"...),
		"UTF-32BE mark": append([]byte{0, 0, 0xFE, 0xFF}, "\x00\x00\x00t"...),
		"NUL first":     []byte("\x00" + text),
		"NUL at a line": []byte(text[:1000] + "\x00" + text[1000:]),
		"NUL last":      []byte(text + "tiktok.com\x00"),
		"NUL unended":   []byte(text + strings.Repeat("x", 100) + "\x00"),
		// A compressed file, named so whatever its first piece holds:
		// bzip2 with no NUL octet, its first invalid octet far in.
		"gzip":         []byte(gzipped(text)),
		"bzip2 far in": []byte("BZh91AY&SY" + text[:500] + "\xff" + text[500:]),
	}
	for name, data := range files {
		want := CheckText("l.txt", data)
		require.Error(t, want, name)
		for _, piece := range []int{8, 13, 64, 4096} {
			t.Run(fmt.Sprintf("%s/%d", name, piece), func(t *testing.T) {
				l, warn, err := readText("l.txt", iotest.HalfReader(bytes.NewReader(data)), int64(len(data)), piece)
				assert.Nil(t, l)
				assert.Nil(t, warn)
				require.ErrorIs(t, err, ErrNotText)
				assert.Equal(t, want.Error(), err.Error())
			})
		}
	}
}

// TestReadTextRefusesACompressedFileAtItsFirstPiece: a file whose first
// piece is no text (a gzip, xz, zstd or 7-Zip file, whose magic is not
// UTF-8; a zip file, whose header holds NUL octets) is refused naming its
// format from that piece, as a file with a NUL octet is: only a first
// piece that is text and starts as zip or bzip2 does is read whole to be
// told from one. Reading every such file whole, a pipe sending one was
// read to maxPipeBytes, and a list saved as a .gz file held whole in
// memory, only to be refused.
func TestReadTextRefusesACompressedFileAtItsFirstPiece(t *testing.T) {
	var lines strings.Builder
	for i := range 2000 {
		fmt.Fprintf(&lines, "host%d.example.com\n", i)
	}
	rest := lines.String()
	broken := errors.New("read past the first piece")
	for name, data := range map[string]string{
		"gzip":  gzipped(rest),
		"xz":    "\xfd7zXZ\x00\x00\x04" + rest,
		"zstd":  "\x28\xb5\x2f\xfd\x04\x58\x59" + rest,
		"7-Zip": "7z\xbc\xaf\x27\x1c\x00\x04" + rest,
		"zip":   "PK\x03\x04\x14\x00\x00\x00\x08\x00" + rest,
	} {
		t.Run(name, func(t *testing.T) {
			const piece = 4096
			require.Greater(t, len(data), piece)
			r := io.MultiReader(strings.NewReader(data[:piece]), iotest.ErrReader(broken))
			l, _, err := readText("l.txt", r, int64(len(data)), piece)
			assert.Nil(t, l)
			require.ErrorIs(t, err, ErrNotText)
			assert.Contains(t, err.Error(), "it is a "+name+" file")
		})
	}
}

// TestReadTextReadError: a read that fails is the error, and no list.
func TestReadTextReadError(t *testing.T) {
	broken := errors.New("disk gone")
	r := io.MultiReader(strings.NewReader("tiktok.com\ncapcut.com\n"), iotest.ErrReader(broken))
	l, warn, err := readText("l.txt", r, 100, 8)
	assert.Nil(t, l)
	assert.Nil(t, warn)
	assert.ErrorIs(t, err, broken)
}

// TestReadList reads list files from disk: more than one piece, an RPZ
// zone, the list given before returned when the file is unchanged and not
// when it changed, and the errors of a file that cannot be read.
func TestReadList(t *testing.T) {
	dir := t.TempDir()
	var big strings.Builder
	for i := 0; big.Len() < 3*readPiece; i++ {
		fmt.Fprintf(&big, "host-%d.tracker%d.example.com\n", i, i%1000)
	}
	path := filepath.Join(dir, "big.txt")
	require.NoError(t, os.WriteFile(path, []byte(big.String()), 0o644))

	l, warn, err := ReadList(path, nil)
	require.NoError(t, err)
	require.NoError(t, warn)
	want, _ := Parse(path, []byte(big.String()))
	assertSameList(t, want, nil, l, nil)

	again, _, err := ReadList(path, l)
	require.NoError(t, err)
	assert.Same(t, l, again, "an unchanged file gives the list it gave before")

	require.NoError(t, os.WriteFile(path, []byte(big.String()+"tiktok.com\n"), 0o644))
	changed, _, err := ReadList(path, l)
	require.NoError(t, err)
	assert.NotSame(t, l, changed)
	assert.Equal(t, l.Len()+1, changed.Len())
	assert.True(t, changed.Contains("tiktok.com"))
	// Read again from its first octet after the hash that told it changed.
	want, _ = Parse(path, []byte(big.String()+"tiktok.com\n"))
	assertSameList(t, want, nil, changed, nil)

	zone := filepath.Join(dir, "z.rpz")
	require.NoError(t, os.WriteFile(zone, []byte("$TTL 60\n@ SOA a. b. 1 1 1 1 1\ntiktok.com CNAME .\n"), 0o644))
	z, warn, err := ReadList(zone, nil)
	require.NoError(t, err)
	require.NoError(t, warn)
	assert.True(t, z.Contains("tiktok.com"))
	zagain, _, err := ReadList(zone, z)
	require.NoError(t, err)
	assert.Same(t, z, zagain)
	// A policy zone changed is read again, as a list is; one that is no
	// text is refused, not read.
	require.NoError(t, os.WriteFile(zone, []byte("$TTL 60\n@ SOA a. b. 2 1 1 1 1\ndouyin.com CNAME .\n"), 0o644))
	zchanged, _, err := ReadList(zone, z)
	require.NoError(t, err)
	assert.NotSame(t, z, zchanged)
	assert.True(t, zchanged.Contains("douyin.com"))
	assert.False(t, zchanged.Contains("tiktok.com"))
	require.NoError(t, os.WriteFile(zone, []byte("$TTL 60\n@ SOA a. b. 3 1 1 1 1\ntiktok.com CNAME .\n\x00\n"), 0o644))
	_, _, err = ReadList(zone, zchanged)
	assert.ErrorIs(t, err, ErrNotText)
	assert.ErrorContains(t, err, "z.rpz:4:")

	binary := filepath.Join(dir, "bin.txt")
	require.NoError(t, os.WriteFile(binary, []byte("tiktok.com\n\x00\x01"), 0o644))
	_, _, err = ReadList(binary, nil)
	assert.ErrorIs(t, err, ErrNotText)
	assert.ErrorContains(t, err, "bin.txt:2:")

	_, _, err = ReadList(filepath.Join(dir, "missing.txt"), nil)
	assert.ErrorIs(t, err, fs.ErrNotExist)
	_, _, err = ReadList(dir, nil)
	assert.Error(t, err, "a directory is no list")
}

// TestReadListPipe reads a list from a named pipe, which cannot be read
// twice to learn first whether it changed: it is read whole, and an
// unchanged content still gives the list it gave before.
func TestReadListPipe(t *testing.T) {
	path := namedPipe(t, "pipe.txt", 0)
	write := func(content string) {
		go func() {
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				return
			}
			defer f.Close()
			_, _ = f.WriteString(content)
		}()
	}
	write("tiktok.com\ncapcut.com\n")
	l, warn, err := ReadList(path, nil)
	require.NoError(t, err)
	require.NoError(t, warn)
	assert.Equal(t, []string{"tiktok.com@1", "capcut.com@2"}, entries(l))

	write("tiktok.com\ncapcut.com\n")
	again, _, err := ReadList(path, l)
	require.NoError(t, err)
	assert.Same(t, l, again)

	write("tiktok.com\ncapcut.com\nlemon8-app.com\n")
	changed, _, err := ReadList(path, l)
	require.NoError(t, err)
	assert.Equal(t, 3, changed.Len())
}

// TestEstimateBounded: a first piece of short names before long ones does
// not reserve nodes (and a table, touched all over as it fills) for more
// than one name every 16 octets of the file, nor labels beyond its size.
func TestEstimateBounded(t *testing.T) {
	var first strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&first, "a%d.io\n", i)
	}
	p := newTextParser("l.txt", []byte(first.String()))
	p.parse(first.String(), 1)
	p.b.flush()
	size := int64(100 << 20) // the rest of the file long lines
	nodes, labels := estimate(p.b, int64(first.Len()), size)
	assert.Equal(t, int(size/16), nodes)
	assert.LessOrEqual(t, int64(labels), size)

	nodes, labels = estimate(p.b, int64(first.Len()), int64(first.Len()))
	assert.Zero(t, nodes, "the whole file read: nothing more to reserve")
	assert.Zero(t, labels)
}

// FuzzReadText checks that any file read a piece at a time gives what
// Parse and CheckText give for it read whole.
func FuzzReadText(f *testing.F) {
	seedFiles(f, "*.list")
	for _, data := range readTextFiles() {
		if len(data) < 4096 {
			f.Add(data)
		}
	}
	// Files starting as a compressed file does, text or not.
	f.Add([]byte(gzipped("tiktok.com\n")))
	f.Add([]byte("BZh91AY&SY.example\ntiktok.com\n\xff\n"))
	f.Add([]byte("PK\x03\x04.example\ntiktok.com\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		refused := CheckText("l.txt", data)
		want, wantWarn := Parse("l.txt", data)
		for _, piece := range []int{8, 29} {
			for _, size := range []int64{int64(len(data)), 0, int64(len(data)) / 2} {
				got, gotWarn, err := readText("l.txt", iotest.HalfReader(bytes.NewReader(data)), size, piece)
				if refused != nil {
					if got != nil || err == nil || err.Error() != refused.Error() {
						t.Fatalf("%q in pieces of %d: error %v, not %v", data, piece, err, refused)
					}
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(entries(want), entries(got)) || want.Len() != got.Len() ||
					!slices.Equal(want.Duplicates(), got.Duplicates()) ||
					fmt.Sprint(wantWarn) != fmt.Sprint(gotWarn) || want.Hash() != got.Hash() {
					t.Fatalf("%q in pieces of %d, size %d: %v (%v), not %v (%v)", data, piece, size, entries(got), gotWarn, entries(want), wantWarn)
				}
			}
		}
	})
}

// TestOpenDoesNotWaitForeverForAPipe: a named pipe with no writer, or a
// writer that never writes, fails after PipeIdle instead of blocking the
// open or the read for ever; a writer that comes within it is read.
func TestOpenDoesNotWaitForeverForAPipe(t *testing.T) {
	path := namedPipe(t, "pipe.txt", 300*time.Millisecond)
	timed := func(read func() error) (time.Duration, error) {
		start := time.Now()
		done := make(chan error, 1)
		go func() { done <- read() }()
		select {
		case err := <-done:
			return time.Since(start), err
		case <-time.After(10 * time.Second):
			t.Fatal("still reading after 10s")
			return 0, nil
		}
	}

	took, err := timed(func() error { _, err := ReadFile(path); return err })
	require.ErrorIs(t, err, os.ErrDeadlineExceeded, "no writer")
	assert.Contains(t, err.Error(), "nothing was written to the named pipe within 300ms")
	assert.GreaterOrEqual(t, took, PipeIdle)

	_, _, err = ReadList(path, nil)
	require.ErrorIs(t, err, os.ErrDeadlineExceeded, "ReadList, no writer")
	_, err = timed(func() error { _, _, err := ReadList(path+".rpz", nil); return err })
	require.ErrorIs(t, err, fs.ErrNotExist)

	// A writer that holds the pipe open and writes nothing.
	w, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	_, err = timed(func() error { _, err := ReadFile(path); return err })
	require.ErrorIs(t, err, os.ErrDeadlineExceeded, "a silent writer")
	// One that writes part of a list and stops.
	_, err = w.WriteString("tiktok.com\n")
	require.NoError(t, err)
	_, err = timed(func() error { _, err := ReadFile(path); return err })
	require.ErrorIs(t, err, os.ErrDeadlineExceeded, "a writer that stopped")
	require.NoError(t, w.Close())

	// A writer that comes a moment after the read began.
	go func() {
		time.Sleep(100 * time.Millisecond)
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return
		}
		defer f.Close()
		_, _ = f.WriteString("tiktok.com\ncapcut.com\n")
	}()
	var l *List
	_, err = timed(func() (err error) { l, _, err = ReadList(path, nil); return err })
	require.NoError(t, err)
	assert.Equal(t, 2, l.Len())
}

// TestDeviceThatNeverEnds: a list linked to /dev/zero or /dev/urandom
// fails at its first piece (not text), and any file that is not regular
// fails at maxPipeBytes (1 MiB here) instead of filling memory.
func TestDeviceThatNeverEnds(t *testing.T) {
	limit := maxPipeBytes
	maxPipeBytes = 1 << 20
	t.Cleanup(func() { maxPipeBytes = limit })
	dir := t.TempDir()
	for _, dev := range []string{"/dev/zero", "/dev/urandom"} {
		if _, err := os.Stat(dev); err != nil {
			t.Skip("no", dev)
		}
		path := filepath.Join(dir, filepath.Base(dev)+".txt")
		require.NoError(t, os.Symlink(dev, path))
		_, _, err := ReadList(path, nil)
		require.ErrorIs(t, err, ErrNotText, dev)
	}
	data, err := ReadFile("/dev/zero")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "/dev/zero: not a regular file, and more than 1048576 octets long")
	assert.Len(t, data, 1<<20, "read up to the limit, no further")
}
