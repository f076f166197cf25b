package blocklist

import (
	"bytes"
	"errors"
	"fmt"
	"iter"
	"strings"
	"unicode/utf8"
)

// Every file dnsfence reads is text that may have been saved on Windows,
// as lists and range files in departments often are: a UTF-8 byte-order
// mark (U+FEFF) before the first line, and CRLF line ends (DESIGN.md §10).
// Both are invisible in an editor, so a reader that kept them would reject
// or mis-read what the operator sees (`<BOM>10.0.0.0/8` is no range, and
// the devices in it would not be blocked). Every reader therefore goes
// through Text (whole-file decoders: the YAML configuration) or Lines
// (line-based formats: lists, client ranges, resolv.conf), the one place
// both are handled.
//
// Content hashes (a list's Hash, a range file's Sum, the configuration's
// Sum) stay those of the raw bytes: what sha256sum prints, and what the
// file watcher compares.

// byteOrderMark is U+FEFF in UTF-8.
const byteOrderMark = "\ufeff"

// Text returns data without a leading UTF-8 byte-order mark, sharing its
// memory. CRLF line ends are left to the decoder: YAML reads them as line
// breaks (YAML 1.2 §5.4).
func Text(data []byte) []byte {
	return bytes.TrimPrefix(data, []byte(byteOrderMark))
}

// Lines yields every line of data with its 1-based number, without its
// line end (LF or CRLF) and without a byte-order mark at its start: the
// one before the first line, and those that files joined with `cat` or
// `copy /b` carry at the start of each part. A last line without a line
// end is yielded too; an empty data yields nothing. The strings share
// data's memory.
func Lines(data string) iter.Seq2[int, string] {
	return linesFrom(data, 1)
}

// linesFrom is Lines for data that starts at line first of its file.
func linesFrom(data string, first int) iter.Seq2[int, string] {
	return func(yield func(int, string) bool) {
		for line := first; len(data) > 0; line++ {
			var text string
			if i := strings.IndexByte(data, '\n'); i >= 0 {
				text, data = data[:i], data[i+1:]
			} else {
				text, data = data, ""
			}
			text = strings.TrimSuffix(text, "\r")
			text = strings.TrimPrefix(text, byteOrderMark)
			if !yield(line, text) {
				return
			}
		}
	}
}

// ErrNotText is CheckText's error: the file is not UTF-8 text.
var ErrNotText = errors.New("not UTF-8 text")

// NotTextError is CheckText's error: where the file stops being UTF-8
// text and why. It wraps ErrNotText.
type NotTextError struct {
	File   string
	Line   int    // 1-based
	Reason string // what was found and how to fix it
}

// Error is "file:line: not UTF-8 text: reason".
func (e *NotTextError) Error() string {
	return fmt.Sprintf("%s:%d: %v: %s", e.File, e.Line, ErrNotText, e.Reason)
}

// Unwrap gives ErrNotText.
func (e *NotTextError) Unwrap() error { return ErrNotText }

// CheckText returns an error naming file and the line when data is not
// UTF-8 text: a compressed file or an archive (CompressedFile: a list
// saved as it was downloaded, list.txt.gz), UTF-16 or UTF-32, which
// Windows saves as "Unicode" (a byte-order mark FF FE, FE FF or
// 00 00 FE FF), or anything with a NUL octet (UTF-16 without a mark, or
// a binary file). data may be a file's first octets only (ReadList reads
// a piece at a time). Read as UTF-8, every
// line of such a file would be skipped as invalid, so a list or a range
// file would load empty and block nothing: it must be refused, as a file
// that cannot be read is, never loaded. The error is a *NotTextError.
func CheckText(file string, data []byte) error {
	if name := CompressedFile(data); name != "" {
		return &NotTextError{File: file, Line: 1, Reason: fmt.Sprintf("it is a %s file (it starts % X); decompress it", name, data[:min(len(data), 4)])}
	}
	for _, bom := range [][]byte{{0xFF, 0xFE}, {0xFE, 0xFF}, {0, 0, 0xFE, 0xFF}} {
		if bytes.HasPrefix(data, bom) {
			return &NotTextError{File: file, Line: 1, Reason: fmt.Sprintf("it starts with the byte-order mark % X of UTF-16 or UTF-32; save it as UTF-8", bom)}
		}
	}
	return checkNUL(file, data, 0, 1)
}

// checkNUL is CheckText's error for a NUL octet in data[from:], data
// being whole lines of a file from line first on.
func checkNUL(file string, data []byte, from, first int) error {
	if i := bytes.IndexByte(data[from:], 0); i >= 0 {
		line := first + bytes.Count(data[:from+i], []byte{'\n'})
		return &NotTextError{File: file, Line: line, Reason: "a NUL octet (UTF-16 without a byte-order mark, or a binary file); save it as UTF-8"}
	}
	return nil
}

// CompressedFile names the compressed or archive format data starts with
// (gzip, zip, xz, zstd, 7-Zip, bzip2: a list.txt.gz saved or served as it
// was downloaded), or "" for none, so that a file or a body refused as
// binary says which. Data that is text (UTF-8, no NUL octet) is none,
// however it starts (a list whose first name is `BZhotel.example`); a
// bzip2 file is told by its stream magic and its first block's or its
// end's (`BZh9` then `1AY&SY` or 17 72 45 38 50 90), so that a Latin-1
// list starting `BZh` is refused for its invalid UTF-8 and its line.
// data may be a file's first octets, cut inside a character.
func CompressedFile(data []byte) string {
	for _, m := range compressedMagic {
		if bytes.HasPrefix(data, []byte(m.magic)) {
			return binaryName(data, m.name)
		}
	}
	if len(data) >= 10 && bzip2Start(data) {
		return binaryName(data, "bzip2")
	}
	return ""
}

// bzip2Start reports whether data (four octets at least) starts as a
// bzip2 stream does, as far as it goes: `BZh`, the block size digit, then
// a block's magic or the end of stream's (their first six octets).
func bzip2Start(data []byte) bool {
	if !bytes.HasPrefix(data, []byte("BZh")) || data[3] < '1' || data[3] > '9' {
		return false
	}
	block := data[4:min(len(data), 10)]
	return bytes.HasPrefix([]byte("1AY&SY"), block) || bytes.HasPrefix([]byte("\x17\x72\x45\x38\x50\x90"), block)
}

// compressedMagic is what the formats CompressedFile names start with,
// but bzip2's (`BZh`, a digit and a block's magic).
var compressedMagic = []struct{ magic, name string }{
	{"\x1f\x8b", "gzip"}, {"PK\x03\x04", "zip"}, {"\xfd7zXZ\x00", "xz"},
	{"\x28\xb5\x2f\xfd", "zstd"}, {"7z\xbc\xaf\x27\x1c", "7-Zip"},
}

// compressedStart reports whether data, a file's first octets (eight at
// least), is text that starts as a zip or bzip2 file does, whose magic is
// text too (`PK\x03\x04`, `BZh9` and a block's `1AY&SY`): whether it is
// that format can take all of the file to tell. The other formats'
// magic is no UTF-8, and a zip file's header holds NUL octets, so their
// first octets tell (CompressedFile).
func compressedStart(data []byte) bool {
	switch {
	case CompressedFile(data) != "":
		return false // told already
	case bytes.HasPrefix(data, []byte("PK\x03\x04")):
		return true
	case len(data) >= 4:
		return bzip2Start(data)
	}
	return false
}

// binaryName is name, unless data is text: valid UTF-8 but for a
// character its end may cut, with no NUL octet; then "".
func binaryName(data []byte, name string) string {
	for i := len(data) - 1; i >= max(0, len(data)-utf8.UTFMax+1); i-- {
		if utf8.RuneStart(data[i]) {
			if !utf8.FullRune(data[i:]) {
				data = data[:i]
			}
			break
		}
	}
	if utf8.Valid(data) && bytes.IndexByte(data, 0) < 0 {
		return ""
	}
	return name
}

// InvalidUTF8 is the offset of the first octet of data that does not
// start a valid UTF-8 sequence, or -1 when data is valid UTF-8: for an
// error that names where a file or a body stops being text.
func InvalidUTF8(data []byte) int {
	if utf8.Valid(data) { // the common case, at utf8.Valid's speed
		return -1
	}
	for off := 0; off < len(data); {
		r, n := utf8.DecodeRune(data[off:])
		if r == utf8.RuneError && n == 1 {
			return off
		}
		off += n
	}
	return -1
}

// Markup returns the start of data (at most 20 octets) when it is markup,
// an HTML or XML page (a captive portal, an error page, a web view of a
// list saved instead of the raw file), and "" otherwise: no list or range
// format starts with '<' followed by a letter, '!' or '?'.
func Markup(data []byte) string {
	text := bytes.TrimLeft(data, "\ufeff \t\r\n\f\v")
	if len(text) > 1 && text[0] == '<' {
		if c := text[1] | 0x20; c >= 'a' && c <= 'z' || text[1] == '!' || text[1] == '?' {
			return string(text[:min(len(text), 20)])
		}
	}
	return ""
}
