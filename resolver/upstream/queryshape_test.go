package upstream

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestForwardedQueryShape: the query a plain upstream gets for a client's
// (upstreamQuery) has the client's question, RD and CD bits and DO bit;
// AD set (RFC 6840 §5.7: so that the upstream says whether it validated
// the data); an OPT of buffer 1,232, version 0, with none of the
// client's options (its cookie and Client Subnet are its own hop's); and
// an ID of its own. Over UDP and over TCP alike.
func TestForwardedQueryShape(t *testing.T) {
	var mu sync.Mutex
	var got []*dns.Msg
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if r.Question[0].Name != "." {
			mu.Lock()
			got = append(got, r.Copy())
			mu.Unlock()
		}
		return defaultAnswer(w, r)
	})
	f := NewForwarder([]string{up.addr}, 2*time.Second, false)
	t.Cleanup(f.Close)

	for _, tc := range []struct {
		rd, cd, do bool
	}{
		{rd: true, cd: true, do: true},
		{rd: false, cd: false, do: false},
		{rd: true, cd: false, do: true},
		{rd: false, cd: true, do: false},
	} {
		for _, tcp := range []bool{false, true} {
			q := new(dns.Msg)
			q.SetQuestion("shape.example.", dns.TypeAAAA)
			q.Id = 4242
			q.RecursionDesired, q.CheckingDisabled = tc.rd, tc.cd
			q.SetEdns0(4096, tc.do)
			q.IsEdns0().Option = append(q.IsEdns0().Option,
				&dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"},
				&dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: []byte{192, 0, 2, 0}})
			mu.Lock()
			got = nil
			mu.Unlock()
			_, _, err := f.Forward(context.Background(), q, tcp)
			require.NoError(t, err)
			mu.Lock()
			require.Len(t, got, 1, "%+v tcp %v", tc, tcp)
			s := got[0]
			mu.Unlock()
			assert.Equal(t, q.Question, s.Question, "%+v tcp %v", tc, tcp)
			assert.NotEqual(t, q.Id, s.Id, "an ID of its own (%+v, tcp %v)", tc, tcp)
			assert.Equal(t, tc.rd, s.RecursionDesired, "RD (%+v, tcp %v)", tc, tcp)
			assert.Equal(t, tc.cd, s.CheckingDisabled, "CD (%+v, tcp %v)", tc, tcp)
			assert.True(t, s.AuthenticatedData, "AD (%+v, tcp %v)", tc, tcp)
			opt := s.IsEdns0()
			require.NotNil(t, opt, "%+v tcp %v", tc, tcp)
			assert.Equal(t, tc.do, opt.Do(), "DO (%+v, tcp %v)", tc, tcp)
			assert.Equal(t, uint16(1232), opt.UDPSize(), "%+v tcp %v", tc, tcp)
			assert.Equal(t, uint8(0), opt.Version(), "%+v tcp %v", tc, tcp)
			assert.Empty(t, opt.Option, "none of the client's options (%+v, tcp %v)", tc, tcp)
		}
	}
}
