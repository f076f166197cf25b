package source

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDiskCopyRefusedWhenNotTheSources: a disk copy whose hash matches
// its payload is still refused, with an error saying why, when it is not
// the copy of this source as written: no metadata line, a metadata line
// that is no JSON, the copy of another source or kind (a file copied or
// renamed in the cache folder), a zone's copy whose SOA serial is not the
// metadata's, that does not start with the zone's SOA (a record, or the
// SOA of another zone), or that holds nothing. None is delivered in place
// of the source's list.
func TestDiskCopyRefusedWhenNotTheSources(t *testing.T) {
	opt := zoneTestOptions(t, nil)
	z, err := NewZone("axfr://127.0.0.1:53/rpz.test", opt)
	require.NoError(t, err)
	const entry = "https://lists.example/blocked.txt"
	u, err := NewURL(entry, opt)
	require.NoError(t, err)
	pack := func(records ...dns.RR) []byte {
		var buf bytes.Buffer
		require.NoError(t, writeZone(&buf, records))
		return buf.Bytes()
	}
	metaLine := func(m cacheMeta, payload []byte) []byte {
		sum := sha256.Sum256(payload)
		m.PayloadSHA = hex.EncodeToString(sum[:])
		b, err := json.Marshal(m)
		require.NoError(t, err)
		return b
	}
	zoneMeta := func(serial uint32) cacheMeta {
		return cacheMeta{Source: z.Name(), Kind: zoneKind, Fetched: time.Now(), Zone: testZone, Serial: serial}
	}
	for _, tc := range []struct {
		name string
		src  Source
		file func() []byte // the cache file's content
		want string
	}{
		{name: "no metadata line", src: u, file: func() []byte {
			return metaLine(cacheMeta{Source: entry, Kind: "body"}, nil) // an empty body, its newline cut
		}, want: "no metadata line"},
		{name: "a metadata line that is no JSON", src: u, file: func() []byte {
			return []byte("source: " + entry + "\nblocked.example\n")
		}, want: "metadata: invalid character"},
		{name: "another source's copy", src: u, file: func() []byte {
			body := []byte("blocked.example\n")
			return append(append(metaLine(cacheMeta{Source: "https://other.example/list.txt", Kind: "body"}, body), '\n'), body...)
		}, want: `holds body "https://other.example/list.txt", not body "` + entry + `"`},
		{name: "a zone's copy for a URL", src: u, file: func() []byte {
			payload := pack(testSOA(testZone, 1))
			return append(append(metaLine(cacheMeta{Source: entry, Kind: zoneKind, Serial: 1}, payload), '\n'), payload...)
		}, want: `holds zone-wire "` + entry + `", not body "` + entry + `"`},
		{name: "a zone's SOA serial not the metadata's", src: z, file: func() []byte {
			payload := pack(testSOA(testZone, 5), cname(testZone, "a"))
			return append(append(metaLine(zoneMeta(9), payload), '\n'), payload...)
		}, want: "disk copy: SOA serial 5, metadata says 9"},
		{name: "a zone's copy starting with a record", src: z, file: func() []byte {
			payload := pack(cname(testZone, "a"), testSOA(testZone, 5))
			return append(append(metaLine(zoneMeta(5), payload), '\n'), payload...)
		}, want: "disk copy: does not start with the zone's SOA"},
		{name: "a zone's copy starting with another zone's SOA", src: z, file: func() []byte {
			payload := pack(testSOA("other.test.", 5), cname("other.test.", "a"))
			return append(append(metaLine(zoneMeta(5), payload), '\n'), payload...)
		}, want: "disk copy: does not start with the zone's SOA"},
		{name: "a zone's copy holding nothing", src: z, file: func() []byte {
			return append(metaLine(zoneMeta(0), nil), '\n')
		}, want: "disk copy: empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := z.name
			if tc.src == Source(u) {
				key = entry
			}
			path := cachePath(opt.CacheDir, key)
			require.NoError(t, os.WriteFile(path, tc.file(), 0o600))
			_, err := Cached(tc.src)
			require.Error(t, err)
			assert.NotErrorIs(t, err, ErrNoCopy)
			assert.ErrorContains(t, err, tc.want)
			assert.ErrorContains(t, err, tc.src.Name())
		})
	}
}
