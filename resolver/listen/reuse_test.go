package listen

import (
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// addrKeeper answers half the queries inline and detaches the other half,
// answering them from a goroutine of its own a little later, once the
// loop has read other clients' datagrams into the slot (its buffer and its
// *net.UDPAddr, which ReadBatch overwrites in place). It notes any query
// whose RemoteAddr changed between ServeWire and the late write, and
// overwrites the bytes it wrote and a pooled answer buffer (outBufs) after
// each late write, so that an answer still read from either shows.
type addrKeeper struct {
	mu      sync.Mutex
	changed []string
}

func (*addrKeeper) ServeInline(ResponseWriter, *dns.Msg) func() { return nil }

func (k *addrKeeper) ServeWire(w ResponseWriter, b []byte) (func(), bool) {
	b[2] |= 0x80 // QR
	if binary.BigEndian.Uint16(b)%2 == 0 {
		_, _ = w.Write(b)
		return nil, true
	}
	asker := w.RemoteAddr().String()
	answer := append([]byte(nil), b...)
	w.(Detacher).Detach()
	go func() {
		time.Sleep(time.Duration(binary.BigEndian.Uint16(answer)%7) * time.Millisecond)
		if now := w.RemoteAddr().String(); now != asker {
			k.mu.Lock()
			k.changed = append(k.changed, asker+" became "+now)
			k.mu.Unlock()
		}
		_, _ = w.Write(answer)
		for i := range answer {
			answer[i] = 0xEE
		}
		p := outBufs.Get().(*[]byte)
		full := (*p)[:cap(*p)]
		for i := range full {
			full[i] = 0xEE
		}
		outBufs.Put(p)
		w.(Detacher).Done()
	}()
	return nil, true
}

// TestDetachedQueryKeepsItsClient: clients on several source
// addresses and ports send at once; every answer, inline or written late
// by a detached query, reaches the client that asked, whole, and a
// detached query's RemoteAddr stays its client's while the loop reads on.
func TestDetachedQueryKeepsItsClient(t *testing.T) {
	h := &addrKeeper{}
	_, probe := startWireUDP(t, h)
	server := probe.RemoteAddr().(*net.UDPAddr)

	const clients, rounds, burst = 8, 6, 12
	var wg sync.WaitGroup
	for c := range clients {
		conn, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, byte(1+c%4))}, server)
		require.NoError(t, err)
		t.Cleanup(func() { conn.Close() })
		require.NoError(t, conn.SetDeadline(time.Now().Add(time.Minute)))
		wg.Go(func() {
			buf := make([]byte, 512)
			for r := range rounds {
				want := map[uint16][]byte{}
				for i := range burst {
					m := new(dns.Msg)
					// A name of its own length for each, so that another's
					// datagram shows in length as well as in bytes.
					m.SetQuestion(fmt.Sprintf("%c%d-%s.example.org.", 'a'+c, r, strings.Repeat("q", 1+(c*5+i*3+r)%30)), dns.TypeA)
					m.Id = uint16(c<<11 | r<<6 | i<<1 | i%2)
					b, err := m.Pack()
					require.NoError(t, err)
					answer := append([]byte(nil), b...)
					answer[2] |= 0x80
					want[m.Id] = answer
					_, err = conn.Write(b)
					require.NoError(t, err)
				}
				for range burst {
					n, err := conn.Read(buf)
					if !assert.NoError(t, err, "client %d round %d", c, r) {
						return
					}
					id := binary.BigEndian.Uint16(buf)
					exp, ok := want[id]
					if assert.True(t, ok, "client %d got an answer to ID %#x, not its own", c, id) {
						assert.Equal(t, exp, buf[:n], "client %d ID %#x", c, id)
						delete(want, id)
					}
				}
			}
		})
	}
	wg.Wait()
	h.mu.Lock()
	defer h.mu.Unlock()
	assert.Empty(t, h.changed, "a detached query's client changed under it")
}
