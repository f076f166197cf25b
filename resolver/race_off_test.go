//go:build !race

package resolver

// raceEnabled: the race detector is on (see race_on_test.go).
const raceEnabled = false
