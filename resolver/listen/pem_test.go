package listen

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDecodePEMTextBeforeBlocks: text before and between blocks is passed
// over, as openssl writes it (`openssl pkcs12 -nokeys` puts "Bag
// Attributes" and subject lines before each certificate), and each block
// is decoded whole: the check that no block began inside the one decoded
// looks no further than that block, whatever text came before it.
func TestDecodePEMTextBeforeBlocks(t *testing.T) {
	ca := newTestCA(t)
	leaf, _, _ := ca.issue(t, leafOpts{notAfter: time.Now().Add(24 * time.Hour)})
	attrs := []byte("Bag Attributes\n    localKeyID: 01 00 00 00\nsubject=CN = dnsfence test leaf\nissuer=CN = dnsfence test CA\n")
	tests := []struct {
		name string
		data []byte
	}{
		{"text before the first block", cat(attrs, leaf, ca.pemOut)},
		{"text before each block", cat(attrs, leaf, attrs, ca.pemOut)},
		{"text between the blocks only", cat(leaf, attrs, ca.pemOut)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			blocks, err := DecodePEM(tc.data)
			require.NoError(t, err)
			require.Len(t, blocks, 2)
			for _, b := range blocks {
				assert.Equal(t, "CERTIFICATE", b.Type)
			}
		})
	}
}
