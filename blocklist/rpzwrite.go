package blocklist

import (
	"bufio"
	"fmt"
	"io"
	"path/filepath"

	"github.com/dnsfence/dnsfence/blocklist/rpz"
)

// ZoneHeader is what WriteRPZ writes before the triggers.
type ZoneHeader struct {
	Serial  uint32   // the SOA serial (RFC 1035 §3.3.13)
	Comment []string // lines written first, each after "; "
}

// WriteRPZ writes plain block and allow lists as one Response Policy Zone
// file that BIND, Knot, NSD or any primary can serve and that dnsfence
// reads back (as an .rpz list or by zone transfer) to the same verdicts:
// every block entry, which blocks its name and every name below it,
// becomes two QNAME triggers, `name CNAME .` and `*.name CNAME .`; every
// allow entry the same with `CNAME rpz-passthru.`. As allow beats block, a
// block entry that an allow entry matches (the same name or a name below
// it) is left out, so that the zone's own precedence (an exact trigger
// beats a wildcard) cannot let it win; an entry already written for an
// earlier list is left out too, since an owner has one CNAME. An RPZ list
// is refused: it is a zone already.
//
// Owner names are relative and the file has no $ORIGIN, so that it loads
// as whatever zone the primary's configuration names (dnsfence reads it
// at the root). The apex has an SOA (refresh 1 h, retry 10 min, expire 1
// week, negative TTL 5 min; RFC 1912 §2.2) and an NS record (`localhost.`:
// an RPZ zone is never delegated).
func WriteRPZ(w io.Writer, h ZoneHeader, block, allow []*List) error {
	for _, l := range append(append([]*List(nil), block...), allow...) {
		if l.zone != nil {
			return fmt.Errorf("writing an RPZ zone from %s: it is an RPZ zone already", l.File())
		}
	}
	bw := bufio.NewWriter(w)
	for _, c := range h.Comment {
		fmt.Fprintf(bw, "; %s\n", c)
	}
	fmt.Fprintf(bw, "$TTL 300\n@ IN SOA localhost. hostmaster.localhost. %d 3600 600 604800 300\n  IN NS localhost.\n", h.Serial)
	seen := map[string]bool{}
	section := func(l *List, a Action) {
		var names []string
		for e := range l.All() {
			if seen[e.Name] {
				continue
			}
			if a != ActionPassthru && allowed(allow, e.Name) {
				continue
			}
			seen[e.Name] = true
			names = append(names, e.Name)
		}
		what := "block"
		if a == ActionPassthru {
			what = "allow"
		}
		fmt.Fprintf(bw, "\n; %s (%s): %d entries, each as NAME and *.NAME\n", filepath.Base(l.File()), what, len(names))
		for _, n := range names {
			fmt.Fprintf(bw, "%s CNAME %s\n*.%s CNAME %s\n", n, rpz.Action(a).Target(), n, rpz.Action(a).Target())
		}
	}
	for _, l := range allow {
		section(l, ActionPassthru)
	}
	for _, l := range block {
		section(l, ActionNXDOMAIN)
	}
	return bw.Flush()
}

// allowed reports whether an allow list matches name.
func allowed(allow []*List, name string) bool {
	for _, l := range allow {
		if _, ok := l.Match(name); ok {
			return true
		}
	}
	return false
}
