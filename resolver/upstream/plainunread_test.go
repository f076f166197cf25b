package upstream

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPlainUnreadDatagramAskedOverTCPWhenTruncated: a UDP answer with a
// record miekg/dns does not read (an RdataError) is asked again over TCP
// when it is truncated, and the TCP answer, whole, is the exchange's; one
// that is not truncated is the exchange's as it is, not asked again (TCP
// would bring the same zone data).
func TestPlainUnreadDatagramAskedOverTCPWhenTruncated(t *testing.T) {
	for _, tc := range []struct {
		name      string
		truncated bool
		overTCP   int32
	}{
		{"truncated", true, 1},
		{"whole", false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var overTCP atomic.Int32
			up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
				b := unreadHintAnswer(t, r)
				if _, tcp := w.RemoteAddr().(*net.TCPAddr); tcp {
					overTCP.Add(1)
				} else if tc.truncated {
					b[2] |= 0x02 // TC
				}
				_, _ = w.Write(b)
				return nil
			})
			p := NewPlain(up.addr, Options{Timeout: 2 * time.Second})
			t.Cleanup(func() { _ = p.Close() })
			q := clientQuery("a.svcb.example.", false)
			q.Question[0].Qtype = dns.TypeHTTPS
			resp, err := p.Exchange(context.Background(), q)
			assert.Nil(t, resp)
			rd, ok := errors.AsType[*RdataError](err)
			require.True(t, ok, "an answer miekg/dns does not read: %v", err)
			assert.Zero(t, dnswire.Flags(rd.Raw)&dnswire.FlagTC, "the answer returned is truncated")
			assert.Equal(t, tc.overTCP, overTCP.Load(), "queries over TCP")
		})
	}
}
