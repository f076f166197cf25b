package source

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestZoneRefusedWholeTransferOfferedAgain: a whole transfer (serial 2) refused by
// the receiver after the zone held (serial 1) let its records go; the
// primary goes back to serial 1: the zone is offered again once, whole,
// with the records of serial 1, and later checks deliver nothing.
func TestZoneRefusedWholeTransferOfferedAgain(t *testing.T) {
	p := startFakePrimary(t, testZone, 1, cnames(testZone, "a", "b"), nil)
	opt := zoneTestOptions(t, nil)
	z, rec := startZone(t, p, opt)
	rec.waitCount(t, 1)

	rec.setRefuse(errors.New("held: the zone shrank"))
	p.update(func(p *fakePrimary) { p.soa, p.records = testSOA(testZone, 2), cnames(testZone, "a") })
	poke(t, z)
	require.Eventually(t, func() bool { return z.Status().Failures >= 1 }, waitFor, tick)
	assert.Equal(t, 1, rec.count())

	rec.setRefuse(nil)
	p.update(func(p *fakePrimary) { p.soa, p.records = testSOA(testZone, 1), cnames(testZone, "a", "b") })
	poke(t, z)
	c := rec.waitCount(t, 2)
	assert.Equal(t, uint32(1), c.Serial)
	assert.Equal(t, []string{"a", "b"}, owners(c))
	for range 3 {
		poke(t, z)
	}
	time.Sleep(300 * time.Millisecond)
	assert.Equal(t, 2, rec.count(), "offered once")
	st := waitStatus(t, z, func(st Status) bool { return st.LastError == nil })
	assert.Equal(t, uint32(1), st.Serial)
	assert.Equal(t, uint64(2), st.Transfers[TransferAXFR], "serial 1 transferred again, its records having been let go")
}
