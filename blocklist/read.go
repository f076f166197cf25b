package blocklist

import (
	"bytes"
	"crypto/sha256"
	"io"
	"slices"
	"unsafe"
)

// readPiece is how much of a list file ReadList reads at a time, in
// octets.
const readPiece = 1 << 20

// ReadList reads the list file at path and returns it parsed: what
// os.ReadFile, CheckText and Parse would return, read a piece at a time
// (so a file of tens of megabytes is never held whole, and its pages are
// not faulted into memory only to be dropped: a million-entry list loads
// about a tenth faster, and peaks lower by the file's size).
//
// When prev, the list the file gave before, is not nil and the file's
// SHA-256 is still its Sum, ReadList returns prev without parsing again:
// it reads the file twice when it has changed.
//
// err is an error reading the file, or CheckText's (the file is not UTF-8
// text): the file must not be loaded. warn is Parse's: the bad lines,
// skipped. An RPZ file (a name ending in `.rpz`) is read whole, since a
// zone's records may span lines. A file that is not a regular file (a
// named pipe cannot be read twice) is parsed as it is read, and compared
// with prev after. No file is waited for longer than Open waits.
func ReadList(path string, prev *List) (l *List, warn, err error) {
	if isRPZ(path) {
		return ParseRead(path, prev, ReadFile)
	}
	f, err := Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	if !f.Regular() {
		// Parsed as it is read, once: a named pipe opened again would wait
		// for another writer, and a device that never ends fails at its
		// first piece (not text) or at maxPipeBytes.
		l, warn, err := readText(path, f, 0, readPiece)
		if err == nil && prev != nil && l.Sum() == prev.Sum() {
			return prev, nil, nil
		}
		return l, warn, err
	}
	if prev != nil {
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return nil, nil, err
		}
		if [32]byte(h.Sum(nil)) == prev.Sum() {
			return prev, nil, nil
		}
		if err := f.Rewind(); err != nil {
			return nil, nil, err
		}
	}
	return readText(path, f, f.Size(), readPiece)
}

// ParseRead is ReadList for a file that read returns whole (the embedded
// default's files, compiled in; an RPZ zone; a named pipe).
func ParseRead(path string, prev *List, read func(string) ([]byte, error)) (l *List, warn, err error) {
	data, err := read(path)
	return parseWhole(path, prev, data, err)
}

// parseWhole is ParseRead for data read whole, or the error reading it.
func parseWhole(path string, prev *List, data []byte, err error) (l *List, warn, _ error) {
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

// readText parses the list file name from r, of about size octets (a hint
// only: r is read to its end), a piece of whole lines at a time, as Parse
// would parse it read whole (see ReadList): piece octets at a time (at
// least 8), or more for a line longer than that.
func readText(name string, r io.Reader, size int64, piece int) (l *List, warn, err error) {
	n := piece
	if size > 0 && size < int64(piece) {
		n = int(size) + 1 // the file, and the read that finds its end
	}
	buf := make([]byte, max(n, 8)) // room for a UTF-32 mark
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
		if p == nil && !end && compressedStart(data) {
			// CheckText may have to see all of it to tell a zip or
			// bzip2 file from text starting as one does (rare: its
			// magic, then text): one piece of it all.
			rest, err := io.ReadAll(r)
			if err != nil {
				return nil, nil, err
			}
			h.Write(rest)
			data, end = append(data, rest...), true
		}
		if p == nil {
			if err := CheckText(name, data); err != nil {
				return nil, nil, err
			}
			// Sized for this piece, or the file when it is all of it;
			// after the piece, for the file (estimate).
			p = newTextParser(name, data)
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
			p.b.flush()
			p.b.reserve(estimate(p.b, int64(whole), size))
		}
		kept = copy(buf, data[whole:])
		if kept == len(buf) { // a line longer than buf
			buf = slices.Grow(buf, len(buf))
			buf = buf[:cap(buf)]
		}
	}
	l = p.b.finish([32]byte(h.Sum(nil)), p.errs.err())
	return l, l.warn, nil
}

// estimate is the room the list of a file of size octets will need, from
// b, the list of its first read octets: their nodes and labels, times the
// file's size over read, an eighth over. The nodes are at most one for
// every 16 octets of the file, so that a first piece of short names
// before long ones does not reserve many times the memory the list needs
// (a table is touched all over as it fills); the labels' room, never
// touched beyond what is written, is at most the file's size.
//
// A list whose later lines give more nodes or labels for their octets
// than the first ones grows as it goes (its nodes and labels copied, its
// table rebuilt); one that gives fewer has the slack dropped at the end
// (builder.finish).
func estimate(b *builder, read, size int64) (nodes, labels int) {
	if size <= read {
		return 0, 0
	}
	scale := float64(size) / float64(read) * 9 / 8
	nodes = int(min(float64(len(b.list.nodes))*scale, float64(size/16)))
	labels = int(min(float64(b.labels.Len())*scale, float64(size)))
	return nodes, labels
}
