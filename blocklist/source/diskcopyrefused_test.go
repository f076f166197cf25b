package source

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestZoneDiskCopyRefusedAtStart: a restart whose disk copy the receiver
// refuses (a reload guard held it) counts the refusal a failure and holds
// nothing, so that the primary's zone of the same serial is transferred
// and delivered: held, the refused copy would make the primary's zone
// current, never delivered while the primary's serial stays (Refresh up to
// hours), with the status saying a zone is served.
func TestZoneDiskCopyRefusedAtStart(t *testing.T) {
	p := startFakePrimary(t, testZone, 5, cnames(testZone, "a", "b"), nil)
	opt := zoneTestOptions(t, nil)
	z, rec := startZone(t, p, opt)
	first := rec.waitCount(t, 1)
	waitFile(t, cachePath(opt.CacheDir, z.Name()))

	again, err := NewZone(z.Name(), opt)
	require.NoError(t, err)
	var mu sync.Mutex
	var refused, got []Content
	deliver := func(c Content) error {
		mu.Lock()
		defer mu.Unlock()
		if c.FromCache {
			refused = append(refused, c)
			return errors.New("held by a guard")
		}
		got = append(got, c)
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		again.Run(ctx, deliver)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(waitFor):
			t.Error("Run did not return after its context was cancelled")
		}
	})
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) > 0
	}, waitFor, tick, "the primary's zone is delivered after the disk copy was refused")
	mu.Lock()
	require.Len(t, refused, 1)
	assert.Equal(t, TransferCache, refused[0].Transfer)
	c := got[0]
	assert.Equal(t, TransferAXFR, c.Transfer)
	assert.Equal(t, uint32(5), c.Serial)
	assert.Equal(t, owners(first), owners(c))
	mu.Unlock()
	st := waitStatus(t, again, func(st Status) bool { return st.Transfers[TransferAXFR] == 1 })
	assert.GreaterOrEqual(t, st.Failures, uint64(1), "the refused copy counts as a failure")
	assert.True(t, st.HasContent)
	assert.False(t, st.FromCache)
}

// TestZoneCacheDirNotAFolder: a cache folder that is a file (a path typed
// wrong) fails the disk copy's write at its first step, with an error
// naming it (CacheError: dnsfence_source_cache_ok), and the zone
// transferred is delivered all the same.
func TestZoneCacheDirNotAFolder(t *testing.T) {
	p := startFakePrimary(t, testZone, 5, cnames(testZone, "a"), nil)
	opt := zoneTestOptions(t, nil)
	opt.CacheDir = filepath.Join(opt.CacheDir, "cache")
	require.NoError(t, os.WriteFile(opt.CacheDir, []byte("not a folder\n"), 0o644))
	z, rec := startZone(t, p, opt)
	c := rec.waitCount(t, 1)
	assert.Equal(t, []string{"a"}, owners(c))
	st := waitStatus(t, z, func(st Status) bool { return st.CacheError != nil })
	assert.ErrorIs(t, st.CacheError, syscall.ENOTDIR)
	assert.ErrorContains(t, st.CacheError, "writing cache: mkdir "+opt.CacheDir+": not a directory")
	assert.NoError(t, st.LastError)
}

// TestZoneReleasedZoneNotWrittenAsTheDiskCopy: the disk copy cannot be
// written; a whole transfer of serial 6 is cut off under way, after the
// records of serial 5, the zone held, were let go for it; the disk copy
// can be written again and the primary is back at serial 5. The look
// finds the zone current, and, its records let go, transfers it whole
// again to write it: the disk copy holds the zone, never its SOA alone
// (which a restart with the primary down would serve as a zone that
// blocks nothing), and is written (before writeHeld transferred it again,
// it stayed unwritten until the primary's next serial, and such a restart
// started without the list).
func TestZoneReleasedZoneNotWrittenAsTheDiskCopy(t *testing.T) {
	p, z, rec := releasedWhileDiskFails(t, zoneTestOptions(t, nil))
	p.update(func(p *fakePrimary) {
		p.soa, p.records, p.cutAfter = testSOA(testZone, 5), cnames(testZone, "a", "b"), 0
	})
	axfrs := len(slices.DeleteFunc(p.asked(), func(q uint16) bool { return q != dns.TypeAXFR }))
	st := lookedAgain(t, z)
	assert.Equal(t, uint32(5), st.Serial)
	assert.NoError(t, st.LastError)
	c, err := Cached(z)
	require.NoError(t, err, "the disk copy written again")
	assert.Equal(t, []string{"a", "b"}, owners(c), "the disk copy holds the zone")
	assert.Equal(t, uint32(5), c.Serial)
	assert.NoError(t, st.CacheError)
	assert.Equal(t, 1, rec.count(), "the zone is current: nothing delivered again")
	assert.Equal(t, axfrs+1, len(slices.DeleteFunc(p.asked(), func(q uint16) bool { return q != dns.TypeAXFR })),
		"transferred again once, for the disk copy")
}

// TestZoneReleasedZoneTransferredAgainAsHeld: as above, but the transfer
// again for the disk copy is refused (logged, nothing written, the next
// look tries again), then brings serial 6, newer than the zone held: not
// written as the zone held nor held, but left to the next look, which
// transfers and delivers it as any new serial.
func TestZoneReleasedZoneTransferredAgainAsHeld(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	opt := zoneTestOptions(t, nil)
	opt.Log = zap.New(core)
	p, z, rec := releasedWhileDiskFails(t, opt)

	p.update(func(p *fakePrimary) {
		p.soa, p.records, p.cutAfter, p.axfrRcode = testSOA(testZone, 5), cnames(testZone, "a", "b"), 0, dns.RcodeRefused
	})
	st := lookedAgain(t, z)
	assert.NoError(t, st.LastError, "the zone held is current")
	// Each look tries again: the second of lookedAgain's may be under way.
	assert.NotZero(t, logs.FilterMessage("zone source: transferring the zone held again for its disk copy failed").Len(), "%v", logs.All())
	_, err := Cached(z)
	assert.ErrorIs(t, err, ErrNoCopy)
	assert.Error(t, st.CacheError, "still failing")

	p.update(func(p *fakePrimary) {
		p.axfrRcode, p.xfrSOA, p.records = 0, testSOA(testZone, 6), cnames(testZone, "a", "b", "c")
	})
	st = lookedAgain(t, z)
	_, err = Cached(z)
	assert.ErrorIs(t, err, ErrNoCopy, "serial 6 is not the zone held")
	assert.Equal(t, uint32(5), st.Serial)
	assert.Equal(t, 1, rec.count())

	deliveredAtSerial6(t, p, z, rec, "a", "b", "c")
}

// TestZoneReleasedZoneOfOtherRecordsNotWritten: as
// TestZoneReleasedZoneNotWrittenAsTheDiskCopy, but the primary's zone of
// serial 5 is no longer the one served (edited without a new serial: c
// added). The transfer again for the disk copy is not written nor held,
// and a warning says why: the disk copy (a restart's list) and the zone
// held (what the next IXFR's differences are applied to, as the resolver
// applies them to the list it serves) would hold a zone the resolver
// never served. Serial 6 is delivered and written as any new serial.
func TestZoneReleasedZoneOfOtherRecordsNotWritten(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	opt := zoneTestOptions(t, nil)
	opt.Log = zap.New(core)
	p, z, rec := releasedWhileDiskFails(t, opt)
	p.update(func(p *fakePrimary) {
		p.soa, p.records, p.cutAfter = testSOA(testZone, 5), cnames(testZone, "a", "b", "c"), 0
	})
	st := lookedAgain(t, z)
	assert.Equal(t, uint32(5), st.Serial)
	assert.NoError(t, st.LastError, "the zone held is current")
	_, err := Cached(z)
	assert.ErrorIs(t, err, ErrNoCopy, "serial 5 of other records is not the zone served")
	assert.NotZero(t, logs.FilterMessage("zone source: the primary's zone of the serial held is not the one served; its disk copy waits for the next serial").Len(), "%v", logs.All())
	assert.Equal(t, 1, rec.count())

	deliveredAtSerial6(t, p, z, rec, "a", "b", "c")
}

// TestZoneReleasedZoneNewerOfSameRecordsNotHeld: the transfer again for
// the disk copy brings serial 6 with the records of the zone held (a, b:
// only the SOA changed) while the primary's SOA still says 5. It is not
// written nor held, for all its records being those served: held, serial
// 6 would be current at the next look and never delivered, the resolver
// serving serial 5 until the primary's next serial. Once the primary's
// SOA says 6 too, the look delivers it and writes it.
func TestZoneReleasedZoneNewerOfSameRecordsNotHeld(t *testing.T) {
	p, z, rec := releasedWhileDiskFails(t, zoneTestOptions(t, nil))
	p.update(func(p *fakePrimary) {
		p.soa, p.xfrSOA, p.records, p.cutAfter = testSOA(testZone, 5), testSOA(testZone, 6), cnames(testZone, "a", "b"), 0
	})
	st := lookedAgain(t, z)
	assert.Equal(t, uint32(5), st.Serial)
	_, err := Cached(z)
	assert.ErrorIs(t, err, ErrNoCopy, "serial 6 is not the zone held")
	assert.Equal(t, 1, rec.count())

	deliveredAtSerial6(t, p, z, rec, "a", "b")
}

// releasedWhileDiskFails starts a zone at serial 5 whose disk copy cannot
// be written (a folder is where its file goes), has a whole transfer of
// serial 6 cut off under way, after the records of the zone held were let
// go for it, and then makes the disk copy writable again.
func releasedWhileDiskFails(t *testing.T, opt Options) (p *fakePrimary, z *Zone, rec *receiver) {
	p = startFakePrimary(t, testZone, 5, cnames(testZone, "a", "b"), nil)
	z, err := NewZone("axfr://"+p.addr+"/rpz.test", opt)
	require.NoError(t, err)
	path := cachePath(opt.CacheDir, z.Name())
	require.NoError(t, os.MkdirAll(path, 0o755)) // a folder where the file goes: the rename fails
	require.NoError(t, os.WriteFile(filepath.Join(path, "x"), nil, 0o644))
	rec = &receiver{}
	runWith(t, z, rec)
	rec.waitCount(t, 1)
	waitStatus(t, z, func(st Status) bool { return st.CacheError != nil })

	p.update(func(p *fakePrimary) {
		p.soa, p.records, p.perMessage, p.cutAfter = testSOA(testZone, 6), cnames(testZone, "a", "b", "c"), 2, 1
	})
	poke(t, z)
	st := waitStatus(t, z, func(st Status) bool { return st.LastError != nil })
	require.ErrorContains(t, st.LastError, "cut off")
	require.NoError(t, os.RemoveAll(path))
	return p, z, rec
}

// deliveredAtSerial6 has the primary's SOA and transfers say serial 6,
// and checks that the next look delivers it, with the owners want, as the second
// copy, and writes it as the disk copy.
func deliveredAtSerial6(t *testing.T, p *fakePrimary, z *Zone, rec *receiver, want ...string) {
	t.Helper()
	p.update(func(p *fakePrimary) { p.soa, p.xfrSOA = testSOA(testZone, 6), nil })
	poke(t, z)
	c := rec.waitCount(t, 2)
	assert.Equal(t, uint32(6), c.Serial, "serial 6 delivered")
	assert.Equal(t, want, owners(c))
	waitStatus(t, z, func(now Status) bool { return now.CacheError == nil })
	c, err := Cached(z)
	require.NoError(t, err)
	assert.Equal(t, uint32(6), c.Serial)
	assert.Equal(t, want, owners(c))
}

// lookedAgain has z look once and returns its status once that look is
// over. Run looks once at a time: once a second look began, the first is
// over, its disk copy written if it wrote one.
func lookedAgain(t *testing.T, z *Zone) Status {
	t.Helper()
	before := z.Status().LastAttempt
	poke(t, z)
	waitStatus(t, z, func(now Status) bool { return now.LastAttempt.After(before) })
	first := z.Status().LastAttempt
	poke(t, z)
	waitStatus(t, z, func(now Status) bool { return now.LastAttempt.After(first) })
	return z.Status()
}
