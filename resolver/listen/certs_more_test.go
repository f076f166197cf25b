package listen

import (
	"crypto/elliptic"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCheckPairExtendedKeyUsage: a leaf that names no extended key usage
// (many internal CAs issue so) may serve TLS, as may one that names TLS
// server authentication among others, or any usage; one whose usages are
// all others (a client certificate) may not.
func TestCheckPairExtendedKeyUsage(t *testing.T) {
	ca := newTestCA(t)
	for _, tc := range []struct {
		name string
		eku  []x509.ExtKeyUsage
		ok   bool
	}{
		{"none named", []x509.ExtKeyUsage{}, true},
		{"any", []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, true},
		{"client and server", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}, true},
		{"client and any", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageAny}, true},
		{"client alone", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, false},
		{"client and code signing", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageCodeSigning}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, k, serial := ca.issue(t, leafOpts{eku: tc.eku})
			dir := t.TempDir()
			cf, kf := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
			require.NoError(t, os.WriteFile(cf, c, 0o600))
			require.NoError(t, os.WriteFile(kf, k, 0o600))
			leaf, err := CheckPair(cf, kf)
			if !tc.ok {
				require.ErrorContains(t, err, "extended key usage does not include TLS server authentication")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, serial, leaf.SerialNumber.Int64())
		})
	}
}

// TestCertStoreFileGoneKeepsPair: a reload that finds tls.key gone (a
// renewal tool mid-swap, a volume unmounted) says the content changed and
// why it was refused, keeps the pair served, and says so again at the next
// read of the same state, since nothing was parsed; once a new pair is
// there, it is served. Before that, the pair NewCertStore read is no
// change: nothing to report at the first poll.
func TestCertStoreFileGoneKeepsPair(t *testing.T) {
	ca := newTestCA(t)
	f, serial := writePair(t, ca)
	s, err := NewCertStore(f.cert, f.key, CertOptions{}) // not started: only Reload reads
	require.NoError(t, err)
	changed, err := s.Reload()
	assert.False(t, changed, "the pair read at start is no change")
	require.NoError(t, err)

	require.NoError(t, os.Remove(f.key))
	for range 2 {
		changed, err := s.Reload()
		assert.True(t, changed, "a file gone is a change")
		require.ErrorIs(t, err, os.ErrNotExist)
		assert.ErrorContains(t, err, "reading tls.key")
		assert.ErrorContains(t, err, "keeping the certificate expiring")
		assert.Equal(t, serial, s.Leaf().SerialNumber.Int64(), "the pair served is kept")
	}

	c, k, next := ca.issue(t, leafOpts{})
	require.NoError(t, os.WriteFile(f.cert, c, 0o600))
	require.NoError(t, os.WriteFile(f.key, k, 0o600))
	changed, err = s.Reload()
	assert.True(t, changed)
	require.NoError(t, err)
	assert.Equal(t, next, s.Leaf().SerialNumber.Int64())
}

// TestCertStoreZeroOptions: a store given CertOptions' zero value takes
// the default debounce and poll, rather than re-reading the pair at the
// first event of a renewal (before its second file is written) or
// panicking on a poll of no interval when started.
func TestCertStoreZeroOptions(t *testing.T) {
	ca := newTestCA(t)
	f, serial := writePair(t, ca)
	s, err := NewCertStore(f.cert, f.key, CertOptions{})
	require.NoError(t, err)
	assert.Equal(t, DefaultCertDebounce, s.opt.Debounce)
	assert.Equal(t, DefaultCertPoll, s.opt.Poll)
	require.NoError(t, s.Start())
	t.Cleanup(func() { _ = s.Close() })

	c, k, next := ca.issue(t, leafOpts{})
	renameOver(t, f.key, k)
	renameOver(t, f.cert, c)
	require.NotEqual(t, serial, next)
	require.Eventually(t, func() bool { return s.Leaf().SerialNumber.Int64() == next }, 5*time.Second, 10*time.Millisecond)
}

// TestCertStoreStartFolderGone: a folder that cannot be watched (removed
// since the pair was read) fails Start with the folder named, the pair
// read stays served, and Close returns with nothing to stop.
func TestCertStoreStartFolderGone(t *testing.T) {
	ca := newTestCA(t)
	f, serial := writePair(t, ca)
	s, err := NewCertStore(f.cert, f.key, CertOptions{})
	require.NoError(t, err)
	require.NoError(t, os.RemoveAll(f.dir))
	err = s.Start()
	require.ErrorContains(t, err, "watching the certificate folder "+f.dir)
	assert.Equal(t, serial, s.Leaf().SerialNumber.Int64())
	assert.NoError(t, s.Close())
}

// TestCertStoreClosesItsWatcher: the inotify instance Start opens is
// closed by Close, and by Start itself when a folder cannot be watched. A
// configuration reload makes a new store each time; one instance left open
// each time would use up fs.inotify.max_user_instances, after which no
// certificate (nor list) folder is watched at all.
func TestCertStoreClosesItsWatcher(t *testing.T) {
	before := testnet.InotifyInstances()
	if before < 0 {
		t.Skip("no /proc/self/fd here")
	}
	ca := newTestCA(t)
	for range 3 {
		f, _ := writePair(t, ca)
		s, err := NewCertStore(f.cert, f.key, CertOptions{})
		require.NoError(t, err)
		require.NoError(t, s.Start())
		assert.Equal(t, before+1, testnet.InotifyInstances(), "one instance while it watches")
		require.NoError(t, s.Close())
		assert.Equal(t, before, testnet.InotifyInstances(), "closed by Close")

		gone, _ := writePair(t, ca)
		s, err = NewCertStore(gone.cert, gone.key, CertOptions{})
		require.NoError(t, err)
		require.NoError(t, os.RemoveAll(gone.dir))
		require.Error(t, s.Start())
		assert.Equal(t, before, testnet.InotifyInstances(), "closed by the Start that failed")
	}
}

// TestCertStoreUnchangedNotReported: polls and folder events that find the
// pair's content as it was report nothing: OnReload (a log line and the
// reload metric) hears only of a change.
func TestCertStoreUnchangedNotReported(t *testing.T) {
	ca := newTestCA(t)
	f, _ := writePair(t, ca)
	s, reports := startStore(t, f, 50*time.Millisecond)
	// A file of the folder that is not the pair: events, no change.
	require.NoError(t, os.WriteFile(filepath.Join(f.dir, "other"), []byte("x"), 0o600))
	require.Never(t, func() bool { return len(reports) > 0 }, 600*time.Millisecond, 10*time.Millisecond,
		"a report with the pair unchanged")
	changed, err := s.Reload()
	assert.False(t, changed)
	assert.NoError(t, err)
}

// TestCertStoreOneFileChanged: a renewal that keeps the key (certbot
// --reuse-key, cert-manager's rotationPolicy Never) rewrites tls.cert
// alone, and the new certificate is served; a tls.key rewritten alone
// with another key is a change too, refused, the pair kept.
func TestCertStoreOneFileChanged(t *testing.T) {
	ca := newTestCA(t)
	key := ecdsaKey(t, elliptic.P256())
	c, k, serial := ca.issue(t, leafOpts{key: key})
	dir := t.TempDir()
	f := certFiles{dir: dir, cert: filepath.Join(dir, "tls.crt"), key: filepath.Join(dir, "tls.key")}
	require.NoError(t, os.WriteFile(f.cert, c, 0o600))
	require.NoError(t, os.WriteFile(f.key, k, 0o600))
	s, err := NewCertStore(f.cert, f.key, CertOptions{}) // not started: only Reload reads
	require.NoError(t, err)

	renewed, sameKey, next := ca.issue(t, leafOpts{key: key})
	require.Equal(t, k, sameKey)
	require.NotEqual(t, serial, next)
	require.NoError(t, os.WriteFile(f.cert, renewed, 0o600))
	changed, err := s.Reload()
	assert.True(t, changed, "tls.cert alone changed")
	require.NoError(t, err)
	assert.Equal(t, next, s.Leaf().SerialNumber.Int64())

	_, otherKey, _ := ca.issue(t, leafOpts{})
	require.NoError(t, os.WriteFile(f.key, otherKey, 0o600))
	changed, err = s.Reload()
	assert.True(t, changed, "tls.key alone changed")
	require.ErrorContains(t, err, "private key does not match public key")
	assert.Equal(t, next, s.Leaf().SerialNumber.Int64(), "the pair served is kept")
}

// TestCertStoreContentMovedBetweenFiles: a renewal that wrote the new
// certificate and key both into tls.cert, tls.key left empty, is refused;
// put right, the same bytes split between the two files as they should
// be, it is read again and served, not taken for the content refused
// (which, end to end, it is).
func TestCertStoreContentMovedBetweenFiles(t *testing.T) {
	ca := newTestCA(t)
	f, serial := writePair(t, ca)
	s, err := NewCertStore(f.cert, f.key, CertOptions{}) // not started: only Reload reads
	require.NoError(t, err)

	c, k, next := ca.issue(t, leafOpts{})
	require.NoError(t, os.WriteFile(f.cert, cat(c, k), 0o600))
	require.NoError(t, os.WriteFile(f.key, nil, 0o600))
	changed, err := s.Reload()
	assert.True(t, changed)
	require.Error(t, err, "no key in tls.key")
	assert.Equal(t, serial, s.Leaf().SerialNumber.Int64(), "the pair served is kept")

	require.NoError(t, os.WriteFile(f.cert, c, 0o600))
	require.NoError(t, os.WriteFile(f.key, k, 0o600))
	changed, err = s.Reload()
	assert.True(t, changed, "the files' content changed")
	require.NoError(t, err)
	assert.Equal(t, next, s.Leaf().SerialNumber.Int64(), "the pair put right is served")
}

// TestCheckPairKeyFileBlockBroken: a tls.key whose second block does not
// decode (a file cut short as it was appended to) is named as the file at
// fault, with the block, as `check` says of tls.cert; not blamed on the
// pair as a whole ("failed to find any PEM data").
func TestCheckPairKeyFileBlockBroken(t *testing.T) {
	ca := newTestCA(t)
	c, k, _ := ca.issue(t, leafOpts{})
	dir := t.TempDir()
	cf, kf := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	require.NoError(t, os.WriteFile(cf, c, 0o600))
	require.NoError(t, os.WriteFile(kf, cat(k, k[:len(k)/2]), 0o600))
	_, err := CheckPair(cf, kf)
	require.ErrorContains(t, err, "tls.key "+kf+": PEM block 2 does not decode")
}
