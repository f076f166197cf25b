package config

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// seed adds every file matching the patterns to the fuzz corpus.
func seed(f *testing.F, patterns ...string) {
	for _, pattern := range patterns {
		paths, err := filepath.Glob(pattern)
		if err != nil || len(paths) == 0 {
			f.Fatalf("no seeds match %s (%v)", pattern, err)
		}
		for _, p := range paths {
			data, err := os.ReadFile(p)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
}

// FuzzConfig feeds arbitrary bytes to the config parser: it must never
// panic, never accept a config without upstreams, report what it rejects as
// *Error lines in line order, each with a message and none with the
// decoder's or Go's words, and give the same result when a byte-order mark
// stands before the text.
func FuzzConfig(f *testing.F) {
	seed(f, "testdata/config/*.yaml", "../../configs/dnsfence.yaml", "../../configs/default.yaml")
	f.Add([]byte("\ufeffupstreams: [\"127.0.0.1:53\"]\r\npolicies: []\r\n"))
	f.Add([]byte("\ufeff\ufeffupstreams: [\"127.0.0.1:53\"]\r\n"))
	f.Add([]byte("\ufeff"))
	tables, _ := filepath.Glob("testdata/config/messages/*.txt")
	for _, table := range tables {
		data, err := os.ReadFile(table)
		if err != nil {
			f.Fatal(err)
		}
		for _, sn := range strings.Split("\n"+string(data), "\n## ")[1:] {
			_, body, _ := strings.Cut(sn, "\n")
			f.Add([]byte(body))
		}
	}
	noFiles := func(string) ([]byte, error) { return nil, os.ErrNotExist }
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.yaml", data, noFiles)
		if err == nil && len(cfg.Upstreams) == 0 {
			t.Fatal("a config without upstreams was accepted")
		}
		if err != nil {
			checkConfigErrors(t, err)
		}
		if bytes.HasPrefix(data, []byte("\ufeff")) {
			return
		}
		marked, merr := Parse("fuzz.yaml", append([]byte("\ufeff"), data...), noFiles)
		if fmt.Sprint(err) != fmt.Sprint(merr) {
			t.Fatalf("with a byte-order mark: %v, without: %v", merr, err)
		}
		if err == nil && !slices.Equal(cfg.Upstreams, marked.Upstreams) {
			t.Fatalf("with a byte-order mark: upstreams %v, without: %v", marked.Upstreams, cfg.Upstreams)
		}
	})
}
