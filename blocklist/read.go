package blocklist

import (
	"bytes"
	"crypto/sha256"
	"io"
	"os"
	"unsafe"
)

// readPiece is how much of a list file ReadList reads at a time, in
// octets.
const readPiece = 1 << 20

// ReadList reads the list file at path and returns it parsed: what
// os.ReadFile, CheckText and Parse would return, read a piece at a time
// (so a file of tens of megabytes is never held whole, and its pages are
// not faulted into memory only to be dropped; a million-entry list loads
// about a tenth faster and peaks that much lower).
//
// When prev, the list the file gave before, is not nil and the file's
// SHA-256 is still its Sum, ReadList returns prev without parsing again:
// it reads the file twice when it has changed.
//
// err is an error reading the file, or CheckText's (the file is not UTF-8
// text): the file must not be loaded. warn is Parse's: the bad lines,
// skipped. An RPZ file (a name ending in `.rpz`) is read whole: a zone's
// records may span lines.
func ReadList(path string, prev *List) (l *List, warn, err error) {
	if isRPZ(path) {
		return ParseRead(path, prev, os.ReadFile)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	var size int64
	if info, err := f.Stat(); err == nil {
		size = info.Size() // a hint only: the file is read to its end
	}
	if prev != nil {
		sum, err := sumOf(f)
		if err != nil {
			return nil, nil, err
		}
		if sum == prev.Sum() {
			return prev, nil, nil
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return nil, nil, err
		}
	}
	return readText(path, f, size, readPiece)
}

// ParseRead is ReadList for a file that read returns whole (the embedded
// default's files, compiled in; an RPZ zone).
func ParseRead(path string, prev *List, read func(string) ([]byte, error)) (l *List, warn, err error) {
	data, err := read(path)
	if err == nil {
		err = CheckText(path, data)
	}
	if err != nil {
		return nil, nil, err
	}
	if prev != nil && prev.Sum() == sha256.Sum256(data) {
		return prev, nil, nil
	}
	l, warn = Parse(path, data)
	return l, warn, nil
}

// sumOf is the SHA-256 of what r has left.
func sumOf(r io.Reader) ([32]byte, error) {
	h := sha256.New()
	_, err := io.CopyBuffer(h, r, make([]byte, readPiece))
	return [32]byte(h.Sum(nil)), err
}

// readText parses the list file name from r, of about size octets, a
// piece of whole lines at a time, as Parse would parse it read whole (see
// ReadList): piece octets at a time (at least 8), or more for a line
// longer than that.
func readText(name string, r io.Reader, size int64, piece int) (l *List, warn, err error) {
	buf := make([]byte, max(min(size+1, int64(piece)), 8)) // room for the end too, and for a UTF-32 mark
	h := sha256.New()
	var p *textParser
	line, kept := 1, 0 // buf[:kept] is a line begun and not yet read to its end
	for {
		n, rerr := io.ReadFull(r, buf[kept:])
		end := rerr == io.EOF || rerr == io.ErrUnexpectedEOF
		if rerr != nil && !end {
			return nil, nil, rerr
		}
		data := buf[:kept+n]
		h.Write(data[kept:])
		if p == nil {
			if err := CheckText(name, data); err != nil {
				return nil, nil, err
			}
			hint, room := hintOf(data, size, end)
			p = newTextParser(name, hint, room)
		} else if err := checkNUL(name, data, kept, line); err != nil {
			return nil, nil, err
		}
		whole := len(data) // the lines read to their end
		if !end {
			whole = bytes.LastIndexByte(data, '\n') + 1
		}
		first := line == 1
		line = p.parse(unsafe.String(unsafe.SliceData(data), whole), line)
		if end {
			break
		}
		if first && whole > 0 {
			// The labels' room, from those of the first piece.
			p.b.flush()
			p.b.reserveLabels(int(float64(p.b.labels.Len()) * float64(size) / float64(whole) * 9 / 8))
		}
		kept = copy(buf, data[whole:])
		if kept == len(buf) { // a line longer than buf
			buf = append(buf, make([]byte, len(buf))...)
		}
	}
	return p.b.finish([32]byte(h.Sum(nil))), p.errs.err(), nil
}

// hintOf is newTextParser's size hint and label room for a file of
// about size octets whose first piece is data (all of it when end): its
// line count and octets less line ends when data is the whole file. Else
// the lines are estimated from data, and the room is that of data: once
// its lines are read, readText reserves the room for the rest by the
// labels they gave (builder.reserveLabels). A list whose later lines are
// longer, or give more labels, costs copies as its nodes and labels grow,
// and a rebuilt table; one whose estimates were too high has its slack
// dropped (builder.finish).
func hintOf(data []byte, size int64, end bool) (int, int) {
	newlines := bytes.Count(data, []byte{'\n'})
	if end {
		return newlines + 1, len(data) - newlines
	}
	return int(float64(size)/float64(len(data))*float64(newlines)) + 1, len(data)
}
