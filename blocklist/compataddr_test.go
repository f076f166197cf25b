package blocklist

import (
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestAddressAloneIPv4CompatibleOffersIPv4Trigger: an address alone in a
// list is refused with the policy-zone trigger that blocks the answers
// holding it. Written IPv4-compatible (`::10.0.0.9`, or `::a00:a` as Go and
// Python print it), the trigger offered was `128.9.a.zz.rpz-ip`, for
// ::a00:a/128, which only an AAAA record holding that deprecated address
// meets, never an A record 10.0.0.9 (answers are matched by their IPv4
// address): a trigger that loads and blocks nothing meant. It is read as
// the IPv4 address, as a client range written so is (ParsePrefix), and an
// IPv4-mapped one already was; ::1 and :: stay the loopback and unspecified
// addresses.
func TestAddressAloneIPv4CompatibleOffersIPv4Trigger(t *testing.T) {
	_, warn := Parse("lists/ips.txt", []byte("::10.0.0.9\n||::a00:a^\n::1\n0.0.0.0 ::\na.example\n"))
	hold := func(line int, a, trigger, text string) string {
		return `lists/ips.txt:` + strconv.Itoa(line) + `: an address alone is not a domain name (to block the answers that hold ` + a +
			`, as Blocky reads an address in a denylist, write "` + trigger + ` CNAME ." in a policy zone, a file ending .rpz; "CNAME rpz-passthru." there lets them through): "` + text + `"`
	}
	assert.EqualError(t, warn, strings.Join([]string{
		hold(1, "10.0.0.9", "32.9.0.0.10.rpz-ip", "::10.0.0.9"),
		hold(2, "10.0.0.10", "32.10.0.0.10.rpz-ip", "||::a00:a^"),
		hold(3, "::1", "128.1.zz.rpz-ip", "::1"),
		hold(4, "::", "128.zz.rpz-ip", "::"),
	}, "\n"))
}
