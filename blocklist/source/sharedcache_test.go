package source

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestURLPinnedDiskCopyNotOverwrittenByUnpinnedEntry: one URL listed twice,
// pinned (a reviewed version, for the blocking policy) and unpinned (the
// latest, say for a log-only policy), is two sources. The server moves on
// from the pinned body: the pinned source refuses the new body and keeps
// its copy, the unpinned one takes it. After a restart with the server
// down, the pinned source must still block at once from its disk copy;
// the unpinned one's write must not have taken it away.
func TestURLPinnedDiskCopyNotOverwrittenByUnpinnedEntry(t *testing.T) {
	const v1, v2 = "tiktok.com\ndouyin.com\n", "example.org\n"
	srv := newListServer(t, v1)
	opt := testOptions(t)
	sum := sha256.Sum256([]byte(v1))
	pinned := srv.URL + "/l.txt#sha256=" + hex.EncodeToString(sum[:])
	latest := srv.URL + "/l.txt"

	p, err := NewURL(pinned, opt)
	require.NoError(t, err)
	u, err := NewURL(latest, opt)
	require.NoError(t, err)
	stopP := runWith(t, p, &receiver{})
	recU := &receiver{}
	stopU := runWith(t, u, recU)
	waitStatus(t, p, func(st Status) bool { return st.HasContent && !st.FromCache })
	recU.waitCount(t, 1)

	srv.set(func(s *listServer) { s.body = []byte(v2) })
	waitError(t, p, ErrPin)
	require.Equal(t, v2, string(recU.waitCount(t, 2).Body))
	stopP()
	stopU() // Run returns after the disk copy of what it delivered is written (poll, on its goroutine)
	srv.Close()

	// A restart with the server down.
	p2, err := NewURL(pinned, opt)
	require.NoError(t, err)
	rec := run(t, p2)
	// Run serves the disk copy (HasContent) before its first fetch can
	// fail (LastError): whichever comes first decides. The delivery is
	// not the sign (it comes before HasContent is set).
	st := waitStatus(t, p2, func(st Status) bool { return st.HasContent || st.LastError != nil })
	assert.NoError(t, st.CacheError, "the pinned source's disk copy")
	require.True(t, st.HasContent, "the pinned list has no copy after a restart with the server down: %v", st.CacheError)
	assert.Equal(t, v1, string(rec.last().Body))
}
