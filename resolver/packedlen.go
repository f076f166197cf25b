package resolver

import (
	"slices"

	"github.com/miekg/dns"
)

// fitsIn reports whether m packs into limit octets (the client's UDP size,
// RFC 6891 §7; a cached answer's bound, maxCachedAnswer). dns.Msg.Len is
// not the packed length: it counts what miekg/dns holds, which for some
// fields is longer than what it packs. A character-string (TXT, SPF, AVC,
// RESINFO, NINFO, HINFO, NAPTR, ISDN, X25, GPOS) is held as presentation
// text, a byte outside printable ASCII as \DDD (4 characters for 1 octet)
// and `"` and `\` as 2 characters, so that 255 octets of \001 are counted
// as 1,021; a CAA value or URI target with a `\` packs shorter than it is
// held; a base64 field (RRSIG, DNSKEY) is counted at up to 2 octets over.
// Len never counts fewer octets than Pack writes (miekg/dns v1.1.73, which
// packs a TXT record of no strings as no RDATA, as Len counts it; checked
// by FuzzPackedLen), so a message Len puts within limit fits, and only
// one Len puts over it is packed to be measured: the common answer costs
// what it did.
func fitsIn(m *dns.Msg, limit int) bool {
	if m.Len() <= limit {
		return true
	}
	n, ok := packedLen(m)
	return ok && n <= limit
}

// packedLen is the length of m packed as it is (compressed when
// m.Compress is set), in octets, and false when m does not pack (then it
// fits nothing).
func packedLen(m *dns.Msg) (int, bool) {
	bufp := answerBufs.Get().(*[]byte)
	defer answerBufs.Put(bufp)
	b, err := m.PackBuffer((*bufp)[:cap(*bufp)])
	if err != nil {
		return 0, false
	}
	*bufp = b[:0] // keep a buffer PackBuffer grew
	return len(b), true
}

// cutToFit is miekg/dns's Truncate measured by the packed length
// (fitsIn), not by dns.Msg.Len, which counts an escaped character-string
// up to four times its octets (and so left out records that fit, and set
// TC on answers that fit whole, RFC 2181 §9). As Truncate does, it keeps
// the longest run of records, the answer section's first, then the
// authority's, then the additional's, that packs (compressed) into limit
// octets beside the header, the question and the OPT record, which it puts
// last; it sets TC when a record was left out, and keeps a TC already
// set. Unlike Truncate it does not count a limit under 512 octets as 512:
// truncate fits the records beside a TSIG to what the TSIG leaves.
// Truncate's run, measured by Len, fits: the run is that or longer, and
// one more record packed settles the common answer, whose Len is its
// packed length; else the run is found by bisection (a longer run never
// packs into fewer octets: a record is written after those before it, a
// compression pointer points back). It costs Truncate and a Pack.
func cutToFit(m *dns.Msg, limit int) {
	m.Compress = true
	answers, authority := len(m.Answer), len(m.Ns)
	var opt dns.RR
	all := make([]dns.RR, 0, answers+authority+len(m.Extra))
	all = append(append(all, m.Answer...), m.Ns...)
	for _, rr := range m.Extra {
		if opt == nil && rr.Header().Rrtype == dns.TypeOPT {
			opt = rr // the first, as Truncate does (RFC 6891 §6.1.1: at most one)
			continue
		}
		all = append(all, rr)
	}
	extra := make([]dns.RR, 0, len(all)-answers-authority+1)
	keep := func(n int) {
		m.Answer = all[:min(n, answers)]
		m.Ns = all[min(n, answers):min(n, answers+authority)]
		extra = append(extra[:0], all[min(n, answers+authority):n]...)
		if opt != nil {
			extra = append(extra, opt)
		}
		m.Extra = slices.Clip(extra)
	}
	// lo records fit (or none do: the OPT is then too long, shrinkOPT's
	// case), hi do not. Truncate's run fits (Len never counts fewer
	// octets than Pack writes) and every longer run is over limit by Len:
	// those are packed to be measured.
	lo, hi := 0, len(all)+1
	if limit >= dns.MinMsgSize {
		probe := *m
		probe.Extra = slices.Clone(m.Extra) // Truncate takes the OPT out in place
		probe.Truncate(limit)
		if probe.IsTsig() == nil {
			lo = len(probe.Answer) + len(probe.Ns) + len(withoutOPT(probe.Extra))
		}
	}
	packs := func(n int) bool {
		keep(n)
		l, ok := packedLen(m)
		return ok && l <= limit
	}
	if lo < len(all) && !packs(lo+1) {
		hi = lo + 1
	}
	for hi-lo > 1 {
		if mid := lo + (hi-lo)/2; packs(mid) {
			lo = mid
		} else {
			hi = mid
		}
	}
	keep(lo)
	m.Truncated = m.Truncated || lo < len(all)
}
