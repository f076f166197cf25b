package resolver

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/dnsfence/dnsfence/blocklist"
)

// Explanation is the decision for one client and name, with its reasons.
type Explanation struct {
	Client    netip.Addr
	Name      string
	Allowed   bool          // the client is inside allowed_clients
	HasPolicy bool          // a policy range holds the client
	Range     ClientRange   // the most specific range, when HasPolicy
	Beaten    []ClientRange // wider ranges holding the client that lost to Range
	Decision  Decision
	Verdict   string // refused | blocked | allowed | forwarded
}

// Explain decides name for client exactly as a query would, and says why.
// It does not look at upstream answers (CNAME chains).
func (s *Snapshot) Explain(client netip.Addr, name string) Explanation {
	client = client.Unmap()
	e := Explanation{Client: client, Name: name}
	if e.Allowed = s.Allowed(client); !e.Allowed {
		e.Verdict = "refused"
		return e
	}
	e.Range, e.HasPolicy = s.PolicyFor(client)
	if e.HasPolicy {
		for _, cr := range s.byClient.Supernets(netip.PrefixFrom(client, client.BitLen())) {
			if cr.Range.Prefix != e.Range.Range.Prefix {
				e.Beaten = append(e.Beaten, cr)
			}
		}
	}
	e.Verdict = "forwarded"
	if e.HasPolicy && e.Range.Policy.Blocks() {
		e.Decision = e.Range.Policy.Decide(name)
		switch {
		case e.Decision.Blocked:
			e.Verdict = "blocked"
		case e.Decision.Allowed:
			e.Verdict = "allowed"
		}
	}
	return e
}

// String is the explanation as `dnsfence explain` prints it.
func (e Explanation) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "client %s\n", e.Client)
	if !e.Allowed {
		b.WriteString("  not in allowed_clients: every query is REFUSED\n")
		fmt.Fprintf(&b, "verdict: refused\n")
		return b.String()
	}
	if !e.HasPolicy {
		b.WriteString("  no policy range holds this client: every query is forwarded untouched\n")
	} else {
		fmt.Fprintf(&b, "  policy %q from range %s (%s)\n", e.Range.Policy.Name, e.Range.Range.Prefix, where(e.Range.Range))
		for _, cr := range e.Beaten {
			fmt.Fprintf(&b, "  beats wider range %s of policy %q (%s)\n", cr.Range.Prefix, cr.Policy.Name, where(cr.Range))
		}
		if !e.Range.Policy.Blocks() {
			b.WriteString("  the policy has no block lists: an exemption\n")
		}
	}
	fmt.Fprintf(&b, "name %s\n", e.Name)
	switch d := e.Decision; {
	case d.Blocked:
		fmt.Fprintf(&b, "  blocked by %s:%d: %s\n", d.Entry.List.File(), d.Entry.Line, d.Entry.Name)
		fmt.Fprintf(&b, "  action %s\n", e.Range.Policy.Action)
	case d.Allowed:
		fmt.Fprintf(&b, "  allowed by %s:%d: %s (allow beats block)\n", d.Entry.List.File(), d.Entry.Line, d.Entry.Name)
	case e.HasPolicy && e.Range.Policy.Blocks():
		b.WriteString("  on no list of the policy\n")
	}
	fmt.Fprintf(&b, "verdict: %s\n", e.Verdict)
	return b.String()
}

func where(r blocklist.Range) string {
	if r.Line > 0 {
		return fmt.Sprintf("%s:%d", r.File, r.Line)
	}
	return r.File
}
