package presname

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestBadEscape: the first escape RFC 1035 §5.1 does not allow, as
// written, wherever it is (the name's first octet too), its digits and no
// more: a backslash before a digit begins \DDD, three decimal digits of
// value 0 to 255, each of the three weighed as it stands (`\265` is over
// 255, though its digits read in another order are not); a backslash
// before any other byte quotes it.
func TestBadEscape(t *testing.T) {
	for _, c := range []struct{ name, bad string }{
		{`\2.example`, `\2`},
		{`\25`, `\25`},
		{`a\12x.example`, `\12`}, // two digits, then a letter whose code is no digit's
		{`a\12`, `\12`},          // two digits that end the name
		{`a\265.example`, `\265`},
		{`a\2561.example`, `\256`}, // a fourth digit is the octet after the escape
		{`a\065\300`, `\300`},
	} {
		bad, ok := BadEscape(c.name)
		assert.True(t, ok, "%s", c.name)
		assert.Equal(t, c.bad, bad, "%s", c.name)
		assert.False(t, IsDomainName(c.name), "%s", c.name)
	}
	for _, name := range []string{`\065.example`, `a\2551.example`, `a\\2`, `\.a`, `a\`} {
		bad, ok := BadEscape(name)
		assert.False(t, ok, "%s: %s", name, bad)
	}
}

// TestEscaped: a byte is escaped when an odd number of backslashes
// precede it, the name's first octet among them.
func TestEscaped(t *testing.T) {
	for _, c := range []struct {
		name string
		i    int
		want bool
	}{
		{`\.a`, 1, true},
		{`\\.a`, 2, false},
		{`\\\.a`, 3, true},
		{`a\.b`, 2, true},
		{`a.b`, 1, false},
		{`.a`, 0, false},
	} {
		assert.Equal(t, c.want, Escaped(c.name, c.i), "%s at %d", c.name, c.i)
	}
}

// TestLabelStart: the label that ends at end starts after the last
// unescaped dot before it, one at the name's first octet too, or at 0.
func TestLabelStart(t *testing.T) {
	for _, c := range []struct {
		name     string
		end, got int
	}{
		{"a.b.c", 5, 4},
		{"a.b.c", 3, 2},
		{"a.b.c", 1, 0},
		{".b", 2, 1}, // after a dot that starts the name
		{".", 1, 1},
		{`\.b`, 3, 0}, // an escaped dot separates nothing
		{`a\.b.c`, 4, 0},
		{`a\\.b`, 5, 4},
	} {
		assert.Equal(t, c.got, LabelStart(c.name, c.end), "%q to %d", c.name, c.end)
	}
}

// TestOctet: `\DDD` is three digits, each of them a digit; `\X` is X,
// whatever follows it; a backslash that ends the text is itself.
func TestOctet(t *testing.T) {
	for _, c := range []struct {
		s    string
		c    byte
		size int
	}{
		{`\065x`, 'A', 4},
		{`\065`, 'A', 4},
		{`\a12x`, 'a', 2},
		{`\1a2x`, '1', 2},
		{`\12ax`, '1', 2},
		{`\12`, '1', 2},
		{`\.`, '.', 2},
		{`\`, '\\', 1},
		{`a`, 'a', 1},
	} {
		got, size := Octet(c.s, 0)
		assert.Equal(t, c.c, got, "%q", c.s)
		assert.Equal(t, c.size, size, "%q", c.s)
	}
}
