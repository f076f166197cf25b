// Package configs holds the shipped configuration and lists; the embedded
// default configuration and its lists are compiled into the binary.
package configs

import "embed"

// DefaultName is the name of the embedded default configuration in FS.
const DefaultName = "default.yaml"

// FS holds the embedded default configuration and the files it names.
//
//go:embed default.yaml lists/*.txt
var FS embed.FS
