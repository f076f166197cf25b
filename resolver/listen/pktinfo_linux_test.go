package listen

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"golang.org/x/sys/unix"
)

// TestPktinfoRoundTrip: the control message putSrc writes for an answer's
// source reads back, with dstOf, as that address; what cannot be a source
// (nothing, a multicast address, the unspecified one) reads as none.
func TestPktinfoRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		addr string
		want string // "": none
	}{
		{name: "IPv4", addr: "127.0.0.2", want: "127.0.0.2"},
		{name: "IPv6", addr: "2001:db8::53", want: "2001:db8::53"},
		{name: "IPv4-mapped", addr: "::ffff:192.0.2.1", want: "192.0.2.1"},
		{name: "IPv6 multicast", addr: "ff02::fb"},
		{name: "IPv6 unspecified", addr: "::"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			oob := make([]byte, srcOOBSize)
			a := netip.MustParseAddr(tc.addr)
			n := putSrc(oob, a.Unmap())
			want := netip.Addr{}
			if tc.want != "" {
				want = netip.MustParseAddr(tc.want)
			}
			assert.Equal(t, want, dstOf(oob[:n]))
		})
	}
	assert.Equal(t, netip.Addr{}, dstOf(nil), "no control message")
	assert.Equal(t, netip.Addr{}, dstOf(make([]byte, unix.SizeofCmsghdr)), "a zero header")
}
