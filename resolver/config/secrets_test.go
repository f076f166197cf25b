package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestConfigErrorsShowNoSecret: a configuration error never shows a TSIG
// secret or the user information of a URL (scheme://USER:PASSWORD@HOST),
// whatever mistake surrounds it: a value in typographic quotes, a single
// value where a list belongs, a URL where a number, a duration, a path, an
// address or a word belongs, a value long enough to be cut; nor does the
// line of a second YAML document. The errors go to stderr, the journal and,
// at a reload, the log; a secret copied from a wiki page comes in
// typographic quotes. Each still names its line and key, and a URL is
// shown with its user information as xxxxx, as blocklist.RedactURL shows it.
func TestConfigErrorsShowNoSecret(t *testing.T) {
	const (
		secret   = "dG9wLXNlY3JldC10c2lnLWtleQ=="
		password = "s3cretPassw0rd"
		quoted   = "s3cret'Passw0rd" // a ' is allowed in a password (RFC 3986's sub-delims)
	)
	long := strings.Repeat("Zm9vYmFy", 12) // a 96-character secret, cut where values are cut
	dir := testnet.WriteTree(t, map[string]string{"lists/tiktok.txt": "tiktok.com\n"})
	up := "upstreams: [\"192.0.2.53:53\"]\n"
	policy := "policies:\n  - name: gov\n    clients: [\"10.0.0.0/8\"]\n    block: [lists/tiktok.txt]\n"
	for _, tc := range []struct {
		name   string
		yaml   string
		key    string // the key the error names
		hidden string // what it must not show
	}{
		{"tsig secret in typographic quotes", up + policy + "sources: {tsig: {name: k., secret: “" + secret + "”}}\n", "sources.tsig.secret", secret},
		{"long tsig secret in typographic quotes", up + policy + "sources: {tsig: {name: k., secret: “" + long + "”}}\n", "sources.tsig.secret", long[:40]},
		{"upstream with credentials, a single value", policy + "upstreams: https://user:" + password + "@dns.example/dns-query\n", "upstreams", password},
		{"upstream with credentials, in typographic quotes", policy + "upstreams: [“https://user:" + password + "@dns.example/dns-query”]\n", "upstreams[0]", password},
		{"long upstream with credentials, a single value", policy + "upstreams: https://user:" + long + "@dns.example/dns-query\n", "upstreams", long[:40]},
		{"block list with credentials, a single value", up + "sources: {cache_dir: cache}\npolicies:\n  - name: gov\n    clients: [\"10.0.0.0/8\"]\n    block: https://user:" + password + "@lists.example.gov/tiktok.txt\n", "policies[0].block", password},
		{"allow list with credentials, in typographic quotes", up + "sources: {cache_dir: cache}\npolicies:\n  - name: gov\n    clients: [\"10.0.0.0/8\"]\n    block: [lists/tiktok.txt]\n    allow:\n      - “https://user:" + password + "@lists.example.gov/allow.txt”\n", "policies[0].allow[0]", password},
		{"a URL where a number belongs", up + policy + "blocked_ttl: https://user:" + password + "@lists.example.gov/\n", "blocked_ttl", password},
		{"a URL where a duration belongs", up + policy + "upstream_timeout: https://user:" + password + "@lists.example.gov/\n", "upstream_timeout", password},
		{"upstream_ca a URL", up + policy + "upstream_ca: https://user:" + password + "@pki.example.gov/ca.pem\n", "upstream_ca", password},
		{"http a URL", up + policy + "http: http://user:" + password + "@127.0.0.1:9153\n", "http", password},
		{"listen_https with credentials", up + policy + "listen_https: [\"https://user:" + password + "@127.0.0.1:8443\"]\n", "listen_https[0]", password},
		{"upstream_ca a URL, a ' in the password", up + policy + "upstream_ca: \"https://user:" + quoted + "@pki.example.gov/ca.pem\"\n", "upstream_ca", quoted},
		{"http a URL, a ' in the password", up + policy + "http: \"http://user:" + quoted + "@127.0.0.1:9153\"\n", "http", quoted},
		{"log.level a URL", up + policy + "log: {level: \"https://user:" + password + "@x.example/\"}\n", "log.level", password},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(filepath.Join(dir, "c.yaml"), []byte(tc.yaml), os.ReadFile)
			require.Error(t, err)
			checkConfigErrors(t, err)
			assert.NotContains(t, err.Error(), tc.hidden, "the secret shown")
			assert.Contains(t, err.Error(), "c.yaml:", "the file and line")
			assert.Contains(t, err.Error(), " "+tc.key+": ", "the key")
			if strings.Contains(tc.yaml, "://user:") {
				assert.Contains(t, err.Error(), "://xxxxx@", "the URL, its user information hidden")
			}
		})
	}

	t.Run("second document", func(t *testing.T) {
		_, err := Parse(filepath.Join(dir, "c.yaml"), []byte(up+policy+"---\nupstreams: [\"https://user:"+password+"@dns.example/dns-query\"]\n"), os.ReadFile)
		require.Error(t, err)
		assert.NotContains(t, err.Error(), password, "the secret shown")
		assert.Contains(t, err.Error(), "c.yaml:7: a second YAML document")
		assert.Contains(t, err.Error(), "://xxxxx@", "the URL, its user information hidden")
	})
}
