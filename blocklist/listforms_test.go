package blocklist

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestRPZWildcardAndPassthruReach: `*.x` covers names below x, not x; an
// exact passthru does not cover the names below it; the most specific
// trigger of a zone decides.
func TestRPZWildcardAndPassthruReach(t *testing.T) {
	zone := "$TTL 60\n@ SOA ns. h. 1 1 1 1 1\n@ NS ns.\n" +
		"*.tiktok.com CNAME .\n" +
		"ok.tiktok.com CNAME rpz-passthru.\n" +
		"TikTok.NET CNAME .\n"
	l, err := Parse("z.rpz", []byte(zone))
	if err != nil {
		t.Logf("warnings: %v", err)
	}
	blocked := func(n string) bool {
		_, tr, ok := l.MatchTrigger(n)
		return ok && tr.Action != ActionPassthru
	}
	assert.False(t, blocked("tiktok.com."), "*.x covers x")
	assert.True(t, blocked("www.tiktok.com."))
	assert.True(t, blocked("WWW.TIKTOK.COM"))
	assert.False(t, blocked("ok.tiktok.com."))
	assert.True(t, blocked("x.ok.tiktok.com."), "exact passthru covers names below it")
	assert.True(t, blocked("tiktok.net."))
	assert.False(t, blocked("www.tiktok.net."))
}

// TestListFormsNeverMatchAll: decorations that must not turn into a match-all or
// drop a name.
func TestListFormsNeverMatchAll(t *testing.T) {
	l, err := Parse("l.txt", []byte("\ufeff||tiktok.com^\r\n||^\r\n*.\r\n.\r\n||capcut.com^$important\r\n@@||ok.example^\r\n0.0.0.0 localhost a.example\tb.example#x\r\n"))
	assert.Error(t, err)
	_, ok := l.Match("tiktok.com")
	assert.True(t, ok, "BOM + adblock + CRLF")
	for _, n := range []string{"example.org", "com", "ok.example", "x"} {
		_, ok := l.Match(n)
		assert.False(t, ok, "%s matched", n)
	}
	_, ok = l.Match("a.example")
	assert.True(t, ok)
}
