package blocklist

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestBracketedRangeIsNotRecursive: ParsePrefix now reads `[...]` itself
// (bracketed), and bracketed parses what is inside with ParsePrefix again:
// one level a `[`, each cutting and copying the rest of the line, so a
// line of n brackets (a corrupt range file, an inline range) takes O(n^2)
// time and n stack frames: 160,000 took 0.5 s, 1,000,000 about 20 s of a
// reload. A bracket inside brackets is no range, at once.
func TestBracketedRangeIsNotRecursive(t *testing.T) {
	line := strings.Repeat("[", 1<<20)
	start := time.Now()
	_, err := ParsePrefix(line)
	require.ErrorIs(t, err, ErrBadRange)
	_, err = ParseRanges("r.txt", []byte(line+"\n"))
	require.Error(t, err)
	require.Less(t, time.Since(start), time.Second)

	_, err = ParsePrefix("[[2001:db8::1]]")
	require.ErrorIs(t, err, ErrBadRange)
	_, err = ParsePrefix("[2001:db8::]/32")
	require.ErrorIs(t, err, ErrRangeBrackets)
}
