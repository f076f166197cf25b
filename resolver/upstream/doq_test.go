package upstream

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDoQStreams: queries at once each get a stream of their own on one
// connection, sent with ID 0 and ended with STREAM FIN (serveDoQ reads to
// the FIN, so a missing one would hang the query).
func TestDoQStreams(t *testing.T) {
	pki := newPKI(t)
	var streams atomic.Int32
	srv := startDoQ(t, pki.good, func(s *doqTestServer, conn *quic.Conn, str *quic.Stream) {
		streams.Add(1)
		serveDoQ(answerWithA)(s, conn, str)
	})
	tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
	exchangeConcurrently(t, tr, 1)
	exchangeConcurrently(t, tr, 30)
	assert.Equal(t, 1, srv.connections())
	assert.Equal(t, int32(31), streams.Load(), "one stream per query")
	for _, q := range srv.queries() {
		assert.Zero(t, uint16(q[0])<<8|uint16(q[1]), "ID 0 on the wire")
	}
}

// TestDoQBrokenConnection: a connection the upstream closes under a query
// is redialled and the query sent once more, but not twice.
func TestDoQBrokenConnection(t *testing.T) {
	pki := newPKI(t)
	t.Run("closed under a query", func(t *testing.T) {
		srv := startDoQ(t, pki.good, func(s *doqTestServer, conn *quic.Conn, str *quic.Stream) {
			if s.accepted.Load() == 1 {
				if _, ok := readDoQQuery(s, conn, str); ok {
					_ = conn.CloseWithError(doqNoError, "going away")
				}
				return
			}
			serveDoQ(answerWithA)(s, conn, str)
		})
		tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
		resp, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
		require.NoError(t, err)
		assert.Len(t, resp.Answer, 1)
		assert.Equal(t, 2, srv.connections())
		assert.Len(t, srv.queries(), 2)
	})
	t.Run("closed while idle", func(t *testing.T) {
		var first atomic.Pointer[quic.Conn]
		srv := startDoQ(t, pki.good, func(s *doqTestServer, conn *quic.Conn, str *quic.Stream) {
			first.CompareAndSwap(nil, conn)
			serveDoQ(answerWithA)(s, conn, str)
		})
		tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
		_, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
		require.NoError(t, err)
		require.NoError(t, first.Load().CloseWithError(doqNoError, "idle"))
		resp, err := tr.Exchange(context.Background(), clientQuery("b.example.", false))
		require.NoError(t, err)
		assert.Len(t, resp.Answer, 1)
		assert.Equal(t, 2, srv.connections())
	})
	t.Run("every connection closed: one retry", func(t *testing.T) {
		srv := startDoQ(t, pki.good, func(s *doqTestServer, conn *quic.Conn, str *quic.Stream) {
			if _, ok := readDoQQuery(s, conn, str); ok {
				_ = conn.CloseWithError(doqNoError, "going away")
			}
		})
		tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
		resp, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
		assert.Nil(t, resp)
		var be *brokenConnError
		assert.ErrorAs(t, err, &be)
		assert.Equal(t, 2, srv.connections(), "tried once more, not again")
	})
}

// TestDoQExcessiveLoadFailsOver: an upstream that closes the connection
// with DOQ_EXCESSIVE_LOAD (RFC 9250 §4.3) is overloaded. The query is not
// sent to it again on a new connection, which would only add to its load,
// but fails over to the next upstream at once, and the upstream counts as
// failing (down, as its first exchange failed), as after a REFUSED
// answer. Before, the query was sent once more on a new connection at
// once.
func TestDoQExcessiveLoadFailsOver(t *testing.T) {
	pki := newPKI(t)
	overloaded := func(t *testing.T) *doqTestServer {
		return startDoQ(t, pki.good, func(s *doqTestServer, conn *quic.Conn, str *quic.Stream) {
			if _, ok := readDoQQuery(s, conn, str); ok {
				_ = conn.CloseWithError(doqExcessiveLoad, "busy")
			}
		})
	}
	t.Run("transport", func(t *testing.T) {
		srv := overloaded(t)
		tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
		resp, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
		assert.Nil(t, resp)
		var de *DoQError
		require.ErrorAs(t, err, &de)
		assert.Equal(t, &DoQError{Code: doqExcessiveLoad}, de)
		assert.ErrorIs(t, err, ErrProtocol)
		assert.ErrorContains(t, err, "the upstream closed the connection with DOQ_EXCESSIVE_LOAD (4)")
		assert.Equal(t, 1, srv.connections(), "not sent again on a new connection")
		assert.Len(t, srv.queries(), 1)
	})
	t.Run("forwarder", func(t *testing.T) {
		srv := overloaded(t)
		doq := srv.upstream(testServerName)
		f, plain, reg := failoverForwarder(t, pki, doq)
		resp, from, err := f.Forward(context.Background(), clientQuery("a.example.", false), false)
		require.NoError(t, err)
		assert.Equal(t, plain, from, "failed over")
		assert.Len(t, resp.Answer, 1)
		// The DoQ try may have been joined by a hedge to the plain
		// upstream before it failed: it is recorded once it ends.
		require.Eventually(t, func() bool { return slices.Equal(f.Down(), []string{doq}) }, 5*time.Second, 5*time.Millisecond,
			"the overloaded upstream counts as failing (its first exchange failed)")
		assert.Equal(t, map[string]float64{kindProtocol: 1}, upstreamErrors(t, reg, doq))
		assert.Equal(t, 1, srv.connections(), "not sent again on a new connection")
		assert.Len(t, srv.queries(), 1)
		_, from, err = f.Forward(context.Background(), clientQuery("b.example.", false), false)
		require.NoError(t, err)
		assert.Equal(t, plain, from, "a down upstream is skipped while another is up")
		assert.Len(t, srv.queries(), 1)
	})
}

// TestDoQCloseCountsOnce: an upstream that closes a connection with an
// error code (RFC 9250 §4.3) under several queries, as a server restarting
// or shedding load does, has failed once, not once per query in flight:
// each of them still fails over to the next upstream, and its error is
// counted in dnsfence_upstream_errors_total, but the upstream's health
// window takes one failure, so that one close does not mark down an
// upstream that had been answering. Before, each held query counted: 6
// failures in a window of 10, down at once.
func TestDoQCloseCountsOnce(t *testing.T) {
	const answered, held = 4, 6
	pki := newPKI(t)
	for _, tc := range []struct {
		name string
		code uint64
	}{
		{name: "DOQ_EXCESSIVE_LOAD", code: doqExcessiveLoad},
		{name: "DOQ_INTERNAL_ERROR", code: doqInternalError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var holding atomic.Int32
			srv := startDoQ(t, pki.good, func(s *doqTestServer, conn *quic.Conn, str *quic.Stream) {
				q, ok := readDoQQuery(s, conn, str)
				switch {
				case !ok:
				case !strings.HasPrefix(q.Question[0].Name, "held"):
					_ = writeFrame(str, answerWithA(q))
					_ = str.Close()
				case holding.Add(1) == held:
					// Every held query is in flight, unanswered: close
					// under all of them.
					_ = conn.CloseWithError(quic.ApplicationErrorCode(tc.code), "restarting")
				}
			})
			doq := srv.upstream(testServerName)
			f, plain, reg := failoverForwarder(t, pki, doq)
			for i := range answered {
				_, from, err := f.Forward(context.Background(), clientQuery(fmt.Sprintf("a%d.example.", i), false), false)
				require.NoError(t, err)
				require.Equal(t, doq, from)
			}

			var wg sync.WaitGroup
			for i := range held {
				wg.Go(func() {
					_, from, err := f.Forward(context.Background(), clientQuery(fmt.Sprintf("held%d.example.", i), false), false)
					assert.NoError(t, err)
					assert.Equal(t, plain, from, "failed over (or hedged) to the next upstream")
				})
			}
			wg.Wait()
			// The DoQ tries end after the queries that a hedge answered:
			// each holds a reference until it is recorded.
			require.Eventually(t, func() bool { return f.refs.Load() == 0 }, 5*time.Second, 5*time.Millisecond)
			require.Equal(t, int32(held), holding.Load(), "every held query reached the upstream")

			w := f.upstreams[0].health.w.Load()
			fails, n := bits.OnesCount32(uint32(w)), int(w>>32)
			assert.Equal(t, 1, fails, "one close, one failure")
			assert.Equal(t, answered+1, n, "the window took the close once")
			assert.Empty(t, f.Down(), "an upstream that answered is not down for one close")
			assert.Equal(t, map[string]float64{kindProtocol: held}, upstreamErrors(t, reg, doq),
				"each query's failed exchange is still counted")
			assert.Equal(t, 1, srv.connections(), "not sent again on a new connection")
		})
	}
}

// TestDoQErrors: the upstream's error codes and broken answers are typed
// errors, and a broken answer closes the connection with
// DOQ_PROTOCOL_ERROR (RFC 9250 §4.3.3).
func TestDoQErrors(t *testing.T) {
	pki := newPKI(t)
	t.Run("stream reset", func(t *testing.T) {
		srv := startDoQ(t, pki.good, func(s *doqTestServer, conn *quic.Conn, str *quic.Stream) {
			if _, ok := readDoQQuery(s, conn, str); ok {
				str.CancelWrite(doqInternalError)
			}
		})
		tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
		resp, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
		assert.Nil(t, resp)
		var de *DoQError
		require.ErrorAs(t, err, &de)
		assert.Equal(t, &DoQError{Code: doqInternalError, Stream: true}, de)
		assert.ErrorContains(t, err, "reset the query's stream with DOQ_INTERNAL_ERROR (1)")
		assert.Len(t, srv.queries(), 1, "the upstream answered: not sent again")
		assert.Equal(t, 1, srv.connections(), "the connection stays")
	})
	for _, tc := range []struct {
		name  string
		write func(str *quic.Stream, q *dns.Msg)
		want  string
	}{
		{"non-zero ID", func(str *quic.Stream, q *dns.Msg) {
			m := answerWithA(q)
			m.Id = 77
			_ = writeFrame(str, m)
		}, "answer with ID 77 to a query with ID 0"},
		{"two answers", func(str *quic.Stream, q *dns.Msg) {
			_ = writeFrame(str, answerWithA(q))
			_ = writeFrame(str, answerWithA(q))
		}, "more than one answer on a stream"},
		{"cut short", func(str *quic.Stream, q *dns.Msg) {
			_, _ = str.Write([]byte{0, 40, 1, 2, 3})
		}, "the stream ended before the whole answer"},
		{"keepalive", func(str *quic.Stream, q *dns.Msg) {
			m := answerWithA(q)
			m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_TCP_KEEPALIVE{Code: dns.EDNS0TCPKEEPALIVE})
			_ = writeFrame(str, m)
		}, "edns-tcp-keepalive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startDoQ(t, pki.good, func(s *doqTestServer, conn *quic.Conn, str *quic.Stream) {
				if q, ok := readDoQQuery(s, conn, str); ok {
					tc.write(str, q)
					_ = str.Close()
				}
			})
			tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
			resp, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
			assert.Nil(t, resp)
			assert.ErrorIs(t, err, ErrProtocol)
			assert.ErrorContains(t, err, tc.want)
			require.Eventually(t, func() bool { return len(srv.closeCodes()) == 1 }, 5*time.Second, 5*time.Millisecond)
			assert.Equal(t, []uint64{doqProtocolError}, srv.closeCodes(), "closed with DOQ_PROTOCOL_ERROR")
		})
	}
}

// TestDoQUnreadRecordKeepsConnection: an answer whose records are well
// framed but one of whose data miekg/dns will not unpack (an HTTPS
// ipv6hint holding an IPv4-mapped address, which a recursive upstream
// relays from the name's zone) fails its query with ErrAnswerRdata, which
// speaks of the name, not of the upstream: the connection is not closed
// with DOQ_PROTOCOL_ERROR, and the next query is answered on it. Before,
// any client asking for such a name closed the shared connection under
// every other query on it.
func TestDoQUnreadRecordKeepsConnection(t *testing.T) {
	pki := newPKI(t)
	srv := startDoQ(t, pki.good, func(s *doqTestServer, conn *quic.Conn, str *quic.Stream) {
		q, ok := readDoQQuery(s, conn, str)
		if !ok {
			return
		}
		if q.Question[0].Qtype != dns.TypeHTTPS {
			_ = writeFrame(str, answerWithA(q))
			_ = str.Close()
			return
		}
		b := unreadHintAnswer(t, q)
		_, _ = str.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...))
		_ = str.Close()
	})
	tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
	q := clientQuery("a.svcb.example.", false)
	q.Question[0].Qtype = dns.TypeHTTPS
	resp, err := tr.Exchange(context.Background(), q)
	assert.Nil(t, resp)
	assert.ErrorIs(t, err, ErrAnswerRdata)
	assert.NotErrorIs(t, err, ErrProtocol)
	resp, err = tr.Exchange(context.Background(), clientQuery("b.example.", false))
	require.NoError(t, err)
	assert.Equal(t, dns.RcodeSuccess, resp.Rcode)
	assert.Equal(t, 1, srv.connections(), "answered on the same connection")
	assert.Empty(t, srv.closeCodes())
}

// unreadHintAnswer is the answer to q, an HTTPS question, with an HTTPS
// record whose ipv6hint holds ::ffff:192.0.2.7, written into the octets:
// miekg/dns neither packs nor unpacks it ("expected ipv6, got ipv4").
func unreadHintAnswer(t testing.TB, q *dns.Msg) []byte {
	t.Helper()
	m := new(dns.Msg).SetReply(q)
	m.Answer = []dns.RR{hintedHTTPS(q.Question[0].Name, 60)}
	return unreadPacked(t, m)
}

// unreadHint is the ipv6hint of hintedHTTPS's record, which unreadPacked
// writes over.
var unreadHint = net.ParseIP("2001:db8::7")

// hintedHTTPS is an HTTPS record of name, TTL ttl seconds, whose ipv6hint
// is unreadHint.
func hintedHTTPS(name string, ttl uint32) *dns.HTTPS {
	return &dns.HTTPS{SVCB: dns.SVCB{
		Hdr:      dns.RR_Header{Name: name, Rrtype: dns.TypeHTTPS, Class: dns.ClassINET, Ttl: ttl},
		Priority: 1, Target: ".", Value: []dns.SVCBKeyValue{&dns.SVCBIPv6Hint{Hint: []net.IP{unreadHint}}},
	}}
}

// unreadPacked is m, which holds a hintedHTTPS record, packed with that
// record's ipv6hint written over as ::ffff:192.0.2.7: octets miekg/dns
// does not unpack.
func unreadPacked(t testing.TB, m *dns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	require.NoError(t, err)
	i := bytes.Index(b, unreadHint)
	require.GreaterOrEqual(t, i, 0)
	copy(b[i:], net.ParseIP("::ffff:192.0.2.7").To16())
	require.Error(t, new(dns.Msg).Unpack(b))
	return b
}

// TestDoQSilentConnectionRedialled: an upstream that stops answering on a
// connection its QUIC stack keeps alive (a hung server process behind a
// live QUIC stack, which acknowledges every packet, so the connection
// never goes idle; or a server restarted without stateless resets, whose
// old connection quic-go keeps until its idle timeout, 30 s) costs the
// query that times out on it, not every query after: a connection with no
// answer read for a whole timeout is given up, and the next query dials a
// new one, as a DoT connection is (TestDoTSilentConnectionRedialled).
// Before, every query timed out on it for as long as it lived: with this
// upstream alone, SERVFAIL for each, where dnsproxy's DoQ client, given
// the same server, lost one query and answered the next on a new
// connection.
func TestDoQSilentConnectionRedialled(t *testing.T) {
	pki := newPKI(t)
	var answered atomic.Bool
	srv := startDoQ(t, pki.good, func(s *doqTestServer, conn *quic.Conn, str *quic.Stream) {
		if s.accepted.Load() == 1 && answered.Swap(true) {
			// Hung: reads the query, answers nothing, keeps the stream.
			if _, ok := readDoQQuery(s, conn, str); ok {
				<-str.Context().Done()
			}
			return
		}
		serveDoQ(answerWithA)(s, conn, str)
	})
	opts := pki.testOptions(t)
	opts.Timeout = time.Second // a first handshake under -race on a busy machine: 300 ms failed in CI
	tr := newEncryptedTransport(t, srv.upstream(testServerName), opts)
	checkSilentRedialled(t, tr, context.DeadlineExceeded, srv.connections)
	require.Eventually(t, func() bool { return len(srv.closeCodes()) == 1 }, 5*time.Second, 5*time.Millisecond)
	assert.Equal(t, []uint64{doqNoError}, srv.closeCodes(), "the silent connection is closed with DOQ_NO_ERROR")
}

// TestDoQCancel: a query whose ctx ends cancels its stream with
// DOQ_REQUEST_CANCELLED (RFC 9250 §4.3.2); Close closes the connection with
// DOQ_NO_ERROR.
func TestDoQCancel(t *testing.T) {
	pki := newPKI(t)
	cause := make(chan error, 1)
	srv := startDoQ(t, pki.good, func(s *doqTestServer, conn *quic.Conn, str *quic.Stream) {
		if _, ok := readDoQQuery(s, conn, str); ok {
			<-str.Context().Done()
			cause <- context.Cause(str.Context())
		}
	})
	addr, err := ParseAddress(srv.upstream(testServerName))
	require.NoError(t, err)
	tr, err := newEncrypted(addr, pki.testOptions(t))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = tr.Exchange(ctx, clientQuery("a.example.", false))
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	select {
	case err := <-cause:
		var se *quic.StreamError
		require.True(t, errors.As(err, &se), "%v", err)
		assert.Equal(t, quic.StreamErrorCode(doqRequestCancelled), se.ErrorCode)
		assert.True(t, se.Remote)
	case <-time.After(5 * time.Second):
		t.Fatal("the stream was not cancelled")
	}
	require.NoError(t, tr.Close())
	require.Eventually(t, func() bool { return len(srv.closeCodes()) == 1 }, 5*time.Second, 5*time.Millisecond)
	assert.Equal(t, []uint64{doqNoError}, srv.closeCodes())
}

// TestDoQServerCannotOpenStreams: DoQ uses client-initiated bidirectional
// streams only (RFC 9250 §4.2), so the client grants the server none:
// a stream the server tries to open, of either kind, is never opened,
// rather than accepted and left unread with its flow-control window held.
func TestDoQServerCannotOpenStreams(t *testing.T) {
	pki := newPKI(t)
	opened := make(chan error, 2)
	srv := startDoQ(t, pki.good, func(s *doqTestServer, conn *quic.Conn, str *quic.Stream) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_, err := conn.OpenStreamSync(ctx)
		opened <- err
		_, err = conn.OpenUniStreamSync(ctx)
		opened <- err
		serveDoQ(answerWithA)(s, conn, str)
	})
	tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
	exchangeConcurrently(t, tr, 1)
	for _, kind := range []string{"bidirectional", "unidirectional"} {
		assert.ErrorIs(t, <-opened, context.DeadlineExceeded, "the server opened a %s stream", kind)
	}
}
