package listen

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/fsnotify/fsnotify"
)

// Defaults of CertOptions.
const (
	// DefaultCertDebounce is how long the certificate folders must be quiet
	// before the pair is read again: cert-manager and certbot write the
	// certificate and the key one after the other.
	DefaultCertDebounce = 250 * time.Millisecond
	// DefaultCertPoll is the backstop re-check of the pair, for changes the
	// folder watch cannot see (a symlink target rewritten in another
	// folder, a network filesystem without inotify).
	DefaultCertPoll = time.Minute
)

// ErrCertExpired marks a certificate whose NotAfter has passed: every
// client would refuse it, so it is never loaded.
var ErrCertExpired = errors.New("certificate expired")

// CertOptions tunes a CertStore's watch. The zero value is usable.
type CertOptions struct {
	// Debounce: the quiet time after a change in either file's folder
	// before the pair is read again. Default DefaultCertDebounce.
	Debounce time.Duration
	// Poll: the backstop interval at which the pair is read again whatever
	// the watch saw. Default DefaultCertPoll.
	Poll time.Duration
	// OnReload, when set, is called from the watch goroutine after every
	// attempt that found the files' content changed: err nil when the new
	// pair is now served (notAfter is its expiry), else why it was refused
	// and the old pair kept (notAfter is then the kept pair's). The same
	// bad content is reported once, not at every poll.
	OnReload func(notAfter time.Time, err error)
}

// CertStore holds the server certificate of every encrypted listener (DoT,
// DoH, DoQ) and swaps it when tls.cert or tls.key changes on disk. A bad
// new pair (unparsable, cert and key not matching, expired, not for TLS
// servers) keeps the pair served until then. New handshakes get the
// current pair; connections already up keep theirs.
type CertStore struct {
	certFile, keyFile string
	opt               CertOptions

	// cur is the pair served; replaced whole, never mutated.
	cur atomic.Pointer[loadedPair]

	// mu serialises reloads; seen is the hash of the content last read
	// (good or bad), so unchanged or already-reported content is skipped.
	mu   sync.Mutex
	seen [sha256.Size]byte

	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

// loadedPair is one parsed certificate pair.
type loadedPair struct {
	cert     *tls.Certificate
	notAfter time.Time
}

// NewCertStore loads the PEM certificate chain in certFile (leaf first)
// and the PEM private key in keyFile. It returns an error, naming the file
// and the cause, when the pair cannot be served (see CheckPair); it does
// not watch the files until Start.
func NewCertStore(certFile, keyFile string, opt CertOptions) (*CertStore, error) {
	if opt.Debounce <= 0 {
		opt.Debounce = DefaultCertDebounce
	}
	if opt.Poll <= 0 {
		opt.Poll = DefaultCertPoll
	}
	s := &CertStore{certFile: certFile, keyFile: keyFile, opt: opt, stop: make(chan struct{})}
	certPEM, keyPEM, sum, err := s.read()
	if err != nil {
		return nil, err
	}
	p, err := parsePair(certFile, keyFile, certPEM, keyPEM, time.Now())
	if err != nil {
		return nil, err
	}
	s.cur.Store(p)
	s.seen = sum
	return s, nil
}

// CheckPair validates a certificate pair as NewCertStore and a reload do,
// for `dnsfence check`: the chain parses, the key is the leaf's, the leaf
// has not expired and may serve TLS, and the pair serves a TLS 1.3
// handshake (signsHandshakes). It returns the leaf (its NotAfter is
// the expiry).
func CheckPair(certFile, keyFile string) (leaf *x509.Certificate, err error) {
	s := &CertStore{certFile: certFile, keyFile: keyFile}
	certPEM, keyPEM, _, err := s.read()
	if err != nil {
		return nil, err
	}
	p, err := parsePair(certFile, keyFile, certPEM, keyPEM, time.Now())
	if err != nil {
		return nil, err
	}
	return p.cert.Leaf, nil
}

// GetCertificate is the tls.Config callback: the pair current at the
// handshake, whatever the client asked for.
func (s *CertStore) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.cur.Load().cert, nil
}

// NotAfter is the expiry of the leaf certificate served now.
func (s *CertStore) NotAfter() time.Time { return s.cur.Load().notAfter }

// Leaf is the leaf certificate served now.
func (s *CertStore) Leaf() *x509.Certificate { return s.cur.Load().cert.Leaf }

// Reload reads the pair now (SIGHUP, a configuration reload). changed
// reports that the files' content differs from what was last read; then
// err nil means the new pair is served, otherwise it was refused and the
// old one kept. Unchanged content returns (false, nil).
func (s *CertStore) Reload() (changed bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	certPEM, keyPEM, sum, err := s.read()
	if err != nil {
		// A file missing or unreadable mid-swap: nothing was parsed, so
		// a later read of the same bad state reports again.
		return true, fmt.Errorf("%w (keeping the certificate expiring %s)", err, s.NotAfter().Format(time.RFC3339))
	}
	if sum == s.seen {
		return false, nil
	}
	s.seen = sum
	p, err := parsePair(s.certFile, s.keyFile, certPEM, keyPEM, time.Now())
	if err != nil {
		return true, fmt.Errorf("%w (keeping the certificate expiring %s)", err, s.NotAfter().Format(time.RFC3339))
	}
	s.cur.Store(p)
	return true, nil
}

// Start watches the folders of both files (cert-manager swaps a symlink
// there, certbot repoints its live/ links, an editor renames over the
// file) and re-reads the pair after opt.Debounce of quiet, and every
// opt.Poll regardless. It returns an error when the folders cannot be
// watched; then nothing runs. Close stops it.
func (s *CertStore) Start() error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching the certificate files: %w", err)
	}
	dirs := []string{filepath.Dir(s.certFile), filepath.Dir(s.keyFile)}
	slices.Sort(dirs)
	for _, d := range slices.Compact(dirs) {
		if err := w.Add(d); err != nil {
			w.Close()
			return fmt.Errorf("watching the certificate folder %s: %w", d, err)
		}
	}
	s.wg.Add(1)
	go s.watch(w)
	return nil
}

// Close stops the watch started by Start and waits for it. The pair
// loaded stays served.
func (s *CertStore) Close() error {
	s.once.Do(func() { close(s.stop) })
	s.wg.Wait()
	return nil
}

// watch is the one goroutine that reloads on its own.
func (s *CertStore) watch(w *fsnotify.Watcher) {
	defer s.wg.Done()
	defer w.Close()
	poll := time.NewTicker(s.opt.Poll)
	defer poll.Stop()
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	for {
		select {
		case <-s.stop:
			debounce.Stop()
			return
		case _, ok := <-w.Events:
			if !ok {
				return
			}
			// Any change in the folder: the pair's own names, a
			// ..data symlink swap, a rename over the file.
			debounce.Reset(s.opt.Debounce)
		case _, ok := <-w.Errors:
			if !ok {
				return
			}
			// Events may have been lost (queue overflow): read again.
			debounce.Reset(s.opt.Debounce)
		case <-debounce.C:
			s.reloadAndReport()
		case <-poll.C:
			s.reloadAndReport()
		}
	}
}

// reloadAndReport reloads and tells OnReload when something changed.
func (s *CertStore) reloadAndReport() {
	changed, err := s.Reload()
	if changed && s.opt.OnReload != nil {
		s.opt.OnReload(s.NotAfter(), err)
	}
}

// read reads both files and hashes their content together.
func (s *CertStore) read() (certPEM, keyPEM []byte, sum [sha256.Size]byte, err error) {
	// Through blocklist.ReadFile, as upstream_ca is read: os.ReadFile's
	// open(2) of a named pipe with no writer would hold start, `check`,
	// and every reload after it, for ever.
	certPEM, err = blocklist.ReadFile(s.certFile)
	if err != nil {
		return nil, nil, sum, fmt.Errorf("reading tls.cert: %w", err)
	}
	keyPEM, err = blocklist.ReadFile(s.keyFile)
	if err != nil {
		return nil, nil, sum, fmt.Errorf("reading tls.key: %w", err)
	}
	h := sha256.New()
	h.Write(certPEM)
	h.Write([]byte{0}) // a byte moved from one file to the other still differs
	h.Write(keyPEM)
	h.Sum(sum[:0])
	return certPEM, keyPEM, sum, nil
}

// parsePair parses and validates a pair read from certFile and keyFile
// (the names only go into errors). Every PEM block of either file must
// decode (DecodePEM), and the pair is made of those blocks alone.
func parsePair(certFile, keyFile string, certPEM, keyPEM []byte, now time.Time) (*loadedPair, error) {
	// tls.X509KeyPair passes over a block that does not decode: a chain
	// cut short in its intermediate was served as the leaf alone.
	blocks, err := DecodePEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("tls.cert %s: %w", certFile, err)
	}
	if !slices.ContainsFunc(blocks, func(b *pem.Block) bool { return b.Type == "CERTIFICATE" }) {
		return nil, fmt.Errorf("tls.cert %s: no PEM CERTIFICATE block", certFile)
	}
	keyBlocks, err := DecodePEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tls.key %s: %w", keyFile, err)
	}
	// tls.X509KeyPair is given the blocks DecodePEM found, written out
	// again, never the file's bytes: it finds a block only at the start
	// of the data or of a line, so a UTF-8 byte order mark (which every
	// file dnsfence reads may start with, DESIGN.md §10) failed the pair
	// at the start of a file, and before the intermediate of a chain
	// joined with cat had it passed over and the leaf served alone.
	cert, err := tls.X509KeyPair(encodePEM(blocks), encodePEM(keyBlocks))
	if err != nil {
		return nil, fmt.Errorf("tls.cert %s and tls.key %s: %w", certFile, keyFile, err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("tls.cert %s: %w", certFile, err)
		}
		cert.Leaf = leaf
	}
	if now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("tls.cert %s: %w on %s", certFile, ErrCertExpired, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if len(leaf.ExtKeyUsage) > 0 && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) &&
		!slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny) {
		return nil, fmt.Errorf("tls.cert %s: the certificate's extended key usage does not include TLS server authentication", certFile)
	}
	if err := signsHandshakes(&cert); err != nil {
		return nil, fmt.Errorf("tls.key %s: the key cannot sign a TLS handshake: %w", keyFile, err)
	}
	return &loadedPair{cert: &cert, notAfter: leaf.NotAfter}, nil
}

// encodePEM writes blocks out as PEM, one after the other (RFC 7468).
func encodePEM(blocks []*pem.Block) []byte {
	var out []byte
	for _, b := range blocks {
		out = append(out, pem.EncodeToMemory(b)...)
	}
	return out
}

// handshakeCheckTimeout bounds signsHandshakes' handshake, which runs
// in memory and takes milliseconds: only a bug could make it wait.
const handshakeCheckTimeout = 10 * time.Second

// signsHandshakes runs one TLS 1.3 handshake with cert over an in-memory
// pipe, crypto/tls on both ends, and returns why it failed. A pair that
// parses and whose key matches its certificate may still serve no
// handshake: Go's crypto/rsa signs with no RSA key under 1,024 bits (Go
// 1.24, GODEBUG rsa1024min), and TLS 1.3 has no signature scheme for an
// ECDSA key on P-224 (RFC 8446 §4.2.3 names P-256, P-384 and P-521 only):
// such a pair loaded, `check` said ok, and every handshake of DoQ (TLS 1.3
// only, RFC 9250 §4.1) and of every client that offers TLS 1.3 on DoT and
// DoH ended in an alert. A handshake, rather than a signature made the
// way one would be, is the check that cannot disagree with the
// listeners. TLS 1.3 is the version asked: DoQ speaks no other, and
// clients offer it first.
//
// The client pins the certificate rather than verifying its chain (the
// chain is the operator's; verification against the clients' roots is
// theirs), and checks the handshake's signature against the leaf's key,
// as crypto/tls does whatever InsecureSkipVerify says.
func signsHandshakes(cert *tls.Certificate) error {
	sc, cc := net.Pipe()
	defer sc.Close()
	defer cc.Close()
	deadline := time.Now().Add(handshakeCheckTimeout)
	_ = sc.SetDeadline(deadline)
	_ = cc.SetDeadline(deadline)
	leaf := cert.Certificate[0]
	client := tls.Client(cc, &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // pinned below: the handshake is with ourselves
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 || !bytes.Equal(raw[0], leaf) {
				return errors.New("the handshake served another certificate")
			}
			return nil
		},
	})
	clientErr := make(chan error, 1)
	go func() {
		err := client.Handshake()
		cc.Close() // a server still waiting for the client's Finished returns
		clientErr <- err
	}()
	err := tls.Server(sc, &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS13}).Handshake()
	sc.Close() // a client still waiting for the server returns
	if cerr := <-clientErr; err == nil {
		err = cerr
	}
	return err
}
