package upstream

import (
	"context"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDoHBodyCutShort: an answer whose body breaks off (the upstream
// resets the stream after part of it) is no answer, not even a malformed
// one: the query is sent once more, as on a connection that breaks
// (TestDoHBrokenConnection), and the whole answer that comes then is
// taken.
func TestDoHBodyCutShort(t *testing.T) {
	pki := newPKI(t)
	srv := startDoH(t, pki.good, answerWithA)
	var requests atomic.Int32
	srv.setBefore(func(w http.ResponseWriter, r *http.Request) bool {
		if requests.Add(1) > 1 {
			return false
		}
		q := dohQuery(r)
		require.NotNil(t, q)
		b, err := answerWithA(q).Pack()
		require.NoError(t, err)
		w.Header().Set("Content-Type", dohMediaType)
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		_, _ = w.Write(b[:12])
		http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler) // resets the stream
	})
	tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
	resp, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
	require.NoError(t, err)
	require.NotNil(t, resp)
	assert.Len(t, resp.Answer, 1)
	assert.Equal(t, int32(2), requests.Load(), "the query went out twice")
}

// TestDoHEveryConnectionBroken: a query whose connection breaks under it
// is sent once more on a new connection, and no more when that one breaks
// too, as over DoT and DoQ.
func TestDoHEveryConnectionBroken(t *testing.T) {
	pki := newPKI(t)
	srv := startDoH(t, pki.good, answerWithA)
	srv.setBefore(func(http.ResponseWriter, *http.Request) bool {
		srv.closeAll()
		return true
	})
	tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
	resp, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
	assert.Nil(t, resp)
	require.Error(t, err)
	assert.NotErrorIs(t, err, ErrProtocol)
	assert.Len(t, srv.httpVersions(), 2, "sent once more, not again")
	assert.Equal(t, 2, srv.connections())
}

// TestDoHTimeoutSaysWhatBrokeBefore: a query whose connection broke, and
// whose second try then ran out of time, fails with its deadline
// (context.DeadlineExceeded), and the error says what had gone wrong
// before it ("after: ..."), which a bare timeout would hide.
func TestDoHTimeoutSaysWhatBrokeBefore(t *testing.T) {
	pki := newPKI(t)
	srv := startDoH(t, pki.good, answerWithA)
	var requests atomic.Int32
	srv.setBefore(func(_ http.ResponseWriter, r *http.Request) bool {
		if requests.Add(1) == 1 {
			srv.closeAll()
		} else {
			<-r.Context().Done()
		}
		return true
	})
	tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := tr.Exchange(ctx, clientQuery("a.example.", false))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.ErrorContains(t, err, "(after: dns over https: ")
	assert.Equal(t, int32(2), requests.Load())
}
