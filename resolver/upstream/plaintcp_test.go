package upstream

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPlainTCPAnswerChecked: an answer over TCP is checked as a datagram
// is, by the Plain transport itself and not only by the Forwarder above
// it: one with another ID is ErrAnswerWrongID (so counted), one to
// another question, or that is no response, ErrAnswerMismatch; the query
// goes nowhere else. A TCP upstream that refuses the connection is a
// network error.
func TestPlainTCPAnswerChecked(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(m *dns.Msg)
		want   error
	}{
		{name: "another ID", change: func(m *dns.Msg) { m.Id ^= 0x0101 }, want: ErrAnswerWrongID},
		{name: "another name", change: func(m *dns.Msg) { m.Question[0].Name = "other.example." }, want: ErrAnswerMismatch},
		{name: "another type", change: func(m *dns.Msg) { m.Question[0].Qtype = dns.TypeAAAA }, want: ErrAnswerMismatch},
		{name: "not a response", change: func(m *dns.Msg) { m.Response = false }, want: ErrAnswerMismatch},
		{name: "another opcode", change: func(m *dns.Msg) { m.Opcode = dns.OpcodeStatus }, want: ErrAnswerMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
				m := defaultAnswer(w, r)
				tc.change(m)
				return m
			})
			p := NewPlain(up.addr, Options{Timeout: 2 * time.Second})
			t.Cleanup(func() { _ = p.Close() })
			resp, err := p.ExchangeTCP(context.Background(), question("tcp.example.", dns.TypeA, false))
			assert.Nil(t, resp)
			assert.ErrorIs(t, err, tc.want)
			if !errors.Is(tc.want, ErrAnswerWrongID) {
				assert.NotErrorIs(t, err, ErrAnswerWrongID)
			}
		})
	}
	t.Run("connection refused", func(t *testing.T) {
		p := NewPlain(closedPort(t), Options{Timeout: 2 * time.Second})
		t.Cleanup(func() { _ = p.Close() })
		resp, err := p.ExchangeTCP(context.Background(), question("tcp.example.", dns.TypeA, false))
		assert.Nil(t, resp)
		require.Error(t, err)
		assert.False(t, isTimeout(err), "refused at once: %v", err)
		assert.Equal(t, kindNetwork, errorKind(err))
	})
}

// TestPlainTCPConnectionClosed: an exchange over TCP closes its
// connection when it has its answer (one connection per exchange): the
// upstream reads the end of the stream, rather than holding the
// connection until its own idle timeout, one more for every query.
func TestPlainTCPConnectionClosed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	ended := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			ended <- err
			return
		}
		defer conn.Close()
		b, err := readFrame(conn)
		q := new(dns.Msg)
		if err == nil {
			err = q.Unpack(b)
		}
		if err == nil {
			err = writeFrame(conn, defaultAnswer(nil, q))
		}
		if err != nil {
			ended <- err
			return
		}
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		ended <- err
	}()
	p := NewPlain(ln.Addr().String(), Options{Timeout: 2 * time.Second})
	t.Cleanup(func() { _ = p.Close() })
	resp, err := p.ExchangeTCP(context.Background(), question("closed.example.", dns.TypeA, false))
	require.NoError(t, err)
	assert.Len(t, resp.Answer, 1)
	select {
	case err := <-ended:
		assert.ErrorIs(t, err, io.EOF, "the client closed the connection after its answer")
		assert.NotErrorIs(t, err, os.ErrDeadlineExceeded)
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not end")
	}
}

// TestPlainUnusableDatagramCounted: a UDP answer that cannot be used (here
// to another question) is asked again over TCP, which answers; the
// exchange succeeds, and the upstream's misbehaviour over UDP is still
// counted by its kind. That is all the transport counts: the duration of
// an exchange is the Forwarder's to observe, once, and a TCP exchange
// that had no UDP answer before it counts nothing.
func TestPlainUnusableDatagramCounted(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := defaultAnswer(w, r)
		if _, tcp := w.RemoteAddr().(*net.TCPAddr); !tcp {
			m.Question[0].Name = "other.example."
		}
		return m
	})
	reg := prometheus.NewRegistry()
	p := NewPlain(up.addr, Options{Timeout: 2 * time.Second, Metrics: NewMetrics(reg)})
	t.Cleanup(func() { _ = p.Close() })
	resp, err := p.Exchange(context.Background(), question("udp.example.", dns.TypeA, false))
	require.NoError(t, err)
	require.Len(t, resp.Answer, 1)
	assert.Equal(t, "udp.example.", resp.Answer[0].Header().Name)
	assert.Equal(t, map[string]float64{kindMismatch: 1}, upstreamErrors(t, reg, up.addr))

	resp, err = p.ExchangeTCP(context.Background(), question("tcp.example.", dns.TypeA, false))
	require.NoError(t, err)
	require.Len(t, resp.Answer, 1)
	assert.Equal(t, map[string]float64{kindMismatch: 1}, upstreamErrors(t, reg, up.addr))
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == "dnsfence_upstream_request_duration_seconds" {
			for _, m := range mf.GetMetric() {
				assert.Zero(t, m.GetHistogram().GetSampleCount(), "a duration observed by the transport")
			}
		}
	}
}

// TestPlainTCPNoAnswer: a TCP upstream that sends a frame too short for a
// DNS message, or closes the connection without an answer, fails the
// exchange with an error of its kind (malformed; a network error), never
// an exchange with neither an answer nor an error.
func TestPlainTCPNoAnswer(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply []byte // nil: close without one
		kind  string
	}{
		{"a 3-octet frame", []byte{0, 3, 1, 2, 3}, kindMalformed},
		{"closed", nil, kindNetwork},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			t.Cleanup(func() { ln.Close() })
			go func() {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				defer conn.Close()
				if _, err := readFrame(conn); err == nil && tc.reply != nil {
					_, _ = conn.Write(tc.reply)
				}
			}()
			p := NewPlain(ln.Addr().String(), Options{Timeout: 2 * time.Second})
			t.Cleanup(func() { _ = p.Close() })
			resp, err := p.ExchangeTCP(context.Background(), question("none.example.", dns.TypeA, false))
			assert.Nil(t, resp)
			require.Error(t, err)
			assert.Equal(t, tc.kind, errorKind(err), "%v", err)
		})
	}
}
