//go:build race

package resolver

// raceEnabled: the race detector is on. It makes sync.Pool drop a share of
// what is put back, so counts of allocations mean nothing then.
const raceEnabled = true
