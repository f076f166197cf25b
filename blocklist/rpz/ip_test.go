package rpz

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseIPTrigger(t *testing.T) {
	for _, tc := range []struct {
		in   string // the labels before rpz-ip
		want string // the prefix, or "" for an error
		err  error
	}{
		{"32.1.2.0.192", "192.0.2.1/32", nil},
		{"24.0.2.0.192", "192.0.2.0/24", nil},
		{"8.0.0.0.10", "10.0.0.0/8", nil},
		{"1.0.0.0.128", "128.0.0.0/1", nil},
		{"128.1.zz.db8.2001", "2001:db8::1/128", nil},
		{"48.zz.db8.2001", "2001:db8::/48", nil},
		{"128.zz.1", "1::/128", nil},
		{"128.1.zz", "::1/128", nil},
		{"64.zz.2001", "2001::/64", nil},
		{"128.1.0.0.0.0.0.db8.2001", "2001:db8::1/128", nil},
		{"128.1.ZZ.0DB8.2001", "2001:db8::1/128", nil},
		{"128.8.7.6.5.4.3.zz.1", "1::3:4:5:6:7:8/128", nil},
		{"128.1.2.3.4.5.6.7.8", "8:7:6:5:4:3:2:1/128", nil},
		{"128.1.zz.ffff", "ffff::1/128", nil},
		{"128.66.c000.ffff.zz", "192.0.0.102/32", nil}, // IPv4-mapped: the IPv4 prefix
		{"120.200.c000.ffff.zz", "192.0.2.0/24", nil},
		{"64.zz.ffff.zz", "", ErrZZ},
		{"80.zz.ffff", "ffff::/80", nil},
		{"96.0.0.ffff.zz", "", ErrPrefixLength}, // ::ffff:0:0/96: every IPv4 address
		{"97.0.0.ffff.zz", "0.0.0.0/1", nil},
		{"80.zz", "::/80", nil}, // holds ::ffff:0:0/96, and so every IPv4 address (List.MatchIP)
		{"33.1.2.0.192", "", ErrPrefixLength},
		{"129.1.zz.db8.2001", "", ErrPrefixLength},
		{"0.0.0.0.0", "", ErrPrefixLength},
		{"032.1.2.0.192", "", ErrPrefixLength},
		{"08.0.0.0.10", "", ErrPrefixLength}, // a leading zero of two digits too
		{"x.1.2.0.192", "", ErrPrefixLength},
		{"-1.1.2.0.192", "", ErrPrefixLength},
		{"24", "", ErrAddress},
		{"24.1.2.0.192", "", ErrHostBits},
		{"8.1.0.0.10", "", ErrHostBits},
		{"32.zz.db8.2001", "", nil}, // placeholder replaced below
		{"32.1.zz.db8.2001", "", ErrHostBits},
		{"128.1.zz.db8.zz.2001", "", ErrZZ},
		{"128.1.zz.2.3.4.5.6.7.8", "", ErrZZ},
		{"128.8.7.6.5.4.3.2.1.zz", "", ErrZZ}, // zz first in the address, before eight groups
		{"128.zz", "", nil},                   // :: /128 — valid, see below
		{"128.1.2.3.4.5.6.7", "", ErrAddress},
		{"128.1.2.3.4.5.6.7.8.9", "", ErrAddress},
		{"128.1.zz.db8g.2001", "", ErrAddress},
		{"128.1.zz.12345.2001", "", ErrAddress},
		{"128.1.zz.00db8.2001", "", ErrAddress}, // five digits, though their value fits a group
		{"32.256.2.0.192", "", ErrAddress},
		{"32.01.2.0.192", "", ErrAddress},
		{"32.2.0.192", "", ErrAddress},
		{"32.1..0.192", "", ErrAddress},
		{"32.z.2.0.192", "", ErrAddress},
		{"128.1.z.db8.2001", "", ErrAddress},
		{"128.1.zzz.db8.2001", "", ErrAddress},
	} {
		if tc.in == "32.zz.db8.2001" {
			tc.want = "2001:db8::/32"
		}
		if tc.in == "128.zz" {
			tc.want = "::/128"
		}
		t.Run(tc.in, func(t *testing.T) {
			p, err := parseIPTrigger(tc.in)
			if tc.want == "" {
				require.Error(t, err, "parsed as %s", p)
				assert.ErrorIs(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, netip.MustParsePrefix(tc.want), p)
		})
	}
	_, err := parseIPTrigger("24")
	assert.ErrorContains(t, err, `"24" has no address`, "not read as an IPv6 address of no groups")
}

// TestParseIPTriggerSaysWhatIsWrong: each refusal names the label or the
// prefix that is wrong and what would be right, as a zone's author reads
// it in the list's problems.
func TestParseIPTriggerSaysWhatIsWrong(t *testing.T) {
	for in, want := range map[string]string{
		"0.0.0.0.10":        `bad prefix length in rpz-ip trigger: "0" is not 1 to 32 (IPv4) or 1 to 128 (IPv6)`,
		"129.1.zz.db8.2001": `bad prefix length in rpz-ip trigger: "129" is not 1 to 32 (IPv4) or 1 to 128 (IPv6)`,
		"33.1.2.0.192":      `bad prefix length in rpz-ip trigger: /33 is longer than the 32 bits of 192.0.2.1`,
		"96.0.0.ffff.zz":    `bad prefix length in rpz-ip trigger: ::ffff:0.0.0.0/96 holds every IPv4 address, as an IPv4 prefix of length 0 would`,
		"24.1.2.0.192":      `rpz-ip prefix has host bits set: 192.0.2.1/24, did you mean 192.0.2.0/24`,
		// With host bits, ::ffff:0:0/96 is still IPv4's /0: "did you mean
		// ::ffff:0.0.0.0/96" offered a prefix refused in turn.
		"96.1.0.ffff.zz":      `bad prefix length in rpz-ip trigger: ::ffff:0.0.0.1/96 holds every IPv4 address, as an IPv4 prefix of length 0 would`,
		"32.256.2.0.192":      `bad address in rpz-ip trigger: "256" is not an IPv4 octet`,
		"128.1.zz.12345.2001": `bad address in rpz-ip trigger: "12345" is not an IPv6 group (1 to 4 hexadecimal digits)`,
		"128.1.2.3.4.5.6.7":   `bad address in rpz-ip trigger: 7 groups, an IPv6 address has 8 (or zz for a run of zeros)`,
		"64.a":                `bad address in rpz-ip trigger: 1 group, an IPv6 address has 8 (or zz for a run of zeros)`,
		// An IPv4 address with an octet left out is said to be one, not
		// an IPv6 address of too few groups.
		"24.1.0.192":             `bad address in rpz-ip trigger: 1.0.192 is 3 octets, an IPv4 address has 4, zeros written too (24.0.2.0.192.rpz-ip is 192.0.2.0/24)`,
		"8.10":                   `bad address in rpz-ip trigger: 10 is 1 octet, an IPv4 address has 4, zeros written too (24.0.2.0.192.rpz-ip is 192.0.2.0/24)`,
		"128.8.7.6.5.4.3.2.1.zz": `bad zz in rpz-ip trigger: it stands for one run of zero groups of an IPv6 address, once: zz with 8 other groups stands for no group`,
		"128.1.zz.db8.zz.2001":   `bad zz in rpz-ip trigger: it stands for one run of zero groups of an IPv6 address, once`,
	} {
		_, err := parseIPTrigger(in)
		assert.EqualError(t, err, want, in)
	}
}

func TestIPTrigger(t *testing.T) {
	for _, tc := range []struct{ prefix, owner string }{
		{"192.0.2.1/32", "32.1.2.0.192.rpz-ip"},
		{"192.0.2.0/24", "24.0.2.0.192.rpz-ip"},
		{"2001:db8::1/128", "128.1.zz.db8.2001.rpz-ip"},
		{"2001:db8::/48", "48.zz.db8.2001.rpz-ip"},
		{"2001:db8:0:1:0:0:0:1/128", "128.1.zz.1.0.db8.2001.rpz-ip"},    // the longer run of zeros
		{"2001:db8:0:0:1:0:0:1/128", "128.1.0.0.1.zz.db8.2001.rpz-ip"},  // the first of equal runs
		{"2001:db8:1:1:1:1:0:1/128", "128.1.0.1.1.1.1.db8.2001.rpz-ip"}, // a single zero group is written
		{"::/128", "128.zz.rpz-ip"},
		{"1:2:3:4:5:6:7:8/128", "128.8.7.6.5.4.3.2.1.rpz-ip"},
	} {
		t.Run(tc.prefix, func(t *testing.T) {
			p := netip.MustParsePrefix(tc.prefix)
			owner := IPTrigger(p)
			assert.Equal(t, tc.owner, owner)
			back, err := parseIPTrigger(owner[:len(owner)-len(".rpz-ip")])
			require.NoError(t, err)
			assert.Equal(t, p, back)
		})
	}
}

// FuzzIPTrigger checks that every prefix a trigger parses to is written
// back to a trigger that parses to it again.
func FuzzIPTrigger(f *testing.F) {
	for _, s := range []string{"32.1.2.0.192", "128.1.zz.db8.2001", "48.zz.db8.2001", "128.zz", "120.200.c000.ffff.zz", "1.0.0.0.0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := parseIPTrigger(s)
		if e, ok := errors.AsType[*PrefixMeantError](err); ok {
			// The prefix meant is one a trigger takes.
			owner := IPTrigger(e.Meant)
			if _, err := parseIPTrigger(owner[:len(owner)-len(".rpz-ip")]); err != nil {
				t.Fatalf("%q: %v offers %s, whose trigger %s is refused: %v", s, e, e.Meant, owner, err)
			}
		}
		if err != nil {
			return
		}
		if !p.IsValid() || p.Masked() != p || p.Bits() == 0 || p.Addr().Is4In6() && p.Bits() >= 96 {
			t.Fatalf("%q parsed to %s", s, p)
		}
		owner := IPTrigger(p)
		back, err := parseIPTrigger(owner[:len(owner)-len(".rpz-ip")])
		if err != nil || back != p {
			t.Fatalf("%q: %s written as %s parses to %s, %v", s, p, owner, back, err)
		}
	})
}
