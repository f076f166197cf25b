package source

import (
	"archive/zip"
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// rawServer is a TCP listener on loopback that answers each request with
// what its current answer function writes on the raw connection: a
// broken or hostile HTTP server. Connections end when the test does, at
// the latest.
type rawServer struct {
	ln     net.Listener
	mu     sync.Mutex
	answer func(c net.Conn, req *http.Request)
	done   chan struct{}
	wg     sync.WaitGroup
}

func newRawServer(t *testing.T, answer func(c net.Conn, req *http.Request)) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &rawServer{ln: ln, answer: answer, done: make(chan struct{})}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Go(func() {
				defer c.Close()
				go func() { <-s.done; c.Close() }()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				s.mu.Lock()
				answer := s.answer
				s.mu.Unlock()
				answer(c, req)
			})
		}
	})
	t.Cleanup(func() {
		close(s.done)
		ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *rawServer) set(answer func(c net.Conn, req *http.Request)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.answer = answer
}

func (s *rawServer) url() string { return "http://" + s.ln.Addr().String() + "/list.txt" }

// writeRaw writes a raw answer and, when reset, ends the connection with
// a TCP RST (SO_LINGER 0) rather than a FIN.
func writeRaw(c net.Conn, head string, body []byte, reset bool) {
	c.Write([]byte(head))
	c.Write(body)
	if reset {
		c.(*net.TCPConn).SetLinger(0)
	}
}

// okAnswer is a whole, well-formed answer with body.
func okAnswer(body string) func(c net.Conn, req *http.Request) {
	return func(c net.Conn, _ *http.Request) {
		writeRaw(c, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", len(body)), []byte(body), false)
	}
}

func gzipped(t *testing.T, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	_, err := zw.Write(data)
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	return b.Bytes()
}

// TestURLHostileServer plays a broken or hostile HTTP server against a
// source that holds a good copy: each answer below must fail the fetch,
// name the URL and what is wrong, and keep the copy held (never
// delivered, never on disk). Blocky's and AdGuard Home's downloaders
// read a body to its end the same way; this also checks what each error
// says.
func TestURLHostileServer(t *testing.T) {
	const good = "tiktok.com\ndouyin.com\ncapcut.com\n"
	bomb := gzipped(t, bytes.Repeat([]byte("a.example\n"), 1<<20)) // 10 MiB inflated, ~10 KiB sent
	gz := gzipped(t, []byte(good+"lemon8.com\n"))
	badCRC := bytes.Clone(gz)
	badCRC[len(badCRC)-5] ^= 0xff // the CRC-32 in the trailer
	for _, tc := range []struct {
		name   string
		answer func(c net.Conn, req *http.Request)
		want   []string // what the error says, besides the URL
	}{
		{"content-length larger than sent", func(c net.Conn, _ *http.Request) {
			writeRaw(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", []byte("tiktok.com\n"), false)
		}, []string{"unexpected EOF"}},
		{"chunked without its last chunk", func(c net.Conn, _ *http.Request) {
			writeRaw(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", []byte("b\r\ntiktok.com\n\r\n"), false)
		}, []string{"unexpected EOF"}},
		{"connection reset mid-body", func(c net.Conn, _ *http.Request) {
			writeRaw(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", []byte("tiktok.com\n"), true)
		}, []string{"reading body"}},
		{"gzip corrupt", func(c net.Conn, _ *http.Request) {
			body := []byte("this is no gzip stream at all\n")
			writeRaw(c, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n", len(body)), body, false)
		}, []string{"gzip: invalid header"}},
		{"gzip truncated", func(c net.Conn, _ *http.Request) {
			body := gz[:len(gz)-12]
			writeRaw(c, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n", len(body)), body, false)
		}, []string{"unexpected EOF"}},
		{"gzip bad checksum", func(c net.Conn, _ *http.Request) {
			writeRaw(c, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n", len(badCRC)), badCRC, false)
		}, []string{"gzip: invalid checksum"}},
		{"gzip bomb past max_bytes", func(c net.Conn, _ *http.Request) {
			writeRaw(c, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n", len(bomb)), bomb, false)
		}, []string{ErrTooBig.Error()}},
		{"headers that never end", func(c net.Conn, _ *http.Request) {
			c.Write([]byte("HTTP/1.1 200 OK\r\n"))
			for i := range 100 { // 10 s at most
				if _, err := fmt.Fprintf(c, "X-Drip-%d: 1\r\n", i); err != nil {
					return // the client gave up, or the test ended
				}
				time.Sleep(100 * time.Millisecond)
			}
		}, []string{"timeout awaiting response headers"}},
		{"no answer at all", func(c net.Conn, _ *http.Request) {
			// Until the client gives up, or the test ends.
			io.Copy(io.Discard, c)
		}, []string{"timeout awaiting response headers"}},
		{"200 with an HTML error page", func(c net.Conn, _ *http.Request) {
			body := "<!DOCTYPE html><title>502 Bad Gateway</title>\n"
			writeRaw(c, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n", len(body)), []byte(body), false)
		}, []string{ErrHTML.Error()}},
		{"empty 200", func(c net.Conn, _ *http.Request) {
			writeRaw(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", nil, false)
		}, []string{ErrEmpty.Error()}},
		{"206 partial content", func(c net.Conn, _ *http.Request) {
			writeRaw(c, "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-10/33\r\nContent-Length: 11\r\n\r\n", []byte("tiktok.com\n"), false)
		}, []string{"206"}},
		{"302 without Location", func(c net.Conn, _ *http.Request) {
			writeRaw(c, "HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n", nil, false)
		}, []string{"302"}},
		{"informational answers without end", func(c net.Conn, _ *http.Request) {
			for end := time.Now().Add(5 * time.Second); time.Now().Before(end); {
				if _, err := c.Write([]byte("HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n")); err != nil {
					return
				}
				time.Sleep(time.Millisecond)
			}
		}, []string{"timeout awaiting response headers"}},
		{"content-length not a number", func(c net.Conn, _ *http.Request) {
			writeRaw(c, "HTTP/1.1 200 OK\r\nContent-Length: 11x\r\n\r\n", []byte("tiktok.com\n"), false)
		}, []string{"bad Content-Length"}},
		{"two content-lengths", func(c net.Conn, _ *http.Request) {
			writeRaw(c, "HTTP/1.1 200 OK\r\nContent-Length: 11\r\nContent-Length: 22\r\n\r\n", []byte("tiktok.com\n"), false)
		}, []string{"Content-Length"}},
		{"chunk size not a number", func(c net.Conn, _ *http.Request) {
			writeRaw(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", []byte("zz\r\ntiktok.com\n\r\n0\r\n\r\n"), false)
		}, []string{"reading body", "invalid byte in chunk length"}},
		{"chunk larger than max_bytes", func(c net.Conn, _ *http.Request) {
			writeRaw(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", []byte("7fffffff\r\n"+strings.Repeat("a.example\n", 7000)), false)
		}, []string{ErrTooBig.Error()}},
		{"not HTTP at all", func(c net.Conn, _ *http.Request) {
			writeRaw(c, "SSH-2.0-OpenSSH_9.6\r\n", nil, false)
		}, []string{"malformed HTTP"}},
	} {
		t.Run(tc.name, func(t *testing.T) { checkHostile(t, tc.answer, tc.want...) })
	}
}

// checkHostile has a source fetch a good copy from a raw server, then
// answer, and checks that the fetch fails with an error naming the URL
// and holding each of want, the copy held kept and nothing delivered.
func checkHostile(t *testing.T, answer func(c net.Conn, req *http.Request), want ...string) {
	t.Helper()
	const good = "tiktok.com\ndouyin.com\ncapcut.com\n"
	srv := newRawServer(t, okAnswer(good))
	opt := testOptions(t)
	opt.Timeout = time.Second
	opt.MaxBytes = 64 << 10
	src, err := NewURL(srv.url(), opt)
	require.NoError(t, err)
	rec := run(t, src)
	require.Equal(t, good, string(rec.waitCount(t, 1).Body))
	failures := src.Status().Failures

	srv.set(answer)
	st := waitStatus(t, src, func(st Status) bool { return st.Failures > failures })
	require.Error(t, st.LastError)
	assert.Contains(t, st.LastError.Error(), srv.url(), "the error names the URL")
	for _, w := range want {
		assert.Contains(t, st.LastError.Error(), w)
	}
	assert.True(t, st.HasContent)
	assert.Equal(t, sha256.Sum256([]byte(good)), st.SHA256, "the copy held stays")
	assert.Equal(t, 1, rec.count(), "nothing else delivered")
	disk, err := src.readCopy()
	require.NoError(t, err)
	assert.Equal(t, good, string(disk.Body), "nor kept on disk")
}

// TestURLGzipAccepted: a list sent gzip-encoded, as asked for, is the
// list, decoded.
func TestURLGzipAccepted(t *testing.T) {
	const good = "tiktok.com\ndouyin.com\n"
	gz := gzipped(t, []byte(good))
	srv := newRawServer(t, func(c net.Conn, req *http.Request) {
		writeRaw(c, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n", len(gz)), gz, false)
	})
	src, err := NewURL(srv.url(), testOptions(t))
	require.NoError(t, err)
	c, err := src.Fetch(t.Context())
	require.NoError(t, err)
	assert.Equal(t, good, string(c.Body))
}

// TestURLUTF8ByteOrderMarkAccepted: a UTF-8 list saved with a byte order
// mark (Windows) is a list.
func TestURLUTF8ByteOrderMarkAccepted(t *testing.T) {
	srv := newListServer(t, "\ufefftiktok.com\r\ndouyin.com\r\n")
	src, err := NewURL(srv.URL+"/l.txt", testOptions(t))
	require.NoError(t, err)
	c, err := src.Fetch(t.Context())
	require.NoError(t, err)
	assert.Equal(t, "\ufefftiktok.com\r\ndouyin.com\r\n", string(c.Body))
}

// testCert makes a certificate for names (DNS names or addresses) valid
// from notBefore to notAfter, signed by ca (self-signed when ca is nil).
func testCert(t *testing.T, ca *tls.Certificate, names []string, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "dnsfence test"},
		NotBefore: notBefore, NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: ca == nil}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	parent, signer := tmpl, any(key)
	if ca != nil {
		parent, signer = ca.Leaf, ca.PrivateKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// TestURLTLSRefused: a list server whose certificate does not verify
// (self-signed, for another name, expired) is refused, the copy held
// kept, and the error says which; the test's CA is trusted, as a
// private CA in the system's store would be.
func TestURLTLSRefused(t *testing.T) {
	now := time.Now()
	ca := testCert(t, nil, nil, now.Add(-time.Hour), now.Add(time.Hour))
	roots := x509.NewCertPool()
	roots.AddCert(ca.Leaf)
	for _, tc := range []struct {
		name string
		cert tls.Certificate
		want string
	}{
		{"trusted", testCert(t, &ca, []string{"127.0.0.1"}, now.Add(-time.Hour), now.Add(time.Hour)), ""},
		{"self-signed", testCert(t, nil, []string{"127.0.0.1"}, now.Add(-time.Hour), now.Add(time.Hour)), "certificate signed by unknown authority"},
		{"wrong name", testCert(t, &ca, []string{"lists.example.gov"}, now.Add(-time.Hour), now.Add(time.Hour)), "doesn't contain any IP SANs"},
		{"wrong address", testCert(t, &ca, []string{"127.0.0.2"}, now.Add(-time.Hour), now.Add(time.Hour)), "not 127.0.0.1"},
		{"expired", testCert(t, &ca, []string{"127.0.0.1"}, now.Add(-48*time.Hour), now.Add(-24*time.Hour)), "expired"},
		{"not yet valid", testCert(t, &ca, []string{"127.0.0.1"}, now.Add(24*time.Hour), now.Add(48*time.Hour)), "not yet valid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, "tiktok.com\n")
			}))
			srv.TLS = &tls.Config{Certificates: []tls.Certificate{tc.cert}}
			srv.Config.ErrorLog = log.New(io.Discard, "", 0)
			srv.StartTLS()
			t.Cleanup(srv.Close)
			src, err := NewURL(srv.URL+"/l.txt", testOptions(t))
			require.NoError(t, err)
			src.client.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: roots}
			c, err := src.Fetch(t.Context())
			if tc.want == "" {
				require.NoError(t, err)
				assert.Equal(t, "tiktok.com\n", string(c.Body))
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), srv.URL)
			assert.Contains(t, err.Error(), tc.want)
			t.Log(err)
		})
	}
}

// TestURLRedirectHostile: a redirect loop ends at MaxRedirects; https to
// http is refused even to loopback; http on loopback to another loopback
// address is followed.
func TestURLRedirectHostile(t *testing.T) {
	var loops atomic.Int64
	loop := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		loops.Add(1)
		http.Redirect(w, r, r.URL.Path, http.StatusFound)
	}))
	t.Cleanup(loop.Close)
	src, err := NewURL(loop.URL+"/l.txt", testOptions(t))
	require.NoError(t, err)
	_, err = src.Fetch(t.Context())
	require.ErrorIs(t, err, ErrRedirects)
	assert.EqualValues(t, MaxRedirects+1, loops.Load())

	plain := newListServer(t, "tiktok.com\n")
	tlsSrv := httptest.NewTLSServer(http.RedirectHandler(plain.URL+"/l.txt", http.StatusFound))
	t.Cleanup(tlsSrv.Close)
	src, err = NewURL(tlsSrv.URL+"/l.txt", testOptions(t))
	require.NoError(t, err)
	src.client.Transport.(*http.Transport).TLSClientConfig = tlsSrv.Client().Transport.(*http.Transport).TLSClientConfig
	_, err = src.Fetch(t.Context())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "refusing to leave https")

	// Another loopback address (of this helper's /24).
	ln, err := net.Listen("tcp", "127.0.138.7:0")
	if err != nil {
		t.Skipf("no 127.0.138.7: %v", err)
	}
	other := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "tiktok.com\n") }))
	other.Listener.Close()
	other.Listener = ln
	other.Start()
	t.Cleanup(other.Close)
	hop := httptest.NewServer(http.RedirectHandler(other.URL+"/l.txt", http.StatusFound))
	t.Cleanup(hop.Close)
	src, err = NewURL(hop.URL+"/l.txt", testOptions(t))
	require.NoError(t, err)
	c, err := src.Fetch(t.Context())
	require.NoError(t, err)
	assert.Equal(t, "tiktok.com\n", string(c.Body))
}

// TestURLValidatorsChangeSameBody: a server that changes its ETag and
// Last-Modified with every answer but not its body (a CDN, a generator
// that rewrites the file) is asked again and again, and the same bytes
// are never delivered again.
func TestURLValidatorsChangeSameBody(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := n.Add(1)
		w.Header().Set("ETag", fmt.Sprintf(`"v%d"`, i))
		w.Header().Set("Last-Modified", time.Now().Add(-time.Hour+time.Duration(i)*time.Second).UTC().Format(http.TimeFormat))
		fmt.Fprint(w, "tiktok.com\n")
	}))
	t.Cleanup(srv.Close)
	src, err := NewURL(srv.URL+"/l.txt", testOptions(t))
	require.NoError(t, err)
	rec := run(t, src)
	rec.waitCount(t, 1)
	require.Eventually(t, func() bool { return n.Load() >= 5 }, waitFor, tick)
	assert.Equal(t, 1, rec.count())
	st := src.Status()
	assert.NoError(t, st.LastError)
	assert.True(t, strings.HasPrefix(st.Version, `"v`), st.Version)
}

// TestURLRedirectToOtherSchemeRefused: a redirect to a file:, ftp: or any
// scheme but https and http is refused by its scheme, before the transport
// is asked (it was let through to a loopback host, and refused as
// "refusing to leave https" from an http:// entry that never was https);
// and a chain that went through https never comes back to http, even on
// loopback.
func TestURLRedirectToOtherSchemeRefused(t *testing.T) {
	for _, loc := range []string{"file:///etc/passwd", "ftp://127.0.0.1/list.txt", "gopher://127.0.0.1:70/list.txt"} {
		t.Run(loc, func(t *testing.T) {
			scheme, _, _ := strings.Cut(loc, ":")
			checkHostile(t, func(c net.Conn, _ *http.Request) {
				writeRaw(c, "HTTP/1.1 302 Found\r\nLocation: "+loc+"\r\nContent-Length: 0\r\n\r\n", nil, false)
			}, loc, fmt.Sprintf("scheme %q is not https or http", scheme))
		})
	}

	t.Run("http to https to http", func(t *testing.T) {
		plain := newListServer(t, "tiktok.com\n")
		tlsSrv := httptest.NewTLSServer(http.RedirectHandler(plain.URL+"/l.txt", http.StatusFound))
		t.Cleanup(tlsSrv.Close)
		first := httptest.NewServer(http.RedirectHandler(tlsSrv.URL+"/l.txt", http.StatusFound))
		t.Cleanup(first.Close)
		src, err := NewURL(first.URL+"/l.txt", testOptions(t))
		require.NoError(t, err)
		src.client.Transport.(*http.Transport).TLSClientConfig = tlsSrv.Client().Transport.(*http.Transport).TLSClientConfig
		_, err = src.Fetch(t.Context())
		require.Error(t, err)
		assert.Contains(t, err.Error(), "refusing to leave https")
	})
}

// TestURLContentEncodingNotAskedForRefused: the transport asks for gzip
// alone and decodes it; a body in any other Content-Encoding (deflate,
// br, gzip applied twice) is refused by its encoding, which the error
// names, where it was refused as "binary: NUL byte at offset N", or
// taken as the list when its bytes happened to be text.
func TestURLContentEncodingNotAskedForRefused(t *testing.T) {
	const list = "tiktok.com\ndouyin.com\ncapcut.com\nlemon8.com\n"
	var deflated bytes.Buffer
	fw, err := flate.NewWriter(&deflated, flate.BestCompression)
	require.NoError(t, err)
	fw.Write([]byte(list))
	require.NoError(t, fw.Close())
	for _, tc := range []struct {
		name, encoding string
		body           []byte
	}{
		{"deflate", "deflate", deflated.Bytes()},
		{"gzip twice", "gzip, gzip", gzipped(t, gzipped(t, []byte(list)))},
		// Labelled br, sent as text: whatever it is, it is not what
		// the header says.
		{"br labelled text", "br", []byte(list)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkHostile(t, func(c net.Conn, _ *http.Request) {
				writeRaw(c, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n\r\n", tc.encoding, len(tc.body)), tc.body, false)
			}, ErrEncoding.Error(), fmt.Sprintf("Content-Encoding %q", tc.encoding))
		})
	}
	// Decoded from the gzip the header names, still a compressed file:
	// encoded twice under one Content-Encoding (a .gz file compressed
	// again by the server), or under two header lines, of which the
	// transport decodes one. It read "served without a Content-Encoding
	// that says so".
	for _, header := range []string{"Content-Encoding: gzip\r\n", "Content-Encoding: gzip\r\nContent-Encoding: gzip\r\n"} {
		t.Run(strconv.Quote(header), func(t *testing.T) {
			body := gzipped(t, gzipped(t, []byte(list)))
			checkHostile(t, func(c net.Conn, _ *http.Request) {
				writeRaw(c, fmt.Sprintf("HTTP/1.1 200 OK\r\n%sContent-Length: %d\r\n\r\n", header, len(body)), body, false)
			}, ErrEncoding.Error(), "decoded from gzip, a gzip file still")
		})
	}
	// identity is no encoding.
	srv := newRawServer(t, func(c net.Conn, _ *http.Request) {
		writeRaw(c, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Encoding: identity\r\nContent-Length: %d\r\n\r\n", len(list)), []byte(list), false)
	})
	src, err := NewURL(srv.url(), testOptions(t))
	require.NoError(t, err)
	c, err := src.Fetch(t.Context())
	require.NoError(t, err)
	assert.Equal(t, list, string(c.Body))
}

// TestURLNotTextNamed: a body that is no UTF-8 text is refused with what
// it is and where, as a list file is (blocklist.CheckText): a UTF-16 or
// UTF-32 byte order mark, a NUL octet (UTF-16 without one) with its line,
// invalid UTF-8 with its line, a compressed file served without a
// Content-Encoding. They were all "binary: NUL byte at offset N" or
// "invalid UTF-8", with no line.
func TestURLNotTextNamed(t *testing.T) {
	const list = "tiktok.com\ndouyin.com\ncapcut.com\n"
	utf16 := func(s string, bom bool) []byte {
		var b []byte
		if bom {
			b = append(b, 0xff, 0xfe)
		}
		for _, r := range s {
			b = append(b, byte(r), 0)
		}
		return b
	}
	var zipped bytes.Buffer
	zw := zip.NewWriter(&zipped)
	f, err := zw.Create("list.txt")
	require.NoError(t, err)
	f.Write([]byte(list))
	require.NoError(t, zw.Close())
	for _, tc := range []struct {
		name string
		body []byte
		want []string
	}{
		{"utf-16 with byte order mark", utf16(list, true), []string{"line 1", "byte-order mark FF FE of UTF-16"}},
		{"utf-16 without byte order mark", utf16(list, false), []string{"line 1", "UTF-16 without a byte-order mark"}},
		{"NUL on line 3", []byte("tiktok.com\ndouyin.com\ncap\x00cut.com\n"), []string{"line 3", "NUL"}},
		{"invalid utf-8 on line 3", []byte("tiktok.com\ndouyin.com\ncap\xffcut.com\n"), []string{"line 3", "invalid UTF-8 (octet 0xff at offset 25)"}},
		{"latin-1", []byte("tiktok.com\n# Liste gepr\xfcft\n"), []string{"line 2", "invalid UTF-8"}},
		{"latin-1 at the first octet", []byte("\xe9cole.example\ntiktok.com\n"), []string{"line 1", "invalid UTF-8 (octet 0xe9 at offset 0)"}},
		{"gzip file", gzipped(t, []byte(list)), []string{"a gzip file (it starts 1F 8B 08 00), served without a Content-Encoding that says so"}},
		{"zip file", zipped.Bytes(), []string{"a zip file", "served without a Content-Encoding that says so"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkHostile(t, func(c net.Conn, _ *http.Request) {
				writeRaw(c, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", len(tc.body)), tc.body, false)
			}, append([]string{ErrBinary.Error()}, tc.want...)...)
		})
	}
	// A list whose first name happens to start like a magic number is
	// text all the same: also when a character of more than one octet
	// spans its 64th octet, and it is no bzip2 file when its text is
	// not UTF-8 (Latin-1), but a list that says where.
	require.NoError(t, checkText([]byte("BZh.example\nPK.example\n")))
	spanning := "BZhotel.example\n# " + strings.Repeat("x", 63-len("BZhotel.example\n# ")) + "\u00fcberpr\u00fcft\n"
	require.Equal(t, "\xc3\xbc", spanning[63:65])
	require.NoError(t, checkText([]byte(spanning)))
	err = checkText([]byte("BZhotel.example\n# Liste gepr\xfcft\n"))
	require.ErrorIs(t, err, ErrBinary)
	require.ErrorContains(t, err, "line 2: invalid UTF-8")
	// A bzip2 file (its stream magic, a block's pi) is named.
	err = checkText([]byte("BZh91AY&SY\x8a\x16\xc0\x01\x00\x00\x02\x81\x80\x00\x10 \x00!\x9ah3M\x10\xbc]\xc9\x14\xe1BB(X\x1b\x00"))
	require.ErrorContains(t, err, "a bzip2 file")
}

// TestURLRetryAfterHonoured: a server that answers 429 or 503 with a
// Retry-After is not asked again sooner than it asked (it was asked a
// second later, then two, ...: a fleet of instances hammering a
// rate-limited server), within bounds: sources.refresh, and NoCopyRetry
// while the source has no copy. The error says what the server asked.
func TestURLRetryAfterHonoured(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		v    string
		want time.Duration
		ok   bool
	}{
		{"120", 120 * time.Second, true},
		{" 5 ", 5 * time.Second, true},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{"0", 0, false},
		{"-5", 0, false},
		{"1.5", 0, false},
		{"soon", 0, false},
		// Past what a number holds: the most there is (as RFC 9111
		// §1.2.2 has a cache take a delta-seconds too great), so that
		// the wait is the refresh, not the backoff's second.
		{"99999999999999999999", 1 << 31 * time.Second, true},
		{"4294967296", 1 << 31 * time.Second, true},
		{"4294967295", 1 << 31 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, false},
		{"", 0, false},
	} {
		d, ok := parseRetryAfter(tc.v, now)
		assert.Equal(t, tc.ok, ok, "%q", tc.v)
		assert.Equal(t, tc.want, d, "%q", tc.v)
	}
	ra := &retryAfterError{err: ErrStatus, after: 2 * time.Hour}
	assert.Equal(t, time.Hour, honourRetryAfter(time.Second, ra, time.Hour, true), "at most the refresh")
	assert.Equal(t, noCopyRetry, honourRetryAfter(time.Second, ra, time.Hour, false), "at most NoCopyRetry without a copy")
	assert.Equal(t, 30*time.Second, honourRetryAfter(time.Second, &retryAfterError{err: ErrStatus, after: 30 * time.Second}, time.Hour, true))
	assert.Equal(t, 8*time.Second, honourRetryAfter(8*time.Second, &retryAfterError{err: ErrStatus, after: 2 * time.Second}, time.Hour, true), "never sooner than the backoff")
	assert.Equal(t, time.Second, honourRetryAfter(time.Second, ErrStatus, time.Hour, true), "no Retry-After: the backoff")

	// Only a 429 or a 503 asks so: a Retry-After on a 500 is not read,
	// and the backoff stands.
	for status, honoured := range map[int]bool{http.StatusInternalServerError: false, http.StatusServiceUnavailable: true} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Retry-After", "3600")
			http.Error(w, "down", status)
		}))
		src, err := NewURL(srv.URL+"/l.txt", testOptions(t))
		require.NoError(t, err)
		_, err = src.Fetch(t.Context())
		srv.Close()
		require.ErrorIs(t, err, ErrStatus)
		_, ok := errors.AsType[*retryAfterError](err)
		assert.Equal(t, honoured, ok, "%d: %v", status, err)
	}

	// An HTTP-date is read on the server's clock (its Date), not ours:
	// a server two hours behind asking for an hour is not ignored as
	// asking for a time past, nor one two hours ahead waited for three.
	for _, tc := range []struct {
		status int
		skew   time.Duration // server's clock minus ours; 0: Retry-After in seconds
	}{
		{http.StatusTooManyRequests, 0},
		{http.StatusServiceUnavailable, 0},
		{http.StatusServiceUnavailable, -2 * time.Hour},
		{http.StatusTooManyRequests, 2 * time.Hour},
	} {
		status := tc.status
		t.Run(fmt.Sprintf("%d/skew_%v", status, tc.skew), func(t *testing.T) {
			var requests atomic.Int64
			var limited atomic.Bool
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				requests.Add(1)
				if limited.Load() {
					if tc.skew == 0 {
						w.Header().Set("Retry-After", "3600")
					} else {
						date := time.Now().Add(tc.skew)
						w.Header().Set("Date", date.Format(http.TimeFormat))
						w.Header().Set("Retry-After", date.Add(time.Hour).Format(http.TimeFormat))
					}
					http.Error(w, "slow down", status)
					return
				}
				fmt.Fprint(w, "tiktok.com\n")
			}))
			t.Cleanup(srv.Close)
			opt := testOptions(t)
			opt.Refresh = time.Hour
			src, err := NewURL(srv.URL+"/l.txt", opt)
			require.NoError(t, err)
			rec := run(t, src)
			rec.waitCount(t, 1)
			limited.Store(true)
			src.Wake()
			st := waitError(t, src, ErrStatus)
			assert.Contains(t, st.LastError.Error(), "(Retry-After 1h0m0s)")
			asked := requests.Load()
			// The backoff alone would ask again after a second.
			time.Sleep(2500 * time.Millisecond)
			assert.Equal(t, asked, requests.Load(), "asked again before the Retry-After")
			assert.True(t, src.Status().HasContent)
		})
	}
}

// TestURLNotModifiedWithAnotherETagIsFetched: a 304 to If-None-Match "A"
// that gives ETag "B" says the representation is now "B", not the one
// held (a cache or proxy that answers 304 to any If-None-Match, a backend
// that matched on something else): the list is fetched whole, as after a
// 304 naming another Last-Modified, rather than taking "B" as the copy
// held's ETag. Asked with "B" next, such a server answered 304 for good
// and the new list was never fetched. A weak form of the same tag
// (W/"A", as a compressing proxy gives) is the same tag.
func TestURLNotModifiedWithAnotherETagIsFetched(t *testing.T) {
	const v1, v2 = "tiktok.com\n", "tiktok.com\ndouyin.com\n"
	var etag, body atomic.Value
	etag.Store(`"A"`)
	body.Store(v1)
	var full, weak atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tag := etag.Load().(string)
		w.Header().Set("ETag", tag)
		if r.Header.Get("If-None-Match") != "" { // 304 to any If-None-Match
			if strings.HasPrefix(tag, "W/") {
				weak.Add(1)
			}
			w.WriteHeader(http.StatusNotModified)
			return
		}
		full.Add(1)
		fmt.Fprint(w, body.Load().(string))
	}))
	t.Cleanup(srv.Close)
	src, err := NewURL(srv.URL+"/l.txt", testOptions(t))
	require.NoError(t, err)
	rec := run(t, src)
	require.Equal(t, v1, string(rec.waitCount(t, 1).Body))

	// The same tag, weak: still 304s, nothing fetched whole.
	// Polls are one after another: when the third 304 with it is
	// served, the first was read, and a fetch it caused made.
	n := full.Load()
	etag.Store(`W/"A"`)
	require.Eventually(t, func() bool { return weak.Load() >= 3 }, waitFor, tick)
	assert.Equal(t, n, full.Load(), "a weak form of the tag held is that tag")

	etag.Store(`"B"`)
	body.Store(v2)
	assert.Equal(t, v2, string(rec.waitCount(t, 2).Body))
	// Recorded once the copy is on disk too, just after its delivery.
	waitStatus(t, src, func(st Status) bool { return st.Version == `"B"` })
}

// TestURLMaxBytesBoundary: a body of exactly sources.max_bytes is taken,
// one octet more is refused, with and without a Content-Length, and
// decoded from gzip (whose Content-Length is the encoded size).
func TestURLMaxBytesBoundary(t *testing.T) {
	const limit = 1000
	at := strings.Repeat("a.example\n", limit/10)
	over := at + "b"
	for _, framing := range []string{"content-length", "chunked", "close", "gzip"} {
		for _, body := range []string{at, over} {
			t.Run(fmt.Sprintf("%s/%d", framing, len(body)), func(t *testing.T) {
				srv := newRawServer(t, func(c net.Conn, _ *http.Request) {
					switch framing {
					case "content-length":
						writeRaw(c, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(body)), []byte(body), false)
					case "chunked":
						writeRaw(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", fmt.Appendf(nil, "%x\r\n%s\r\n0\r\n\r\n", len(body), body), false)
					case "close":
						writeRaw(c, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", []byte(body), false)
					case "gzip":
						gz := gzipped(t, []byte(body))
						writeRaw(c, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n", len(gz)), gz, false)
					}
				})
				opt := testOptions(t)
				opt.MaxBytes = limit
				src, err := NewURL(srv.url(), opt)
				require.NoError(t, err)
				c, err := src.Fetch(t.Context())
				if len(body) > limit {
					require.ErrorIs(t, err, ErrTooBig)
					return
				}
				require.NoError(t, err)
				assert.Len(t, c.Body, limit)
			})
		}
	}
}

// TestURLSlowDripEndsNamed: a server that drips its body a byte at a time,
// each within Options.Timeout (so never stalled), or that spends the
// header timeout on each of five redirects, is cut off at the limit of a
// whole fetch (ten minutes; lowered here), and the error says so and how
// much came: it read "context deadline exceeded (Client.Timeout or
// context cancellation while reading body)". The copy held stays.
func TestURLSlowDripEndsNamed(t *testing.T) {
	fetchLimit = 1500 * time.Millisecond
	t.Cleanup(func() { fetchLimit = transferLimit })
	opt := testOptions(t)
	// The header and stall timeout, far above the drip's 100 ms and each
	// hop's 400 ms, so that only the whole fetch's limit ends them, on a
	// busy machine too.
	opt.Timeout = 3 * time.Second

	drip := newRawServer(t, func(c net.Conn, _ *http.Request) {
		c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"))
		for range 100 { // 10 s at most
			if _, err := c.Write([]byte("a")); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	src, err := NewURL(drip.url(), opt)
	require.NoError(t, err)
	start := time.Now()
	_, err = src.Fetch(t.Context())
	require.ErrorIs(t, err, ErrTooSlow)
	assert.Less(t, time.Since(start), 5*time.Second)
	assert.ErrorContains(t, err, "answer too slow: not whole after 1.5s, the most a fetch may take (")
	assert.ErrorContains(t, err, " octets read)")
	assert.Contains(t, err.Error(), drip.url())

	// Five redirects, each answered within the header timeout, together
	// past the limit.
	hops := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
		time.Sleep(400 * time.Millisecond)
		if n >= MaxRedirects {
			fmt.Fprintln(w, "tiktok.com")
			return
		}
		http.Redirect(w, r, fmt.Sprintf("/%d", n+1), http.StatusFound)
	}))
	t.Cleanup(hops.Close)
	src, err = NewURL(hops.URL+"/0", opt)
	require.NoError(t, err)
	_, err = src.Fetch(t.Context())
	require.ErrorIs(t, err, ErrTooSlow)
	assert.ErrorContains(t, err, "not whole after 1.5s")

	// Under Run, with a copy held: counted, the copy kept.
	checkHostileSlow := func(c net.Conn, _ *http.Request) {
		c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\ntiktok.com\n"))
		for range 100 {
			if _, err := c.Write([]byte("a")); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	checkHostile(t, checkHostileSlow, ErrTooSlow.Error())
}

// TestURLBodyCutShortNamed: a body that ends before its framing says
// (Content-Length larger than sent, chunked without its last chunk, a
// gzip stream cut off, a reset) is refused with what happened and how
// much came, where it read "reading body: unexpected EOF".
func TestURLBodyCutShortNamed(t *testing.T) {
	gz := gzipped(t, []byte("tiktok.com\ndouyin.com\ncapcut.com\nlemon8.com\n"))
	for _, tc := range []struct {
		name   string
		answer func(c net.Conn, req *http.Request)
		want   []string
	}{
		{"content-length", func(c net.Conn, _ *http.Request) {
			writeRaw(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", []byte("tiktok.com\n"), false)
		}, []string{"the connection ended before the body did", "(11 of its Content-Length 100 octets read)"}},
		{"chunked", func(c net.Conn, _ *http.Request) {
			writeRaw(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", []byte("b\r\ntiktok.com\n\r\n"), false)
		}, []string{"the connection ended before the body did", "(11 octets read)"}},
		{"gzip", func(c net.Conn, _ *http.Request) {
			body := gz[:len(gz)-12]
			writeRaw(c, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n", len(body)), body, false)
		}, []string{"the gzip stream ended before its end", "octets decoded)"}},
		{"reset", func(c net.Conn, _ *http.Request) {
			writeRaw(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", []byte("tiktok.com\n"), true)
		}, []string{"connection reset by peer", "of its Content-Length 100 octets read)"}},
	} {
		t.Run(tc.name, func(t *testing.T) { checkHostile(t, tc.answer, tc.want...) })
	}
}
