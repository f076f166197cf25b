package listen

import (
	"bufio"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDoHDeclaredTooLargeRefusedUnread: a POST whose Content-Length is
// over the 65,535 octets of a DNS message (RFC 8484 §6) is answered 413
// from its header, without waiting for a body that may never come: a
// client that declares one and sends nothing cannot hold the request for
// the read timeout and have it end as a body that could not be read.
func TestDoHDeclaredTooLargeRefusedUnread(t *testing.T) {
	d := newDoHSetup(t, true, nil)
	c, err := net.Dial("tcp", d.addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(30*time.Second)))
	_, err = c.Write([]byte("POST " + DoHPath + " HTTP/1.1\r\nHost: " + d.addr + "\r\nContent-Type: " + DoHContentType +
		"\r\nContent-Length: 100000\r\n\r\n"))
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)
}
