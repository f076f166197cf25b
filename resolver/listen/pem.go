package listen

import (
	"bytes"
	"encoding/pem"
	"fmt"
)

// DecodePEM returns every PEM block in data, in order (RFC 7468), with
// text between blocks passed over, or an error naming the first block, by
// its 1-based position, that does not decode where it begins. Go's
// pem.Decode passes over a block it cannot decode (its END line missing,
// as in a file read while a writer was still on it, or its base64 broken)
// to the next block or to the end without an error: a CA bundle cut
// short in its second root loaded with the first alone, and a tls.cert
// cut short in its intermediate was served as the leaf alone, which
// clients that need the intermediate cannot verify. A UTF-8 byte order
// mark before the first block is allowed. An empty result is no error:
// the caller says what it needed.
func DecodePEM(data []byte) ([]*pem.Block, error) {
	data = bytes.TrimPrefix(data, []byte("\ufeff"))
	var blocks []*pem.Block
	for {
		at := bytes.Index(data, pemBegin)
		if at < 0 {
			return blocks, nil
		}
		block, rest := pem.Decode(data[at:])
		if block == nil || beginsBefore(data[at+1:], len(data)-at-len(rest)-1) {
			return nil, fmt.Errorf("PEM block %d does not decode (cut short, or its base64 broken)", len(blocks)+1)
		}
		blocks = append(blocks, block)
		data = rest
	}
}

// pemBegin starts every PEM block (RFC 7468 §2).
var pemBegin = []byte("-----BEGIN")

// beginsBefore reports whether b holds the start of a PEM block within its
// first n octets: the block decoded from before b began after one it
// passed over.
func beginsBefore(b []byte, n int) bool {
	i := bytes.Index(b, pemBegin)
	return i >= 0 && i < n
}
