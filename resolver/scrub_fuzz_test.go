package resolver

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// scrubNames are the owners and targets FuzzScrub builds answers from:
// names the government devices' policy blocks (tiktok.com and under it,
// tiktokcdn.com, capcut.com, tiktokv.com.edgekey.net), names it allows
// (ads.tiktok.com, allowed-chain.tiktokcdn.com), names beside them it
// does not block (tiktok0.com, nottiktok.com, edgekey.net), and the names
// of extraSectionAnswers.
var scrubNames = []string{
	"example.net.", "glue.example.net.", "ns.example.net.", "svc.example.net.",
	"mail.example.net.", "alias.example.net.", "cname.example.net.", "signed.example.net.",
	"authority.example.net.", "tiktok.com.", "ns1.tiktok.com.", "www.tiktok.com.",
	"ads.tiktok.com.", "mx.tiktokcdn.com.", "allowed-chain.tiktokcdn.com.", "www.capcut.com.",
	"edge.capcut.com.", "capcut.com.", "tiktok0.com.", "tiktok1.com.",
	"com.", ".", "nottiktok.com.", "tiktokv.com.edgekey.net.",
	"edgekey.net.", "a.gtld-servers.net.",
}

// scrubTypes are the types FuzzScrub builds records of, and the types an
// RRSIG it builds covers.
var scrubTypes = []uint16{
	dns.TypeA, dns.TypeAAAA, dns.TypeNS, dns.TypeCNAME, dns.TypeDNAME, dns.TypeMX, dns.TypeSRV, dns.TypeHTTPS,
	dns.TypeSVCB, dns.TypeDS, dns.TypeRRSIG, dns.TypeNSEC, dns.TypeNSEC3, dns.TypeSOA, dns.TypeTXT, dns.TypePTR,
}

// scrubRecordLen is the octets of the fuzz input that make one record
// (scrubAnswer): section, class and spelling; type; owner; target;
// variant and covered type.
const scrubRecordLen = 5

// scrubAnswer builds the upstream answer the fuzz input b describes: b[0]
// picks the question name, b[1] its type (low four bits), an NXDOMAIN
// (0x10), EDNS (0x20) and an upper-case question (0x40); every
// scrubRecordLen octets after them one record, up to 16. It returns nil
// for an input too short for a question.
func scrubAnswer(b []byte) *dns.Msg {
	if len(b) < 2 {
		return nil
	}
	qname := spell(scrubNames[int(b[0])%len(scrubNames)], b[1]&0x40 != 0)
	m := new(dns.Msg)
	m.SetQuestion(qname, scrubTypes[b[1]&0xF])
	m.Response, m.RecursionAvailable = true, true
	if b[1]&0x10 != 0 {
		m.Rcode = dns.RcodeNameError
	}
	edns := b[1]&0x20 != 0
	b = b[2:]
	for i := 0; i+scrubRecordLen <= len(b) && i < 16*scrubRecordLen; i += scrubRecordLen {
		r := b[i : i+scrubRecordLen]
		rr := scrubRecord(r)
		if rr == nil {
			continue
		}
		switch r[0] & 3 {
		case 0:
			m.Answer = append(m.Answer, rr)
		case 1:
			m.Ns = append(m.Ns, rr)
		default:
			m.Extra = append(m.Extra, rr)
		}
	}
	if edns {
		m.SetEdns0(1232, true)
	}
	return m
}

// scrubRecord is the record of the five octets r (scrubAnswer): r[0]'s
// top two bits set make it class CHAOS, 0x04 and 0x08 spell its owner and
// target in upper case; r[1] is its type, r[2] its owner, r[3] its target
// (an alias's, an NS, MX, SRV, PTR, SOA's server or NSEC's next name);
// r[4]'s low four bits the type an RRSIG covers, its next two a variant
// of the RDATA, so that an RRset can hold several records.
func scrubRecord(r []byte) dns.RR {
	class := "IN"
	if r[0]>>6 == 3 {
		class = "CH"
	}
	typ := scrubTypes[r[1]&0xF]
	owner := spell(scrubNames[int(r[2])%len(scrubNames)], r[0]&0x04 != 0)
	target := spell(scrubNames[int(r[3])%len(scrubNames)], r[0]&0x08 != 0)
	v := int(r[4]>>4) & 3
	var rdata string
	switch typ {
	case dns.TypeA:
		rdata = fmt.Sprintf("192.0.2.%d", v+1)
	case dns.TypeAAAA:
		rdata = fmt.Sprintf("2001:db8::%d", v+1)
	case dns.TypeNS, dns.TypeCNAME, dns.TypeDNAME, dns.TypePTR:
		rdata = target
	case dns.TypeMX:
		rdata = fmt.Sprintf("%d %s", 10+v, target)
	case dns.TypeSRV:
		rdata = fmt.Sprintf("0 0 %d %s", 443+v, target)
	case dns.TypeHTTPS, dns.TypeSVCB:
		rdata = fmt.Sprintf("%d %s alpn=h2", (v+1)%4, target) // variant 3: AliasMode
		if v == 3 {
			rdata = "0 " + target
		}
	case dns.TypeDS:
		rdata = fmt.Sprintf("%d 8 2 0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF", 12345+v)
	case dns.TypeRRSIG:
		rdata = fmt.Sprintf("%s 8 2 300 20300101000000 20200101000000 %d example.net. AAAA",
			dns.TypeToString[scrubTypes[r[4]&0xF]], 12345+v)
	case dns.TypeNSEC:
		rdata = target + " A NS SOA RRSIG NSEC"
	case dns.TypeNSEC3:
		rdata = fmt.Sprintf("1 0 %d - 2T7B4G4VSA5SMI47K61MV5BV1A22BOJR NS SOA RRSIG", v)
	case dns.TypeSOA:
		rdata = fmt.Sprintf("%s h.example.net. %d 3600 600 86400 120", target, v+1)
	case dns.TypeTXT:
		rdata = fmt.Sprintf(`"v%d"`, v)
	}
	rr, err := dns.NewRR(fmt.Sprintf("%s 300 %s %s %s", owner, class, dns.TypeToString[typ], rdata))
	if err != nil {
		return nil
	}
	return rr
}

// spell is name, in upper case when upper is set.
func spell(name string, upper bool) string {
	if upper {
		return strings.ToUpper(name)
	}
	return name
}

// scrubInput is the fuzz input that scrubAnswer builds m from, for m's
// records in scrubNames and scrubTypes: the seeds.
func scrubInput(f *testing.F, m *dns.Msg) []byte {
	index := func(name string) byte {
		i := slices.Index(scrubNames, strings.ToLower(name))
		if i < 0 {
			f.Fatalf("%s is not in scrubNames", name)
		}
		return byte(i)
	}
	typeIndex := func(t uint16) byte {
		i := slices.Index(scrubTypes, t)
		if i < 0 {
			f.Fatalf("type %s is not in scrubTypes", dns.TypeToString[t])
		}
		return byte(i)
	}
	b := []byte{index(m.Question[0].Name), typeIndex(m.Question[0].Qtype)}
	if m.Rcode == dns.RcodeNameError {
		b[1] |= 0x10
	}
	seen := map[rrsetKey]byte{} // records of each RRset so far: the variant
	for section, rrs := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range rrs {
			h := rr.Header()
			target := "example.net."
			covered := uint16(dns.TypeA)
			switch v := rr.(type) {
			case *dns.NS:
				target = v.Ns
			case *dns.MX:
				target = v.Mx
			case *dns.SRV:
				target = v.Target
			case *dns.SOA:
				target = v.Ns
			case *dns.NSEC:
				target = v.NextDomain
			case *dns.RRSIG:
				covered = v.TypeCovered
			default:
				if t, ok := aliasTarget(rr); ok {
					target = t
				}
			}
			k := keyOfRRset(rr)
			b = append(b, byte(section), typeIndex(h.Rrtype), index(h.Name), index(target), seen[k]<<4|typeIndex(covered))
			seen[k]++
		}
	}
	return b
}

// scrubSnapshot is testConfig's snapshot with a shadow-mode policy
// (action: log) for 127.0.0.9 blocking what the government devices'
// policy blocks.
func scrubSnapshot(f *testing.F) *Snapshot {
	return fuzzSnapshot(f, writeFuzzConfig(f, strings.ReplaceAll(testConfig, "{{upstreams}}", `["127.0.0.1:9"]`)+`  - name: shadow
    clients: ["127.0.0.9/32"]
    block: ["tiktok.txt", "bytedance.txt"]
    allow: ["allow.txt"]
    action: log
`))
}

// FuzzScrub builds upstream answers from a vocabulary of names (blocked,
// allowed and neither) and types, and checks outcome.scrub for a
// government device (a blocking policy), a device of the refusing policy
// (which blocks tiktok.txt alone), one of a shadow-mode policy (action:
// log), the exempt press office and a client in no policy:
//   - for a blocking policy and a question it neither blocks nor allows,
//     no record of the authority or additional section is left that is
//     owned by a name the policy blocks or aliases into one (hopDecision),
//     but the authority section's SOA, NSEC, NSEC3 and the RRSIGs covering
//     them;
//   - RRsets stay whole: an RRset (owner, class, type) left holds every
//     record it held, and no RRSIG is left whose RRset was left out;
//   - nothing else is left out, and scrub changes neither the header, the
//     question and the answer section, nor resp itself;
//   - shadow mode, the press office, no policy, and an allowed question
//     get the answer whole;
//   - an answer the wire cache marks as naming only the question
//     (wireOf, qnameOnly) is one scrub changes for no one.
func FuzzScrub(f *testing.F) {
	for _, name := range []string{"glue.example.net.", "mail.example.net.", "authority.example.net.",
		"alias.example.net.", "signed.example.net.", "tiktok0.com.", "ads.tiktok.com."} {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		extraSectionAnswers[name].fill(m)
		f.Add(scrubInput(f, m))
	}
	snap := scrubSnapshot(f)
	clients := []struct {
		name   string
		addr   netip.Addr
		leaves bool // the policy leaves records out
	}{
		{"government", netip.MustParseAddr("127.0.0.1"), true},
		{"refusing", netip.MustParseAddr("127.0.0.6"), true},
		{"shadow", netip.MustParseAddr("127.0.0.9"), false},
		{"press office", netip.MustParseAddr("127.0.0.3"), false},
		{"no policy", netip.MustParseAddr("127.0.0.8"), false},
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		resp := scrubAnswer(b)
		if resp == nil {
			return
		}
		before := resp.String()
		sections := [][]dns.RR{slices.Clone(resp.Answer), slices.Clone(resp.Ns), slices.Clone(resp.Extra)}
		qnameOnly := false
		if wire, err := resp.Copy().Pack(); err == nil {
			var w wireAnswer
			_, ok := wireOf(wire, &w)
			qnameOnly = ok && w.qnameOnly
		}
		qname := resp.Question[0].Name
		for _, c := range clients {
			o := snap.decide(c.addr, hostPrefix(c.addr), qname)
			got := o.scrub(resp)
			if resp.String() != before || !slices.Equal(resp.Answer, sections[0]) ||
				!slices.Equal(resp.Ns, sections[1]) || !slices.Equal(resp.Extra, sections[2]) {
				t.Fatalf("%s: scrub changed resp\nbefore:\n%s\nafter:\n%s", c.name, before, resp)
			}
			if got.MsgHdr != resp.MsgHdr || !reflect.DeepEqual(got.Question, resp.Question) ||
				!slices.Equal(got.Answer, resp.Answer) || got.Compress != resp.Compress {
				t.Fatalf("%s: scrub changed the header, question or answer section\nbefore:\n%s\nafter:\n%s", c.name, resp, got)
			}
			for _, sec := range []struct {
				name      string
				authority bool
				was, is   []dns.RR
			}{{"authority", true, resp.Ns, got.Ns}, {"additional", false, resp.Extra, got.Extra}} {
				checkRRsetsWhole(t, c.name+": "+sec.name, sec.was, sec.is)
				var want []dns.RR
				switch {
				case qnameOnly:
					want = sec.was // wireOf: nothing to leave out, for anyone
				case !c.leaves:
					want = sec.was
				default:
					d := o.policy.Policy.Decide(qname)
					if d.Blocked {
						continue // blocked: scrub is never asked
					}
					if d.Allowed {
						want = sec.was // an allowed question's answer stands whole
						break
					}
					blocked := func(name string) bool { return o.policy.Policy.Decide(name).Blocked }
					want = wantScrubbed(sec.was, sec.authority, blocked)
				}
				if !sameRecords(sec.is, want) {
					t.Fatalf("%s: %s section\n%s\nwant\n%s\nfrom\n%s\nqnameOnly %v", c.name, sec.name,
						rrText(sec.is), rrText(want), resp, qnameOnly)
				}
			}
		}
	})
}

// wantScrubbed is what scrub leaves of rrs, a section (the authority
// section when authority is set), under a policy that blocks the names
// blocked reports: without every RRset (owner, class, type) holding a
// record of a blocked name (owned by one or an alias into one), bar the
// authority section's SOA, NSEC and NSEC3 and their RRSIGs, and without
// the RRSIGs covering those RRsets (of their class: RFC 4035 §5.3.1).
func wantScrubbed(rrs []dns.RR, authority bool, blocked func(string) bool) []dns.RR {
	gone := map[rrsetKey]bool{}
	for _, rr := range rrs {
		if blockedRecord(rr, authority, blocked) {
			gone[keyOfRRset(rr)] = true
		}
	}
	var kept []dns.RR
	for _, rr := range rrs {
		if !gone[keyOfRRset(rr)] {
			kept = append(kept, rr)
		}
	}
	return kept
}

// blockedRecord reports whether rr, of the authority section when
// authority is set, else of the additional section, is a record scrub
// must not leave in: owned by a blocked name or an alias into one, and
// not the authority section's SOA, NSEC, NSEC3 or an RRSIG covering one
// of them.
func blockedRecord(rr dns.RR, authority bool, blocked func(string) bool) bool {
	h := rr.Header()
	if h.Rrtype == dns.TypeOPT {
		return false
	}
	if authority {
		switch rrsetType(rr) {
		case dns.TypeSOA, dns.TypeNSEC, dns.TypeNSEC3:
			return false
		}
	}
	if blocked(h.Name) {
		return true
	}
	target, ok := aliasTarget(rr)
	return ok && blocked(target)
}

// checkRRsetsWhole checks that every RRset of is (owner, class, type)
// holds the records it held in was, and that is holds no RRSIG over an
// RRset was held and is does not. An RRSIG covers the RRset of its owner,
// class and covered type (RFC 4035 §5.3.1: the RRSIG and the RRset have
// the same class): an RRSIG of class IN beside a CNAME of class CHAOS
// covers no RRset there, before scrub or after.
func checkRRsetsWhole(t *testing.T, where string, was, is []dns.RR) {
	t.Helper()
	sets := func(rrs []dns.RR) map[rrsetKey][]string {
		m := map[rrsetKey][]string{}
		for _, rr := range rrs {
			if _, sig := rr.(*dns.RRSIG); sig {
				continue
			}
			k := keyOfRRset(rr)
			m[k] = append(m[k], rr.String())
		}
		return m
	}
	before, after := sets(was), sets(is)
	for k, rrs := range after {
		if !slices.Equal(rrs, before[k]) {
			t.Fatalf("%s: the RRset %s %s is\n%s\nwas\n%s", where, k.owner, dns.TypeToString[k.typ],
				strings.Join(rrs, "\n"), strings.Join(before[k], "\n"))
		}
	}
	for _, rr := range is {
		if _, sig := rr.(*dns.RRSIG); !sig {
			continue
		}
		if k := keyOfRRset(rr); before[k] != nil && after[k] == nil {
			t.Fatalf("%s: %s is left without the RRset it covers", where, rr)
		}
	}
}

// sameRecords reports whether a and b hold the same records in the same
// order.
func sameRecords(a, b []dns.RR) bool {
	return rrText(a) == rrText(b)
}

// rrText is rrs as text, a record a line.
func rrText(rrs []dns.RR) string {
	var sb strings.Builder
	for _, rr := range rrs {
		sb.WriteString(rr.String() + "\n")
	}
	return sb.String()
}
