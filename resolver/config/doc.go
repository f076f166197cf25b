// Package config reads dnsfence's YAML configuration (DESIGN.md §2) into a
// validated Config. Load is the seam: it reads a file, applies a default to
// every key left out, and checks every value, one section of the file at a
// time. Every problem is reported at once, in line order, as an *Error
// whose text is "file:line: key: what is wrong; an example of right".
//
// Relative paths in the file resolve against its folder (Config.Path). The
// package knows nothing of snapshots, policies as compiled, or sockets: it
// depends on blocklist only, for reading text files and parsing address
// ranges the way list and range files are read.
package config
