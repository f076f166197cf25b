package testnet

import (
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// HeldList serves a remote list (one line, douyin.com) over HTTP on addr
// (a loopback address and port, or port 0) whose answer waits until
// release is called, or 20 s: a list server slow to send a first copy,
// while a test changes what dnsfence reads meanwhile. asked gets a value
// when it is first asked. release may be called more than once, and is
// called when the test ends.
func HeldList(t testing.TB, addr string) (url string, asked <-chan struct{}, release func()) {
	t.Helper()
	askedC := make(chan struct{}, 1)
	released := make(chan struct{})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		select {
		case askedC <- struct{}{}:
		default:
		}
		select {
		case <-released:
		case <-time.After(20 * time.Second):
		}
		_, _ = w.Write([]byte("douyin.com\n"))
	}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	var once sync.Once
	release = func() { once.Do(func() { close(released) }) }
	t.Cleanup(release)
	return srv.URL, askedC, release
}
