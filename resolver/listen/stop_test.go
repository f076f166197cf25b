package listen

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
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

// ServeInline answers a TCP query, counted, with an empty reply.
func (c countingWire) ServeInline(w ResponseWriter, req *dns.Msg) func() {
	c.served.Add(1)
	_ = w.WriteMsg(new(dns.Msg).SetReply(req))
	return nil
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

// TestTCPNothingReadAfterStopAccepting is the same for an open TCP
// connection: a query written on it once stopAccepting has returned is not
// answered (takenBefore), where the connection's goroutine, woken by the
// past deadline, could read it.
func TestTCPNothingReadAfterStopAccepting(t *testing.T) {
	q := packedQuery(t)
	frame := binary.BigEndian.AppendUint16(nil, uint16(len(q)))
	frame = append(frame, q...)
	var served atomic.Int64
	for i := range 300 {
		var addr string
		s := New(Config{
			Handler: countingWire{served: &served},
			Count:   func(string, string) {},
			Rules:   func() Rules { return fakeRules{} },
			Sockets: func(socks []UDPSocket) { addr = socks[0].Conn.LocalAddr().String() },
			Log:     zap.NewNop(),
		})
		require.NoError(t, s.Start([]string{"127.0.0.1:0"}))
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		require.NoError(t, c.SetDeadline(time.Now().Add(time.Minute)))
		_, err = c.Write(frame) // one answered: the connection's loop waits in its read
		require.NoError(t, err)
		var length [2]byte
		_, err = io.ReadFull(c, length[:])
		require.NoError(t, err)
		_, err = io.ReadFull(c, make([]byte, binary.BigEndian.Uint16(length[:])))
		require.NoError(t, err)
		before := served.Load()
		s.stopTaking()
		_, err = c.Write(frame)
		require.NoError(t, err)
		require.NoError(t, s.Shutdown(context.Background())) // the connection's loop has ended
		require.Equal(t, before, served.Load(), "stop %d: a query written after stopAccepting was taken", i)
		c.Close()
	}
}

// TestServerStopTakingEveryTransport: once stopTaking has returned (what
// SIGTERM's "stopped taking queries" line follows), a query asked on a
// connection opened and used before it is not answered, on any transport:
// DoT reads no further query, DoQ refuses the stream, DoH (HTTP/2 and
// plain HTTP/1.1) answers 503; none reaches the Handler. DoH used to go on
// answering until its Shutdown ran, after the line was logged, and an
// HTTP/2 stream opened before the GOAWAY is answered even then.
func TestServerStopTakingEveryTransport(t *testing.T) {
	e := newEncryptedSetup(t)
	dot, err := e.dialTLS(t, "127.0.0.1", nil)
	require.NoError(t, err)
	doq, err := (&doqSetup{ca: e.ca, addr: e.addrs[QUIC]}).dial(t)
	require.NoError(t, err)
	h2 := (&dohSetup{ca: e.ca}).client(false)
	h1 := &http.Client{Timeout: 5 * time.Second}
	dohURL := map[string]string{"h2": "https://" + e.addrs[HTTPS] + DoHPath, "h1": "http://" + e.addrs["http"] + DoHPath}
	dohClient := map[string]*http.Client{"h2": h2, "h1": h1}
	ask := map[string]func(name string) (*dns.Msg, error){
		TLS: func(name string) (*dns.Msg, error) {
			_ = dot.SetDeadline(time.Now().Add(2 * time.Second))
			return streamExchange(dot, query(name))
		},
		QUIC: func(name string) (*dns.Msg, error) { return doqExchange(doq, query(name)) },
	}
	for _, v := range []string{"h2", "h1"} {
		ask[v] = func(name string) (*dns.Msg, error) {
			resp, err := dohClient[v].Post(dohURL[v], DoHContentType, bytes.NewReader(mustPack(t, query(name))))
			if err != nil {
				return nil, err
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				return nil, err
			}
			if resp.StatusCode != http.StatusOK {
				if v == "h1" {
					assert.True(t, resp.Close, "HTTP/1.1: the connection is closed after the refusal")
				}
				return nil, fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(body))
			}
			if v == "h2" {
				assert.Equal(t, 2, resp.ProtoMajor)
			}
			m := new(dns.Msg)
			return m, m.Unpack(body)
		}
	}
	for tr, f := range ask {
		r, err := f("before-" + tr + ".blocked.test")
		require.NoError(t, err, tr)
		require.Equal(t, dns.RcodeNameError, r.Rcode, tr)
	}

	e.srv.stopTaking()
	for tr, f := range ask {
		r, err := f("after-" + tr + ".blocked.test")
		assert.Error(t, err, "%s: a query asked after stopTaking was answered: %v", tr, r)
		if strings.HasPrefix(tr, "h") {
			assert.ErrorContains(t, err, "503 Service Unavailable", tr)
		}
		_, seen := e.handler.seenFor("after-" + tr + ".blocked.test")
		assert.False(t, seen, "%s: the Handler was given a query asked after stopTaking", tr)
	}
}
