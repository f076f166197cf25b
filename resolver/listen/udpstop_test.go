package listen

import (
	"net"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
)

// countingWire is echoWire that counts the queries it is given.
type countingWire struct {
	echoWire
	served *atomic.Int64
}

func (c countingWire) ServeWire(w ResponseWriter, b []byte) (func(), bool) {
	c.served.Add(1)
	return c.echoWire.ServeWire(w, b)
}

// TestUDPNothingReadAfterStopReading: a datagram sent once stopReading has
// returned is not answered. The read loop woken by the past deadline used
// to take a datagram that arrived before it ran again: in about one stop
// in forty here, the loop answered one more query (what SIGTERM's
// end-to-end test saw as a flake). The race needs the datagram to win, so
// the test stops a thousand loops.
func TestUDPNothingReadAfterStopReading(t *testing.T) {
	q := packedQuery(t)
	var served atomic.Int64
	h := countingWire{served: &served}
	for i := range 1000 {
		pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		require.NoError(t, err)
		s := newUDPServer(pc, h, func(string, string) {}, zap.NewNop(), AcceptQuery, func([]byte, error) {})
		go s.serve()
		c, err := net.DialUDP("udp", nil, pc.LocalAddr().(*net.UDPAddr))
		require.NoError(t, err)
		if i%2 == 0 { // a loop that has read before, and one that has not
			_, err = c.Write(q)
			require.NoError(t, err)
			_, err = c.Read(make([]byte, 512))
			require.NoError(t, err)
		}
		before := served.Load()
		s.stopReading()
		_, err = c.Write(q)
		require.NoError(t, err)
		<-s.done // the loop has ended: whatever it read, it served before
		require.Equal(t, before, served.Load(), "stop %d: a query sent after stopReading was taken", i)
		s.drain(nil)
		c.Close()
	}
}
