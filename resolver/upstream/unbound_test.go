package upstream

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tcpProxy relays TCP connections to target, counting them; breakNext
// makes it close, instead of relaying, the next data a client sends: a
// connection that breaks with a query in flight.
type tcpProxy struct {
	addr      string
	accepted  atomic.Int32
	breakNext atomic.Bool
	mu        sync.Mutex
	conns     []net.Conn
}

func startProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &tcpProxy{addr: ln.Addr().String()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.accepted.Add(1)
			up, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() {
				defer c.Close()
				defer up.Close()
				_, _ = io.Copy(c, up)
			}()
			go func() {
				defer c.Close()
				defer up.Close()
				buf := make([]byte, 32<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 && p.breakNext.CompareAndSwap(true, false) {
						return // the data is dropped and both ends closed
					}
					if n > 0 {
						if _, werr := up.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		p.closeAll()
	})
	return p
}

// closeAll closes every relayed connection, as a server closing idle
// connections does.
func (p *tcpProxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

// TestDoTUnbound runs the DoT transport against a real Unbound with
// tls-service-pem/tls-service-key, behind a proxy that counts and breaks
// connections.
func TestDoTUnbound(t *testing.T) {
	pki := newPKI(t)
	cert, key := pki.files("good")
	unbound := testnet.StartUnboundDoT(t, cert, key, "test.", "a.test. 300 IN A 192.0.2.1")
	proxy := startProxy(t, unbound)
	upstream := "tls://" + proxy.addr + "#" + testServerName
	tr := newEncryptedTransport(t, upstream, pki.testOptions(t))

	t.Run("answer", func(t *testing.T) {
		q := clientQuery("a.test.", false)
		q.Id = 0x5151
		resp, err := tr.Exchange(context.Background(), q)
		require.NoError(t, err)
		assert.Equal(t, uint16(0x5151), resp.Id)
		assert.Equal(t, dns.RcodeSuccess, resp.Rcode)
		require.Len(t, resp.Answer, 1)
		assert.Equal(t, "192.0.2.1", resp.Answer[0].(*dns.A).A.String())
		require.NotNil(t, resp.IsEdns0())
		assert.Nil(t, paddingOf(resp), "Unbound's padding of the answer is not passed on")

		q = clientQuery("nx.test.", true)
		resp, err = tr.Exchange(context.Background(), q)
		require.NoError(t, err)
		assert.Equal(t, dns.RcodeNameError, resp.Rcode)
		assert.Nil(t, resp.IsEdns0(), "no OPT for a client that sent none")
	})
	t.Run("broken under a query", func(t *testing.T) {
		before := proxy.accepted.Load()
		proxy.breakNext.Store(true)
		resp, err := tr.Exchange(context.Background(), clientQuery("a.test.", false))
		require.NoError(t, err)
		require.Len(t, resp.Answer, 1)
		assert.False(t, proxy.breakNext.Load(), "the query went out on a kept connection, which broke")
		assert.Equal(t, before+1, proxy.accepted.Load(), "one new connection for the retry")
	})
	t.Run("closed while idle", func(t *testing.T) {
		before := proxy.accepted.Load()
		proxy.closeAll()
		resp, err := tr.Exchange(context.Background(), clientQuery("a.test.", false))
		require.NoError(t, err)
		require.Len(t, resp.Answer, 1)
		assert.Equal(t, before+1, proxy.accepted.Load())
	})
	t.Run("pipelining", func(t *testing.T) {
		before := proxy.accepted.Load()
		var wg sync.WaitGroup
		errs := make(chan error, 50)
		for i := range 50 {
			wg.Go(func() {
				q := clientQuery("a.test.", false)
				q.Id = uint16(i)
				resp, err := tr.Exchange(context.Background(), q)
				if err == nil && (resp.Id != q.Id || len(resp.Answer) != 1) {
					err = fmt.Errorf("query %d: wrong answer %v", i, resp)
				}
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			assert.NoError(t, err)
		}
		// The kept connection and at most dotPoolSize-1 new ones.
		assert.LessOrEqual(t, int(proxy.accepted.Load()-before), dotPoolSize-1, "50 queries over at most %d connections", dotPoolSize)
	})
	t.Run("wrong name", func(t *testing.T) {
		tr := newEncryptedTransport(t, "tls://"+unbound+"#other.test", pki.testOptions(t))
		resp, err := tr.Exchange(context.Background(), clientQuery("a.test.", false))
		assert.Nil(t, resp)
		var he x509.HostnameError
		assert.ErrorAs(t, err, &he)
	})
	t.Run("untrusted root", func(t *testing.T) {
		tr := newEncryptedTransport(t, "tls://"+unbound+"#"+testServerName, Options{Timeout: 5 * time.Second})
		resp, err := tr.Exchange(context.Background(), clientQuery("a.test.", false))
		assert.Nil(t, resp)
		var ue x509.UnknownAuthorityError
		assert.ErrorAs(t, err, &ue)
	})
}
