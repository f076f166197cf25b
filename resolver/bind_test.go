package resolver

import (
	"fmt"

	"github.com/dnsfence/dnsfence/internal/testnet"
)

// The zone transfer tests run BIND's named as the primary of an RPZ zone
// (testnet.StartBIND).

// tsigYAML is k as the sources.tsig value.
func tsigYAML(k testnet.BINDKey) string {
	return fmt.Sprintf("{name: %s, algorithm: %s, secret: %q}", k.Name, k.Algorithm, k.Secret)
}
