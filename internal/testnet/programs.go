package testnet

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// NeedProgram returns the path of the program name a test needs, from the
// Debian package pkg: found on PATH, or in /usr/sbin or /usr/local/sbin,
// where daemons live and which are not on every user's PATH (the program
// is not run to see: knotd -v starts the daemon). Without it the test is
// skipped on a developer's machine, and fails under CI=true, where .ci/run
// installs it.
func NeedProgram(t testing.TB, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin"} {
		if p := filepath.Join(dir, name); executable(p) {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required under CI=true: apt-get install %s (%v)", name, pkg, err)
	}
	t.Skipf("%s not installed (apt-get install %s): %v", name, pkg, err)
	return ""
}

// executable reports whether path is a regular file someone may run.
func executable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}
