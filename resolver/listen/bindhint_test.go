package listen

import (
	"errors"
	"net"
	"os"
	"strconv"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestBindHint: the hint follows the kernel's error of a real bind, for
// every form a listen address takes (a DoH listener's http://HOST:PORT
// names its port too), and is empty for any other error.
func TestBindHint(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { held.Close() })
	port := strconv.Itoa(held.Addr().(*net.TCPAddr).Port)

	for _, addr := range []string{"127.0.0.1:" + port, "http://127.0.0.1:" + port, "https://127.0.0.1:" + port} {
		_, err := net.Listen("tcp", "127.0.0.1:"+port)
		require.Error(t, err)
		assert.Contains(t, BindHint(addr, err), "`ss -lntup 'sport = :"+port+"'`", addr)
	}
	_, err = net.ListenPacket("udp", "192.0.2.1:5353") // TEST-NET-1: on no interface
	require.Error(t, err)
	assert.Contains(t, BindHint("192.0.2.1:5353", err), "no interface of this host has that address")
	assert.Empty(t, BindHint("127.0.0.1:53", errors.New("no certificate")))
}

// TestBindHintPrivilegedPort: a bind refused for want of the capability
// (EACCES, as net.Listen returns it for port 53 run unprivileged) gets the
// hint naming CAP_NET_BIND_SERVICE. The tests run as root, which the
// kernel lets bind any port, so the error is the one net.Listen wraps.
func TestBindHintPrivilegedPort(t *testing.T) {
	err := &net.OpError{Op: "listen", Net: "tcp", Err: os.NewSyscallError("bind", syscall.EACCES)}
	assert.Contains(t, BindHint("127.0.191.1:53", err), "a port below 1024 needs CAP_NET_BIND_SERVICE")
	assert.NotContains(t, BindHint("127.0.191.1:53", err), "another process holds the port")
}
