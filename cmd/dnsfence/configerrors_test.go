package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestCheckConfigErrorsGolden runs check on configurations with the
// mistakes of issue 17: each error says file:line, the key, what is wrong
// and how to write it right, all of a file at once, in line order.
func TestCheckConfigErrorsGolden(t *testing.T) {
	for _, tc := range []struct {
		name, config string
		strict       bool // bad list and range lines are skipped, as serve skips them: warnings that -strict fails on
	}{
		{name: "check-config-tab", config: "testdata/configerrors/tab.yaml"},
		{name: "check-config-values", config: "testdata/configerrors/values.yaml"},
		{name: "check-config-list-urls", config: "testdata/configerrors/lists.yaml", strict: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"check", "-config", tc.config}
			if tc.strict {
				args = append(args, "-strict")
			}
			code, out := runCmd(args...)
			assert.Equal(t, 1, code, out)
			golden(t, tc.name+".txt", out)
		})
	}
}
