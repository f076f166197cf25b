package upstream

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// heldTaker is an answerTaker that holds the socket's reader in its call
// until release closes: a reader busy with another answer, or waiting for
// a CPU.
type heldTaker struct {
	entered, release chan struct{}
}

func (h *heldTaker) answered([]byte, error, listen.Batcher) {
	close(h.entered)
	<-h.release
}

// TestSweepTakesTheAnswersThatCame: a query whose answer came before its
// deadline gets it, though the socket's reader only got to it after the
// deadline and sweeps first (read, drain): the sweep judges which queries
// are late by what has arrived, not by what the reader has read. Before,
// the sweep ended the query ("no answer in time") and then read its
// answer and dropped it as late: under -race on a busy machine a
// SERVFAIL that came at once was lost so (TestStartWireHedged's 'every
// try fails'), and on a server short of CPU every such query was a
// timeout the upstream never had.
func TestSweepTakesTheAnswersThatCame(t *testing.T) {
	const timeout = 300 * time.Millisecond
	answered := make(chan string, 2) // each name once its answer is on the socket
	pc := testnet.ServeQuestions(t, func(pc net.PacketConn, q *dns.Msg, from net.Addr) {
		_, _ = pc.WriteTo(packed(defaultAnswer(nil, q)), from) // on loopback, queued at the socket on return
		answered <- q.Question[0].Name
	})
	m := &udpMux{addr: pc.LocalAddr().String(), timeout: timeout}
	t.Cleanup(m.close)

	// The first answer holds the reader in its delivery.
	held := &heldTaker{entered: make(chan struct{}), release: make(chan struct{})}
	t.Cleanup(func() {
		select {
		case <-held.release:
		default:
			close(held.release)
		}
	})
	s, lead, err := m.register(&waiter{then: held}, packed(question("held.example.org.", dns.TypeA, false)), time.Now())
	require.NoError(t, err)
	s.send(lead, nil)
	select {
	case <-held.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the first query was never answered")
	}
	assert.Equal(t, "held.example.org.", <-answered)

	// The second is answered at once, while the reader is held, and the
	// reader gets to its answer only after its deadline.
	name := "came.example.org."
	done := exchangeInBackground(context.Background(), m, "message", name)
	select {
	case got := <-answered:
		require.Equal(t, name, got)
	case <-time.After(5 * time.Second):
		t.Fatal("the second query never reached the upstream")
	}
	time.Sleep(timeout + 50*time.Millisecond) // registered before it was answered: its deadline has passed
	close(held.release)
	select {
	case err := <-done:
		assert.NoError(t, err, "the answer came before the deadline")
	case <-time.After(5 * time.Second):
		t.Fatal("the second query still waits")
	}
}
