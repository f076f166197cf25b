package upstream

import "time"

// clockEpoch is the origin of the times an upstream keeps as numbers in
// an atomic.Int64 (when any upstream last answered, when one went down,
// came back up, was last checked or last logged flapping, when a kept DoQ
// or DoH connection last had an answer): a monotonic reading, so that the
// machine's wall clock stepping (NTP at boot, a VM resumed from a
// snapshot) moves none of the intervals measured from them. As Unix
// nanoseconds, a clock stepped back an hour left an hour in which
// /readyz asked no upstream, no upstream's health was checked and a
// silent connection was kept.
var clockEpoch = time.Now()

// clockReading is t in nanoseconds since clockEpoch by t's monotonic
// reading; never 0, which those fields keep for "never".
func clockReading(t time.Time) int64 {
	if n := int64(t.Sub(clockEpoch)); n != 0 {
		return n
	}
	return 1
}

// clockTime is the time clockReading read as n, with a monotonic reading.
func clockTime(n int64) time.Time { return clockEpoch.Add(time.Duration(n)) }
