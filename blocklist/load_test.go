package blocklist

import (
	"fmt"
	"os"
)

// LoadFile reads and parses a list file (tests; serve reads files through
// the configuration's ReadFile).
func LoadFile(path, name string) (*List, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading list: %w", err)
	}
	return Parse(name, data)
}

// LoadRanges reads and parses a client range file (tests).
func LoadRanges(path, name string) (*RangeFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading client ranges: %w", err)
	}
	return ParseRanges(name, data)
}
