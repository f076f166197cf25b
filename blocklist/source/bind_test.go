package source

import (
	"fmt"

	"github.com/dnsfence/dnsfence/internal/testnet"
)

// The zone transfer tests run BIND's named as a primary
// (testnet.StartBIND).

// bindKey is k as named.conf writes it.
func bindKey(k *TSIG) *testnet.BINDKey {
	return &testnet.BINDKey{Name: k.Name, Algorithm: k.Algorithm, Secret: k.Secret}
}

// rpzZone returns the text of an RPZ zone at serial with a CNAME . record
// for each name (relative to the zone).
func rpzZone(zone string, serial uint32, names ...string) string {
	records := make([]string, len(names))
	for i, n := range names {
		records[i] = fmt.Sprintf("%s CNAME .", n)
	}
	return testnet.RPZText(zone, serial, records...)
}
