package blocklist

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// parseErrors is every ParseError in err, a Parse's joined errors.
func parseErrors(err error) []*ParseError {
	var out []*ParseError
	var walk func(error)
	walk = func(err error) {
		var pe *ParseError
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
		} else if errors.As(err, &pe) {
			out = append(out, pe)
		}
	}
	walk(err)
	return out
}

// cutSuffix is the end of a bad line's text cut short: its length.
var cutSuffix = regexp.MustCompile(`… \(([0-9]+) octets\)$`)

// FuzzReportedText parses a list with one line of a fuzzed unit repeated,
// up to 200,000 octets, among good ones: every bad line's text, kept in
// the snapshot's warnings and logged, is at most maxReportedText octets
// and the suffix naming its length; a text cut short is the start of its
// line, cut at a character's start (at most three octets before the bound
// on a line of valid UTF-8, and valid UTF-8 then), and names the line's
// length in octets; one not cut is part of its line; the error's text is
// valid UTF-8 whatever the line holds.
func FuzzReportedText(f *testing.F) {
	f.Add([]byte("é"), uint32(300_000), false)
	f.Add([]byte("a"), uint32(1023), true)
	f.Add([]byte("a."), uint32(600), true)
	f.Add([]byte("\xe2\x82\xac"), uint32(342), false)
	f.Add([]byte("\xff\x80"), uint32(700), true)
	f.Add([]byte("0.0.0.0 "), uint32(200), false)
	f.Fuzz(func(t *testing.T, unit []byte, reps uint32, bad bool) {
		if len(unit) == 0 || bytes.ContainsAny(unit, "\n\r") {
			return
		}
		line := bytes.Repeat(unit, int(min(reps, uint32(200_000/len(unit)))))
		if bad {
			line = append(line, "..example"...)
		}
		data := append(append([]byte("ok.example\n"), line...), "\nalso.example\n"...)
		_, err := Parse("long.txt", data)
		for _, e := range parseErrors(err) {
			if !utf8.ValidString(e.Error()) {
				t.Fatalf("line %d's error is not UTF-8: %q", e.Line, e.Error())
			}
			whole := lineOf(data, e.Line)
			m := cutSuffix.FindStringSubmatchIndex(e.Text)
			if m == nil {
				if len(e.Text) > maxReportedText || !strings.Contains(whole, e.Text) {
					t.Fatalf("line %d of %d octets reported uncut as %d octets, past the bound or not of it", e.Line, len(whole), len(e.Text))
				}
				continue
			}
			kept, n := e.Text[:m[0]], e.Text[m[2]:m[3]]
			length, _ := strconv.Atoi(n)
			switch {
			case len(kept) > maxReportedText:
				t.Fatalf("line %d of %d octets reported as %d octets", e.Line, len(whole), len(kept))
			case length <= maxReportedText || length > len(whole):
				t.Fatalf("line %d of %d octets reported with a length of %d", e.Line, len(whole), length)
			case !strings.Contains(whole, kept):
				t.Fatalf("line %d reported as %q, not of it", e.Line, kept)
			case utf8.Valid(line) && (len(kept) < maxReportedText-utf8.UTFMax+1 || !utf8.ValidString(kept)):
				t.Fatalf("line %d of UTF-8 cut to %d octets, %q at the cut", e.Line, len(kept), kept[max(0, len(kept)-4):])
			}
			if want := fmt.Sprintf("… (%d octets)", length); !strings.HasSuffix(e.Text, want) {
				t.Fatalf("line %d reported as ending %q", e.Line, e.Text[m[0]:])
			}
		}
	})
}
