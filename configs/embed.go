// Package configs holds the shipped configuration and lists; the embedded
// default configuration and its lists are compiled into the binary.
//
// rpz/tiktok.rpz is the default block lists (and the allow list) as a
// Response Policy Zone, for a DNS primary to serve to many dnsfence
// instances; bytedance-cloud.txt (opt-in) and doh-bypass.txt are not in
// it. TestShippedRPZIsCurrent fails when it is out of date with the lists.
//
//go:generate go run ../cmd/rpzgen -o rpz/tiktok.rpz -allow lists/allow.txt lists/tiktok.txt lists/bytedance.txt
package configs

import "embed"

// DefaultName is the name of the embedded default configuration in FS.
const DefaultName = "default.yaml"

// FS holds the embedded default configuration and the files it names.
//
//go:embed default.yaml lists/*.txt
var FS embed.FS
