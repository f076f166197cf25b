package testnet

import (
	"fmt"
	"path/filepath"
)

// NSDConf is the start of an nsd.conf for a test's NSD, to which the
// caller adds its key: and zone: clauses: NSD listens on ip@port only
// (IPv4), keeps its files in dir, runs one server process as the test's
// user without chroot, and logs to stderr at verbosity. extra, tab-indented
// server options, ends the server: clause. Remote control is off: Debian's
// NSD turns it on by default, on 127.0.0.1:8952, where two NSDs at once
// (go test runs packages side by side) clash and one exits.
func NSDConf(ip string, port int, dir string, verbosity int, extra string) string {
	return fmt.Sprintf(`server:
	ip-address: %s@%d
	do-ip6: no
	zonesdir: %q
	pidfile: %q
	database: ""
	xfrdfile: %q
	zonelistfile: %q
	username: ""
	chroot: ""
	server-count: 1
	verbosity: %d
	logfile: ""
%sremote-control:
	control-enable: no
`, ip, port, dir, filepath.Join(dir, "nsd.pid"), filepath.Join(dir, "xfrd.state"), filepath.Join(dir, "zone.list"), verbosity, extra)
}
