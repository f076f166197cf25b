package source

import (
	"encoding/base64"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestNotifyVerifiesEveryAlgorithm: a NOTIFY signed whole with a
// sources.tsig key of each algorithm it may name verifies, and one whose
// MAC is truncated to half is BADTRUNC (errTruncated), not a MAC of a
// length the algorithm rules out: Verify knows each algorithm's MAC length.
func TestNotifyVerifiesEveryAlgorithm(t *testing.T) {
	secret := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	for alg, full := range map[string]int{"hmac-sha1": 20, "hmac-sha224": 28, "hmac-sha256": 32, "hmac-sha384": 48, "hmac-sha512": 64} {
		t.Run(alg, func(t *testing.T) {
			z, err := NewZone("axfr://127.0.0.1:5300/rpz.test", Options{TSIG: &TSIG{Name: "xfr-key.", Algorithm: alg, Secret: secret}})
			require.NoError(t, err)
			n := NewNotifier([]Source{z})
			q := new(dns.Msg)
			q.SetNotify("rpz.test.")
			q.SetTsig("xfr-key.", alg+".", 300, time.Now().Unix())
			wire, _, err := dns.TsigGenerate(q, secret, "", false)
			require.NoError(t, err)
			req := new(dns.Msg)
			require.NoError(t, req.Unpack(wire))
			require.Equal(t, full, int(req.IsTsig().MACSize))
			assert.NoError(t, n.Verify(req, wire))

			half := max(10, full/2)
			req.IsTsig().MAC, req.IsTsig().MACSize = req.IsTsig().MAC[:2*half], uint16(half)
			wire, err = req.Pack()
			require.NoError(t, err)
			assert.ErrorIs(t, n.Verify(req, wire), errTruncated)
		})
	}
}
