package resolver

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/miekg/dns"
)

// TestECSNetworkLosesNoDevicesBlock is the fail-closed rule for networks
// a trusted proxy names by EDNS Client Subnet, checked by brute force:
// whenever one address of the network, asking alone, would be blocked,
// the network is blocked. Random configurations of four policies (nested
// and side-by-side ranges in 10.0.0.0/24, block and allow lists, exemptions,
// shadow mode) and every network of /24 to /32 in a random sample, each
// name of the lists asked for every address in the network, and for a
// third of the networks with answers whose CNAME leads to each name.
func TestECSNetworkLosesNoDevicesBlock(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 14))
	files := map[string]string{
		"a.txt":     "n1.example\nn2.example\n",
		"b.txt":     "n3.example\nsub.n1.example\n",
		"c.txt":     "n4.example\nn5.example\n",
		"allow.txt": "n2.example\nn5.example\nsub.n1.example\n",
	}
	names := []string{"n1.example.", "x.n1.example.", "sub.n1.example.", "n2.example.", "n3.example.", "n4.example.", "n5.example.", "other.example."}
	source := netip.MustParseAddr("127.0.0.2")
	configs, networks, checks := 0, 0, 0
	for configs < 150 {
		var b strings.Builder
		b.WriteString("upstreams: [\"127.0.0.1:1\"]\nallowed_clients: [\"10.0.0.0/8\", \"127.0.0.0/8\"]\npolicies:\n")
		used := map[netip.Prefix]bool{}
		for p := range 4 {
			var ranges []string
			for range 1 + rng.IntN(3) {
				bits := 25 + rng.IntN(8)
				r := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(rng.IntN(256))}), bits).Masked()
				if !used[r] {
					used[r] = true
					ranges = append(ranges, `"`+r.String()+`"`)
				}
			}
			if len(ranges) == 0 {
				continue
			}
			fmt.Fprintf(&b, "  - name: p%d\n    clients: [%s]\n", p, strings.Join(ranges, ", "))
			var block []string
			for _, l := range []string{"a.txt", "b.txt", "c.txt"} {
				if rng.IntN(2) == 0 {
					block = append(block, `"`+l+`"`)
				}
			}
			if len(block) > 0 {
				fmt.Fprintf(&b, "    block: [%s]\n", strings.Join(block, ", "))
				if rng.IntN(3) == 0 {
					b.WriteString("    allow: [\"allow.txt\"]\n")
				}
				if rng.IntN(6) == 0 {
					b.WriteString("    action: log\n")
				}
			}
		}
		path := writeConfig(t, b.String(), files)
		cfg, err := config.Load(path)
		if err != nil {
			continue // e.g. a range of one policy shadowed whole by another's
		}
		snap, err := BuildSnapshot(cfg, nil)
		if err != nil {
			continue
		}
		configs++
		for i := range 12 {
			bits := 24 + rng.IntN(9)
			n := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(rng.IntN(256))}), bits).Masked()
			networks++
			// The answers too, for a third of the networks: a CNAME from
			// the name asked to each name of the lists.
			targets := []string{""}
			if i%3 == 0 {
				targets = names
			}
			for _, name := range names {
				for _, target := range targets {
					var resp *dns.Msg
					if target != "" {
						resp = new(dns.Msg)
						resp.SetQuestion(name, dns.TypeA)
						resp.Answer = []dns.RR{mustRR("%s 60 IN CNAME %s", name, target), mustRR("%s 60 IN A 192.0.2.1", target)}
					}
					blocked := func(client netip.Prefix, from netip.Addr) (bool, string) {
						o := snap.decide(from, client, name)
						if resp != nil {
							o.inspect(resp)
						}
						if o.result != ResultBlocked {
							return false, ""
						}
						return true, o.policy.Policy.Name
					}
					got, _ := blocked(n, source)
					for a := n.Addr(); n.Contains(a); a = a.Next() {
						alone, by := blocked(netip.PrefixFrom(a, 32), a)
						checks++
						if alone && !got {
							t.Fatalf("network %s asking %s (answer CNAME %q) is not blocked, but %s alone is, by policy %s\nconfiguration:\n%s",
								n, name, target, a, by, b.String())
						}
					}
				}
			}
		}
	}
	t.Logf("%d configurations, %d networks, %d device checks", configs, networks, checks)
}
