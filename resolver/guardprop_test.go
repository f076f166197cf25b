package resolver

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/blocklist/rpz"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"
)

// guardNames are the names the guard property is checked over: a small
// tree, so that random lists overlap above, below and beside each other.
var guardNames = []string{"tiktok.com", "www.tiktok.com", "a.www.tiktok.com", "b.tiktok.com", "capcut.com", "x.capcut.com"}

// randomPolicy is a blocking policy of a plain block list, an RPZ block
// list (exact and `*.` triggers, blocking or passthru) and a plain allow
// list, each a random choice of guardNames drawn from r.
func randomPolicy(t *testing.T, r *rand.Rand) *Policy {
	t.Helper()
	var plain, allow strings.Builder
	for _, n := range guardNames {
		if r.IntN(3) == 0 {
			plain.WriteString(n + "\n")
		}
		if r.IntN(5) == 0 {
			allow.WriteString(n + "\n")
		}
	}
	p := &Policy{Name: "gov", Block: []List{parseList(t, "plain.txt", plain.String()), randomZone(t, r, "zone.rpz")},
		Allow: []List{parseList(t, "allow.txt", allow.String())}}
	p.compile()
	return p
}

// randomZone is an RPZ list called name of exact and `*.` triggers,
// blocking or passthru, for a random choice of guardNames.
func randomZone(t *testing.T, r *rand.Rand, name string) *blocklist.List {
	t.Helper()
	var zone strings.Builder
	zone.WriteString(rpzHead)
	for _, n := range guardNames {
		for _, owner := range []string{n, "*." + n} {
			switch r.IntN(4) {
			case 0:
				zone.WriteString(owner + " CNAME .\n")
			case 1:
				zone.WriteString(owner + " CNAME rpz-passthru.\n")
			}
		}
	}
	return parseList(t, name, zone.String())
}

// parseList is the list called name of text, which must have no bad line.
func parseList(t *testing.T, name, text string) *blocklist.List {
	t.Helper()
	l, err := blocklist.Parse(name, []byte(text))
	require.NoError(t, err, "%s:\n%s", name, text)
	return l
}

// TestGuardHoldsEveryExemption checks policyUnblocked against brute force:
// for random pairs of a policy's lists, whenever some name (each name of
// the tree, the names below each, and a child no list holds) is blocked
// before and allowed after, the change is held (ErrExempted). Each pair is
// also the same policy with one list changed, as a reload finds them.
func TestGuardHoldsEveryExemption(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	held, cases := 0, 3000
	for i := range cases {
		was, now := randomPolicy(t, r), randomPolicy(t, r)
		// Keep some lists: a reload changes one or two of three.
		for j := range now.Block {
			if r.IntN(2) == 0 {
				now.Block[j] = was.Block[j]
			}
		}
		if r.IntN(2) == 0 {
			now.Allow[0] = was.Allow[0]
		}
		now.compile()
		if checkGuard(t, i, was, now) {
			held++
		}
	}
	t.Logf("%d of %d random changes allowed a blocked name; every one held", held, cases)
}

// guardAsked is every name the guard property is checked over: each name
// of the tree, the names below each, and a child and grandchild no list
// holds.
var guardAsked = func() []string {
	var asked []string
	for _, n := range guardNames {
		asked = append(asked, n, "*."+n, "zz."+n, "zz.zz."+n)
	}
	return asked
}()

// checkGuard checks policyUnblocked on case i, a change from policy was
// to now, against brute force over guardAsked: held as ErrExempted
// exactly when some name was blocked and is allowed now. It reports
// whether the change allowed one.
func checkGuard(t *testing.T, i int, was, now *Policy) bool {
	t.Helper()
	var exempted []string
	for _, n := range guardAsked {
		if was.Decide(n).Blocked && now.Decide(n).Allowed {
			exempted = append(exempted, n)
		}
	}
	err := errors.Join(policyUnblocked(&Snapshot{Policies: []*Policy{was}}, &Snapshot{Policies: []*Policy{now}}, 0.5, map[string]bool{})...)
	if len(exempted) > 0 {
		require.ErrorIs(t, err, ErrExempted, "case %d: %v allowed now, not held\n%s", i, exempted, policyLists(was, now))
	} else if err != nil {
		require.NotErrorIs(t, err, ErrExempted, "case %d: nothing allowed now, held\n%s", i, policyLists(was, now))
	}
	return len(exempted) > 0
}

// policyLists is the lists of policies, for a failure.
func policyLists(ps ...*Policy) string {
	var b strings.Builder
	for i, p := range ps {
		for _, l := range slices.Concat(p.Block, p.Allow) {
			var es []string
			for e, tr := range l.(*blocklist.List).AllTriggers() {
				n := e.Name
				if tr.Wildcard {
					n = "*." + n
				}
				es = append(es, n+" "+tr.Action.String())
			}
			fmt.Fprintf(&b, "%d %s: %s\n", i, l.File(), strings.Join(es, ", "))
		}
	}
	return b.String()
}

// TestGuardHoldsEveryExemptionOnUpdates is TestGuardHoldsEveryExemption
// for RPZ lists an IXFR updates (blocklist.List.Update), whose changes
// the guard reads from the update (Delta) instead of a walk: two zones,
// each update removing and adding random triggers, beside a plain block
// list and an allow list that a change may replace too.
func TestGuardHoldsEveryExemptionOnUpdates(t *testing.T) {
	const origin = "rpz.example.gov."
	r := rand.New(rand.NewPCG(3, 4))
	record := func(owner string, a blocklist.Action) dns.RR {
		target := "."
		if a == blocklist.ActionPassthru {
			target = "rpz-passthru."
		}
		rr, err := dns.NewRR(owner + "." + origin + " 300 IN CNAME " + target)
		require.NoError(t, err)
		return rr
	}
	// update removes some of l's triggers and adds some it lacks.
	update := func(l *blocklist.List) *blocklist.List {
		held := map[string]bool{}
		var remove, add []dns.RR
		for e, tr := range l.AllTriggers() {
			owner := e.Name
			if tr.Wildcard {
				owner = "*." + owner
			}
			held[owner] = true
			if r.IntN(3) == 0 {
				remove = append(remove, record(owner, tr.Action))
			}
		}
		for _, n := range guardNames {
			for _, owner := range []string{n, "*." + n} {
				if !held[owner] && r.IntN(5) == 0 {
					a := blocklist.ActionNXDOMAIN
					if r.IntN(2) == 0 {
						a = blocklist.ActionPassthru
					}
					add = append(add, record(owner, a))
				}
			}
		}
		n, err := l.Update([32]byte{byte(r.IntN(256))}, 2,
			func(h rpz.Handler) { rpz.FromRecords(origin, remove, h) }, func(h rpz.Handler) { rpz.FromRecords(origin, add, h) })
		require.NoError(t, err)
		return n
	}
	held, cases := 0, 2000
	for i := range cases {
		was := randomPolicy(t, r)
		was.Block = append(was.Block, randomZone(t, r, "zone2.rpz"))
		was.compile()
		now := &Policy{Name: was.Name, Block: slices.Clone(was.Block), Allow: slices.Clone(was.Allow)}
		for j := 1; j < 3; j++ {
			if r.IntN(4) != 0 {
				now.Block[j] = update(was.Block[j].(*blocklist.List))
			}
		}
		if r.IntN(4) == 0 {
			now.Allow[0] = randomPolicy(t, r).Allow[0]
		}
		now.compile()
		if checkGuard(t, i, was, now) {
			held++
		}
	}
	t.Logf("%d of %d random updates allowed a blocked name; every one held", held, cases)
}
