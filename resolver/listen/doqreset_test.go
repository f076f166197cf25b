package listen

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDoQResetStreamAnsweredCancelled: a query its client cancelled with
// RESET_STREAM before its STREAM FIN (RFC 9250 §4.3.1) is not processed,
// and the listener's side of the stream is reset with
// DOQ_REQUEST_CANCELLED, the code that says the client cancelled it, not
// DOQ_INTERNAL_ERROR, which says the server failed; the connection goes
// on and nothing is counted.
func TestDoQResetStreamAnsweredCancelled(t *testing.T) {
	d := newDoQSetup(t, nil)
	c, err := d.dial(t)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.OpenStreamSync(ctx)
	require.NoError(t, err)
	require.NoError(t, st.SetDeadline(time.Now().Add(5*time.Second)))
	b := mustPack(t, query("reset.example.org"))
	_, err = st.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b[:len(b)/2]...)) // half the query, no FIN
	require.NoError(t, err)
	st.CancelWrite(DoQRequestCancelled) // RESET_STREAM

	_, err = io.ReadAll(st)
	var se *quic.StreamError
	require.True(t, errors.As(err, &se), "the listener resets its side of the stream: %v", err)
	assert.Equal(t, quic.StreamErrorCode(DoQRequestCancelled), se.ErrorCode, "DOQ_REQUEST_CANCELLED")
	assert.True(t, se.Remote)

	r, err := doqExchange(c, query("after.example.org"))
	require.NoError(t, err, "the connection goes on")
	assert.Equal(t, dns.RcodeSuccess, r.Rcode)
	_, seen := d.handler.seenFor("reset.example.org")
	assert.False(t, seen, "the cancelled query was processed")
	assert.Zero(t, d.counts.get(QUIC, ResultDropped))
	assert.Zero(t, d.counts.get(QUIC, ResultBadRequest))
}
