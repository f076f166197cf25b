package testnet

import (
	"time"
	"unsafe"
)

// WallStepped is t with its wall clock moved by step and its monotonic
// reading kept, as time.Now gives after the machine's clock was stepped
// (NTP at boot, a VM resumed from a snapshot): CLOCK_REALTIME has no
// namespace, so a test cannot step the real one. It relies on time.Time's
// layout (wall seconds in bits 30-62 of its first word while it has a
// monotonic reading); WallSteppable checks that it still holds.
func WallStepped(t time.Time, step time.Duration) time.Time {
	p := (*struct {
		wall uint64
		ext  int64
		loc  *time.Location
	})(unsafe.Pointer(&t))
	p.wall += uint64(int64(step/time.Second)) << 30
	return t
}

// WallSteppable reports whether WallStepped moves the wall clock alone.
func WallSteppable() bool {
	base := time.Now()
	s := WallStepped(base.Add(time.Second), -time.Hour)
	return s.Sub(base) == time.Second && s.Round(0).Sub(base.Round(0)) == time.Second-time.Hour
}
