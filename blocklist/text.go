package blocklist

import (
	"bytes"
	"iter"
	"strings"
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
	return func(yield func(int, string) bool) {
		for line := 1; len(data) > 0; line++ {
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
