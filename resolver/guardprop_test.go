package resolver

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/stretchr/testify/require"
)

// guardNames are the names the guard property is checked over: a small
// tree, so that random lists overlap above, below and beside each other.
var guardNames = []string{"tiktok.com", "www.tiktok.com", "a.www.tiktok.com", "b.tiktok.com", "capcut.com", "x.capcut.com"}

// randomPolicy is a blocking policy of a plain block list, an RPZ block
// list (exact and `*.` triggers, blocking or passthru) and a plain allow
// list, each a random choice of guardNames drawn from r.
func randomPolicy(t *testing.T, r *rand.Rand, tag string) *Policy {
	t.Helper()
	var plain, zone, allow strings.Builder
	zone.WriteString(rpzHead)
	for _, n := range guardNames {
		if r.IntN(3) == 0 {
			plain.WriteString(n + "\n")
		}
		for _, owner := range []string{n, "*." + n} {
			switch r.IntN(6) {
			case 0:
				zone.WriteString(owner + " CNAME .\n")
			case 1:
				zone.WriteString(owner + " CNAME rpz-passthru.\n")
			}
		}
		if r.IntN(5) == 0 {
			allow.WriteString(n + "\n")
		}
	}
	parse := func(name, text string) List {
		l, err := blocklist.Parse(name, []byte(text))
		require.NoError(t, err, "%s (%s):\n%s", name, tag, text)
		return l
	}
	p := &Policy{Name: "gov", Block: []List{parse("plain.txt", plain.String()), parse("zone.rpz", zone.String())},
		Allow: []List{parse("allow.txt", allow.String())}}
	p.compile()
	return p
}

// TestGuardHoldsEveryExemption checks policyUnblocked against brute force:
// for random pairs of a policy's lists, whenever some name (each name of
// the tree, the names below each, and a child no list holds) is blocked
// before and allowed after, the change is held (ErrExempted). Each pair is
// also the same policy with one list changed, as a reload finds them.
func TestGuardHoldsEveryExemption(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var asked []string
	for _, n := range guardNames {
		asked = append(asked, n, "*."+n, "zz."+n, "zz.zz."+n)
	}
	held, cases := 0, 3000
	for i := range cases {
		was, now := randomPolicy(t, r, "before"), randomPolicy(t, r, "after")
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
		var exempted []string
		for _, n := range asked {
			if was.Decide(n).Blocked && now.Decide(n).Allowed {
				exempted = append(exempted, n)
			}
		}
		prev := &Snapshot{Policies: []*Policy{was}}
		next := &Snapshot{Policies: []*Policy{now}}
		err := errors.Join(policyUnblocked(prev, next, 0.5, map[string]bool{})...)
		if len(exempted) > 0 {
			held++
			require.ErrorIs(t, err, ErrExempted, "case %d: %v allowed now, not held\n%s", i, exempted, policyLists(was, now))
		} else if err != nil {
			require.NotErrorIs(t, err, ErrExempted, "case %d: nothing allowed now, held\n%s", i, policyLists(was, now))
		}
	}
	t.Logf("%d of %d random changes allowed a blocked name; every one held", held, cases)
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
