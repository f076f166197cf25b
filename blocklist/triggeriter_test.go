package blocklist

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestTriggerIteratorsStopWhenTold: AllTriggers (of a plain list, of an
// RPZ list, and of an updated RPZ list's additions) and IPTriggers stop
// when the loop over them breaks, as a range-over-func iterator must: one
// that went on would panic the caller ("continued iteration after
// function for loop body returned false").
func TestTriggerIteratorsStopWhenTold(t *testing.T) {
	plain, err := Parse("tiktok.txt", []byte("tiktok.com\ndouyin.com\n"))
	require.NoError(t, err)
	old := transferList(t, rrs(t,
		"rpz.example.gov. 60 SOA a. b. 1 2 3 4 5",
		"tiktok.com.rpz.example.gov. 60 CNAME .",
		"douyin.com.rpz.example.gov. 60 CNAME .",
		"24.0.2.0.192.rpz-ip.rpz.example.gov. 60 CNAME .",
		"24.0.100.51.198.rpz-ip.rpz.example.gov. 60 CNAME ."))
	updated, err := old.Update([32]byte{2}, 2, feed(nil),
		feed(rrs(t, "capcut.com.rpz.example.gov. 60 CNAME .", "lemon8.com.rpz.example.gov. 60 CNAME .")))
	require.NoError(t, err)

	for _, tc := range []struct {
		name    string
		all     func(yield func(Entry, Trigger) bool)
		breakAt string // the name whose entry the loop breaks at
		want    []string
	}{
		{"a plain list", plain.AllTriggers(), "tiktok.com", []string{"tiktok.com"}},
		{"an RPZ list", old.AllTriggers(), "douyin.com", []string{"tiktok.com", "douyin.com"}},
		{"an RPZ list's additions by an update", updated.AllTriggers(), "capcut.com",
			[]string{"tiktok.com", "douyin.com", "192.0.2.0/24", "198.51.100.0/24", "capcut.com"}},
		{"response-IP triggers", old.IPTriggers(), "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			assert.NotPanics(t, func() {
				for e := range tc.all {
					got = append(got, e.Name)
					if e.Name == tc.breakAt || tc.breakAt == "" {
						break
					}
				}
			})
			if tc.want == nil {
				assert.Len(t, got, 1)
				return
			}
			assert.Equal(t, tc.want, got)
		})
	}
}
