package source

import (
	"encoding/hex"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestZeroOptionsTakeTheDefaults: a source given no refresh, size bound,
// timeout or logger (Options' zero values) takes the defaults: a failure
// is logged nowhere rather than on a nil logger, the list (of any sane
// size) is taken, a zone's SOA query and transfer are given
// DefaultTimeout rather than none, and once the source has a copy it
// waits DefaultRefresh before asking again, not no time at all (a loop
// asking the server without pause).
func TestZeroOptionsTakeTheDefaults(t *testing.T) {
	t.Run("URL", func(t *testing.T) {
		srv, requests := maintenanceServer(t, func(n int64) bool { return n == 1 }, "")
		src, err := NewURL(srv.URL+"/l.txt", Options{})
		require.NoError(t, err)
		rec := run(t, src)

		c := rec.waitCount(t, 1)
		assert.Equal(t, "tiktok.com\n", string(c.Body))
		assert.Equal(t, int64(2), requests.Load(), "the failure, then the copy")
		require.Never(t, func() bool { return requests.Load() > 2 }, 500*time.Millisecond, tick,
			"asked again with no refresh set, before DefaultRefresh")
	})

	t.Run("zone", func(t *testing.T) {
		p := startFakePrimary(t, testZone, 1, cnames(testZone, "tiktok.com"), nil)
		_, rec := startZone(t, p, Options{})

		c := rec.waitCount(t, 1)
		assert.Equal(t, uint32(1), c.Serial)
		require.Never(t, func() bool { return len(p.asked()) > 2 }, 500*time.Millisecond, tick,
			"asked again with no refresh set, before the SOA's refresh; asked %v", qtypes(p.asked()...))
	})
}

// TestZoneVersionNamesTheSerial: a zone's version, in the reload's log
// line (Content.Version) and in its status (metrics, /readyz), is its
// SOA serial in decimal, as the zone file writes it: a date serial such
// as 2026120701, not the single digits a first zone has.
func TestZoneVersionNamesTheSerial(t *testing.T) {
	const serial = 2026120701
	p := startFakePrimary(t, testZone, serial, cnames(testZone, "tiktok.com"), nil)
	z, rec := startZone(t, p, testOptions(t))

	c := rec.waitCount(t, 1)
	assert.Equal(t, "serial 2026120701", c.Version())
	st := waitStatus(t, z, func(st Status) bool { return st.HasContent })
	assert.Equal(t, "2026120701", st.Version)
	assert.Equal(t, uint32(serial), st.Serial)
}

// TestStatusIsTheCallers: the Status a source returns is a copy: a
// caller that changes its Transfers (a metrics exporter that counts
// what it exported) changes neither the source's counts nor the next
// Status, which the source writes on its own goroutine.
func TestStatusIsTheCallers(t *testing.T) {
	p := startFakePrimary(t, testZone, 1, cnames(testZone, "tiktok.com"), nil)
	z, _ := startZone(t, p, testOptions(t))
	st := waitStatus(t, z, func(st Status) bool { return st.Transfers[TransferAXFR] == 1 })

	st.Transfers[TransferAXFR] = 99
	assert.Equal(t, map[string]uint64{TransferAXFR: 1}, z.Status().Transfers)
}

// TestIsRemoteOfShortEntries: a list entry shorter than a scheme and its
// "://" (a file named "a", an entry cut short) is a file, never a panic
// slicing it; a scheme followed by a host of one letter is remote.
func TestIsRemoteOfShortEntries(t *testing.T) {
	for _, entry := range []string{"", "a", "ab", "l.txt", "http:/", "https:/", "axfr:/", "https://"} {
		assert.False(t, IsRemote(entry), "%q", entry)
	}
	for _, entry := range []string{"http://a", "axfr://a", "https://a"} {
		assert.True(t, IsRemote(entry), "%q", entry)
	}
}

// TestTSIGRootNameIsEmpty: a key named "." (the root, what an empty name
// becomes fully qualified) is reported as an empty name, not taken.
func TestTSIGRootNameIsEmpty(t *testing.T) {
	for _, name := range []string{"", "."} {
		k := TSIG{Name: name, Algorithm: "hmac-sha256", Secret: "c2VjcmV0LWtleS1mb3ItdGVzdHM="}
		nameErr, algErr, secretErr := k.Problems()
		assert.EqualError(t, nameErr, "empty", "%q", name)
		assert.NoError(t, algErr)
		assert.NoError(t, secretErr)
	}
}

// TestURLVersionWithoutETag: the status of a URL whose server gives no
// ETag names the version by the body's hash, as the reload's log line
// does, not by nothing (or by the last ETag a server gave).
func TestURLVersionWithoutETag(t *testing.T) {
	srv := newListServer(t, "tiktok.com\n")
	src, err := NewURL(srv.URL+"/l.txt", testOptions(t))
	require.NoError(t, err)
	rec := run(t, src)

	c := rec.waitCount(t, 1)
	st := waitStatus(t, src, func(st Status) bool { return st.HasContent })
	assert.Equal(t, c.Version(), st.Version)
	assert.Equal(t, "sha256:"+hex.EncodeToString(c.SHA256[:]), st.Version)
}

// TestSmallestMaxBytesApplied: sources.max_bytes of 1, the least the
// configuration takes, bounds a body at one byte; it is not taken for
// unset and replaced by DefaultMaxBytes, which would let a list through
// that the operator bounded.
func TestSmallestMaxBytesApplied(t *testing.T) {
	srv := newListServer(t, "a\n")
	opt := testOptions(t)
	opt.MaxBytes = 1
	src, err := NewURL(srv.URL+"/l.txt", opt)
	require.NoError(t, err)
	_, err = src.Fetch(t.Context())
	require.ErrorIs(t, err, ErrTooBig)
}

// TestLargestMaxBytesApplied: sources.max_bytes of 2^63-1, the most the
// configuration takes, bounds nothing: a body is taken. The read of one
// octet past the limit wrapped to a negative limit, which read nothing,
// and every body was refused as empty: check passed the value, and serve
// fetched no list.
func TestLargestMaxBytesApplied(t *testing.T) {
	srv := newListServer(t, "a.example\n")
	opt := testOptions(t)
	opt.MaxBytes = math.MaxInt64
	src, err := NewURL(srv.URL+"/l.txt", opt)
	require.NoError(t, err)
	c, err := src.Fetch(t.Context())
	require.NoError(t, err)
	assert.Equal(t, "a.example\n", string(c.Body))
}

// TestZoneDiskCopyIsNoTransfer: a zone restarted from its disk copy, its
// primary still at that serial, has made no transfer: Status.Transfers
// counts none (not one of type "cache"), and the zone served last
// changed by the disk copy (LastTransfer) until the primary sends another.
func TestZoneDiskCopyIsNoTransfer(t *testing.T) {
	p := startFakePrimary(t, testZone, 5, cnames(testZone, "a"), nil)
	opt := zoneTestOptions(t, nil)
	z, rec := startZone(t, p, opt)
	rec.waitCount(t, 1)
	waitFile(t, cachePath(opt.CacheDir, z.Name()))

	again, rec2 := startZone(t, p, opt)
	assert.True(t, rec2.waitCount(t, 1).FromCache)
	// The SOA check finds serial 5 current and confirms the disk copy.
	st := waitStatus(t, again, func(st Status) bool { return st.HasContent && !st.FromCache && st.LastError == nil })
	assert.Empty(t, st.Transfers, "no transfer made")
	assert.Equal(t, TransferCache, st.LastTransfer)
	assert.Equal(t, uint32(5), st.Serial)
	assert.Equal(t, 1, rec2.count(), "the zone is current: nothing delivered again")
}
