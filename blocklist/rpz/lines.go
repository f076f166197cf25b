package rpz

import (
	"bufio"
	"bytes"
	"io"
	"strings"

	"github.com/miekg/dns"

	"github.com/dnsfence/dnsfence/blocklist/internal/presname"
)

// lineReader feeds zone text to dns.ZoneParser byte by byte (the parser
// reads through io.ByteReader when its reader has it) and follows the
// text as the parser's lexer does, so that every record can be given the
// line it starts on, which the parser does not tell: a record is one
// logical line, which may span physical lines inside parentheses, and
// starts at its first byte that is not blank, a comment or a line end.
//
// After a parse error it lets parsing resume with the next logical line
// (Resume), with the $ORIGIN then in effect, which it follows.
//
// It also removes a UTF-8 byte-order mark at the start of any line (the
// one of a file saved on Windows, and those of files joined with cat;
// DESIGN.md §10: lists may carry them).
type lineReader struct {
	r   *bufio.Reader
	err error // the read error, io.EOF at the end

	line    int  // the line of the next byte
	start   int  // the line the last logical line started on
	atBOL   bool // the next byte starts a physical line
	pending bool // a logical line has started and not yet ended
	depth   int  // open parentheses
	quote   bool
	comment bool
	escape  bool
	read    int64 // bytes handed to the parser since the last Resume
	// skipping is set while Resume skips a line: quotes do not join
	// lines then.
	skipping bool

	// escText is the \DDD escape being read, escDigits how many of its
	// digits (0 outside one); badEscape holds, by the line its logical
	// line starts on, the first escape RFC 1035 §5.1 does not allow
	// (presname.BadEscape), which the zone parser reads as another octet.
	escText   []byte
	escDigits int
	badEscape map[int]string

	// cur holds the bytes read of the current physical line or, once a
	// logical line has started, of the whole logical line from the start
	// of its first physical line (leading blanks included: they mean
	// "the owner of the record before"); curLine is the line it starts
	// on. Resume replays it when the parser read into a line after the
	// one it failed on. curFull marks it incomplete (longer than maxCur).
	cur     []byte
	curLine int
	curFull bool
	replay  []byte // bytes to hand out again before reading more

	// origin is the $ORIGIN in effect after the last complete logical
	// line, fully qualified; firstOrigin is the first $ORIGIN of the text.
	origin      string
	firstOrigin string
}

// maxCur bounds what is kept of a logical line; the parser reads at most
// one token past the line it fails on.
const maxCur = 64 << 10

const byteOrderMark = "\ufeff"

func newLineReader(r io.Reader, origin string) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 64<<10), line: 1, curLine: 1, atBOL: true, origin: origin}
}

// ReadByte implements io.ByteReader for the zone parser.
func (lr *lineReader) ReadByte() (byte, error) {
	var c byte
	if len(lr.replay) > 0 {
		c, lr.replay = lr.replay[0], lr.replay[1:]
	} else {
		if lr.err != nil {
			return 0, lr.err
		}
		if lr.atBOL {
			if b, _ := lr.r.Peek(len(byteOrderMark)); string(b) == byteOrderMark {
				lr.r.Discard(len(byteOrderMark))
			}
		}
		var err error
		if c, err = lr.r.ReadByte(); err != nil {
			lr.err = err
			if lr.escDigits > 0 {
				lr.escDigit(0) // the text ends inside \DDD
			}
			if lr.pending {
				lr.endLine()
			}
			return 0, err
		}
	}
	lr.read++
	lr.follow(c)
	return c, nil
}

// Read implements io.Reader through ReadByte; the zone parser reads byte
// by byte.
func (lr *lineReader) Read(p []byte) (int, error) {
	for i := range p {
		c, err := lr.ReadByte()
		if err != nil {
			if i > 0 {
				return i, nil
			}
			return 0, err
		}
		p[i] = c
	}
	return len(p), nil
}

// follow updates the lexer state for c, mirroring the zone lexer: `;`
// starts a comment outside quotes, `"` toggles quoting, `\` escapes the
// next byte, parentheses join lines, and a line end outside quotes and
// parentheses ends the logical line.
func (lr *lineReader) follow(c byte) {
	if !lr.curFull {
		if len(lr.cur) < maxCur {
			lr.cur = append(lr.cur, c)
		} else {
			lr.curFull = true
		}
	}
	lr.atBOL = c == '\n'
	if lr.escDigits > 0 {
		lr.escDigit(c)
	}
	significant := false
	switch {
	case c == '\n':
		lr.line++
		lr.comment, lr.escape = false, false
		switch {
		case lr.quote:
		case !lr.pending:
			lr.newCur()
		case lr.depth == 0:
			lr.endLine()
		}
		return
	case lr.comment:
		return
	case lr.escape:
		lr.escape, significant = false, true
		if presname.IsDigit(c) {
			lr.escText, lr.escDigits = append(lr.escText[:0], '\\', c), 1
		}
	case c == '\\':
		lr.escape, significant = true, true
	case c == '"':
		lr.quote, significant = !lr.quote && !lr.skipping, true
	case lr.quote:
		significant = true
	case c == ';':
		lr.comment = true
	case c == '(':
		lr.depth++
	case c == ')':
		if lr.depth > 0 {
			lr.depth--
		}
	case c == ' ' || c == '\t' || c == '\r':
	default:
		significant = true
	}
	if significant && !lr.pending {
		lr.pending, lr.start = true, lr.line
	}
}

// escDigit follows a \DDD escape with c, the byte after its first or
// second digit: one that is no digit, or a third digit making a value
// over 255, makes it an escape RFC 1035 §5.1 does not allow (the zone
// parser reads `\2.` as `2`, and wraps `\999`), kept in badEscape for
// the logical line.
func (lr *lineReader) escDigit(c byte) {
	if presname.IsDigit(c) {
		lr.escText = append(lr.escText, c)
		if lr.escDigits++; lr.escDigits < 3 {
			return
		}
		lr.escDigits = 0
		if _, bad := presname.BadEscape(string(lr.escText)); !bad {
			return
		}
	}
	lr.escDigits = 0
	if _, seen := lr.badEscape[lr.start]; !seen {
		if lr.badEscape == nil {
			lr.badEscape = map[int]string{}
		}
		lr.badEscape[lr.start] = string(lr.escText)
	}
}

// newCur starts keeping the bytes of the next physical line.
func (lr *lineReader) newCur() {
	lr.cur, lr.curLine, lr.curFull = lr.cur[:0], lr.line, false
}

// endLine closes the logical line, reading an $ORIGIN directive from it.
func (lr *lineReader) endLine() {
	lr.pending, lr.depth, lr.quote, lr.comment, lr.escape = false, 0, false, false, false
	d := bytes.TrimLeft(lr.cur, " \t")
	lr.newCur()
	const dir = "$ORIGIN"
	if len(d) <= len(dir) || !bytes.EqualFold(d[:len(dir)], []byte(dir)) || d[len(dir)] != ' ' && d[len(dir)] != '\t' {
		return
	}
	arg, _, _ := strings.Cut(string(d[len(dir):]), ";")
	fields := strings.Fields(arg)
	if len(fields) == 0 {
		return
	}
	origin, ok := absolute(fields[0], lr.origin)
	if !ok {
		return
	}
	lr.origin = origin
	if lr.firstOrigin == "" {
		lr.firstOrigin = origin
	}
}

// Resume readies the text for a new parser after one failed at line
// errLine: the rest of the logical line it failed in is skipped; but when
// the parser had already read into a later line (it reads a token ahead
// at times), that line is handed out again from its start. It reports
// false when nothing is left to read.
func (lr *lineReader) Resume(errLine int) bool {
	lr.read, lr.escDigits = 0, 0
	if lr.pending && lr.start > errLine && !lr.curFull && len(lr.replay) == 0 {
		lr.replay = append([]byte(nil), lr.cur...)
		lr.line, lr.atBOL = lr.curLine, true
		lr.pending, lr.depth, lr.quote, lr.comment, lr.escape = false, 0, false, false, false
		lr.newCur()
		return true
	}
	// A quote the lexer opened and never closed would join every line to
	// the end of the text; skipping, only parentheses join lines, so that
	// the next line is read again.
	lr.skipping, lr.quote = true, false
	for lr.pending {
		if _, err := lr.ReadByte(); err != nil {
			break
		}
	}
	lr.skipping = false
	return len(lr.replay) > 0 || lr.err == nil
}

// absolute resolves a name as written in a zone file against origin, as
// the zone parser does: a name ending in an unescaped dot is absolute, `@`
// is the origin. It takes what dns.IsDomainName takes, names of 256 and
// 257 octets too, as the parser does: the origin of a parser made after
// an error (Resume) is the one the failed parser had.
func absolute(name, origin string) (string, bool) {
	if name == "@" {
		return origin, origin != ""
	}
	if _, ok := dns.IsDomainName(name); !ok {
		return "", false
	}
	if dns.IsFqdn(name) {
		return name, true
	}
	if origin == "" {
		return "", false
	}
	if origin == "." {
		return name + ".", true
	}
	return name + "." + origin, true
}
