package resolver

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// TestRestartWarningsNameTheRunningSettings: the settings only a restart
// applies (listen, http, ...) are compared with those dnsfence started
// with, not with the last reload's configuration. Before the fix, a second
// reload after `http` changed said nothing although the old address was
// still served, and changing it back to the address served warned
// "http changed: restart to apply, still serving the old address" with
// running naming an address that was never served.
func TestRestartWarningsNameTheRunningSettings(t *testing.T) {
	up := startUpstream(t, nil)
	base := strings.Replace(testConfig, "log: {queries: all}", "log: {queries: none}", 1)
	f := startFence(t, base+"http: \"127.0.0.1:25401\"\n", testFiles, up.addr)
	path := f.handler.Snapshot().Config.File
	core, logs := observer.New(zap.InfoLevel)
	r := NewReloader(zap.New(core), f.handler, func() (*config.Config, error) { return config.Load(path) })
	original, err := os.ReadFile(path)
	require.NoError(t, err)

	reload := func(edit func(string) string) []observer.LoggedEntry {
		t.Helper()
		require.NoError(t, os.WriteFile(path, []byte(edit(string(original))), 0o644))
		logs.TakeAll()
		require.NoError(t, r.Reload(false))
		return logs.FilterMessageSnippet("restart to apply").AllUntimed()
	}
	moved := func(s string) string {
		s = strings.Replace(s, "127.0.0.1:25401", "127.0.0.1:25402", 1)
		return strings.Replace(s, `listen: ["127.0.0.1:0"]`, `listen: ["127.0.0.1:5399"]`, 1)
	}

	warned := reload(moved)
	require.Len(t, warned, 2, "http and listen changed")
	for _, w := range warned {
		fields := w.ContextMap()
		switch {
		case strings.HasPrefix(w.Message, "http changed"):
			assert.Equal(t, "127.0.0.1:25401", fields["running"])
			assert.Equal(t, "127.0.0.1:25402", fields["configured"])
		case strings.HasPrefix(w.Message, "listen changed"):
			assert.Equal(t, []any{"127.0.0.1:0"}, fields["running"])
		default:
			t.Errorf("unexpected warning %q", w.Message)
		}
	}

	// Another change: the old sockets are still the ones served.
	warned = reload(func(s string) string { return strings.Replace(moved(s), "blocked_ttl: 60", "blocked_ttl: 30", 1) })
	require.Len(t, warned, 2, "a later reload still says the configured addresses are not served")
	for _, w := range warned {
		if strings.HasPrefix(w.Message, "http changed") {
			assert.Equal(t, "127.0.0.1:25401", w.ContextMap()["running"])
		}
	}

	// Back to what is served: nothing needs a restart.
	warned = reload(func(s string) string { return s })
	assert.Empty(t, warned, "the configuration names the sockets served")

	// TLS where there was none: no certificate is loaded until a restart,
	// and no file "named at start" (the configuration's folder, before).
	p := newTestPKI(t)
	warned = reload(func(s string) string {
		return s + fmt.Sprintf("listen_tls: [\"127.0.0.1:0\"]\ntls: {cert: %q, key: %q}\n", p.certFile, p.keyFile)
	})
	require.Len(t, warned, 2, "listen_tls and tls")
	for _, w := range warned {
		switch {
		case strings.HasPrefix(w.Message, "listen_tls changed"):
		case strings.HasPrefix(w.Message, "tls set: restart to apply"):
			assert.Equal(t, p.certFile, w.ContextMap()["configured_cert"])
			assert.Equal(t, p.keyFile, w.ContextMap()["configured_key"])
		default:
			t.Errorf("unexpected warning %q %v", w.Message, w.ContextMap())
		}
	}
}

// TestRestartWarningForLogFormatAndOutput: log.format and log.output take
// a new logger, which only a restart builds (log.level and log.queries
// apply at a reload). Before the fix a reload that changed them named them
// in config_changed and said nothing else, while dnsfence went on logging
// as it started.
func TestRestartWarningForLogFormatAndOutput(t *testing.T) {
	up := startUpstream(t, nil)
	base := strings.Replace(testConfig, "log: {queries: all}", "log: {queries: none}", 1)
	f := startFence(t, base, testFiles, up.addr)
	path := f.handler.Snapshot().Config.File
	core, logs := observer.New(zap.InfoLevel)
	r := NewReloader(zap.New(core), f.handler, func() (*config.Config, error) { return config.Load(path) })
	original, err := os.ReadFile(path)
	require.NoError(t, err)
	reload := func(log string) []observer.LoggedEntry {
		t.Helper()
		edited := strings.Replace(string(original), "log: {queries: none}", log, 1)
		require.NotEqual(t, string(original), edited)
		require.NoError(t, os.WriteFile(path, []byte(edited), 0o644))
		logs.TakeAll()
		require.NoError(t, r.Reload(false))
		return logs.FilterMessageSnippet("restart to apply").AllUntimed()
	}

	for _, tc := range []struct {
		name, log string
		warned    bool
	}{
		{name: "format", log: "log: {queries: none, format: console}", warned: true},
		{name: "output", log: "log: {queries: none, output: stdout}", warned: true},
		{name: "level and queries apply", log: "log: {queries: all, level: debug}", warned: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			warned := reload(tc.log)
			if !tc.warned {
				assert.Empty(t, warned)
				return
			}
			require.Len(t, warned, 1)
			assert.Equal(t, "log.format or log.output changed: restart to apply, still logging as before", warned[0].Message)
			assert.Equal(t, "json", warned[0].ContextMap()["running_format"])
			assert.Equal(t, "stderr", warned[0].ContextMap()["running_output"])
		})
	}
}

// TestRestartWarningForEncryptedListenerLimits: DNS over HTTPS and QUIC
// listeners take limits.tcp_pipeline, tcp_read_timeout and
// tcp_idle_timeout when they start (TCP and DoT read them for each
// connection). Before the fix a reload that changed them with such a
// listener running named them in config_changed and said nothing, while
// DoH and DoQ kept the old values.
func TestRestartWarningForEncryptedListenerLimits(t *testing.T) {
	up := startUpstream(t, nil)
	base := strings.Replace(testConfig, "log: {queries: all}", "log: {queries: none}", 1)
	for _, tc := range []struct {
		name, listeners string
		warned          bool
	}{
		{name: "DoH", listeners: "listen_https: [\"http://127.0.0.1:0\"]\n", warned: true},
		{name: "plain and TCP only", listeners: "", warned: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFence(t, base+tc.listeners+"limits: {tcp_idle_timeout: 10s}\n", testFiles, up.addr)
			path := f.handler.Snapshot().Config.File
			core, logs := observer.New(zap.InfoLevel)
			r := NewReloader(zap.New(core), f.handler, func() (*config.Config, error) { return config.Load(path) })
			original, err := os.ReadFile(path)
			require.NoError(t, err)
			edited := strings.Replace(string(original), "tcp_idle_timeout: 10s", "tcp_idle_timeout: 30s", 1)
			require.NotEqual(t, string(original), edited)
			require.NoError(t, os.WriteFile(path, []byte(edited), 0o644))
			require.NoError(t, r.Reload(false))
			warned := logs.FilterMessageSnippet("restart to apply").AllUntimed()
			if !tc.warned {
				assert.Empty(t, warned)
				return
			}
			require.Len(t, warned, 1)
			assert.Equal(t, "limits.tcp_pipeline, tcp_read_timeout or tcp_idle_timeout changed: restart to apply to the DNS over HTTPS and QUIC listeners (TCP and DoT apply it at once)", warned[0].Message)
		})
	}
}

// TestRestartWarningsForLimitsAndCertificateFiles: limits.tcp_connections
// and the UDP socket buffers are set when the listeners start, and the
// certificate files named at start are the ones watched and served: a
// reload that changes them says each needs a restart, naming what still
// runs.
func TestRestartWarningsForLimitsAndCertificateFiles(t *testing.T) {
	up := startUpstream(t, nil)
	started, other := newTestPKI(t), newTestPKI(t)
	base := strings.Replace(testConfig, "log: {queries: all}", "log: {queries: none}", 1) +
		"limits: {tcp_connections: 100, udp_receive_buffer: 1048576, udp_send_buffer: 1048576}\n" +
		fmt.Sprintf("listen_tls: [\"127.0.0.1:0\"]\ntls: {cert: %q, key: %q}\n", started.certFile, started.keyFile)
	f := startFence(t, base, testFiles, up.addr)
	path := f.handler.Snapshot().Config.File
	original, err := os.ReadFile(path)
	require.NoError(t, err)

	for _, tc := range []struct {
		name, from, to, warning string
		fields                  map[string]any
	}{
		{
			name: "tcp_connections", from: "tcp_connections: 100", to: "tcp_connections: 200",
			warning: "limits.tcp_connections changed: restart to apply",
			fields:  map[string]any{"tcp_connections": int64(100)},
		},
		{
			name: "udp_receive_buffer", from: "udp_receive_buffer: 1048576", to: "udp_receive_buffer: 4194304",
			warning: "limits.udp_receive_buffer or udp_send_buffer changed: restart to apply",
			fields:  map[string]any{"udp_receive_buffer": int64(1048576), "udp_send_buffer": int64(1048576)},
		},
		{
			name: "udp_send_buffer", from: "udp_send_buffer: 1048576", to: "udp_send_buffer: 4194304",
			warning: "limits.udp_receive_buffer or udp_send_buffer changed: restart to apply",
			fields:  map[string]any{"udp_receive_buffer": int64(1048576), "udp_send_buffer": int64(1048576)},
		},
		{
			name: "tls files", from: fmt.Sprintf("cert: %q, key: %q", started.certFile, started.keyFile),
			to:      fmt.Sprintf("cert: %q, key: %q", other.certFile, other.keyFile),
			warning: "tls.cert or tls.key names other files: restart to apply; the files named at start are still watched and served",
			fields:  map[string]any{"cert": started.certFile, "key": started.keyFile},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core, logs := observer.New(zap.InfoLevel)
			r := NewReloader(zap.New(core), f.handler, func() (*config.Config, error) { return config.Load(path) })
			edited := strings.Replace(string(original), tc.from, tc.to, 1)
			require.NotEqual(t, string(original), edited)
			require.NoError(t, os.WriteFile(path, []byte(edited), 0o644))
			require.NoError(t, r.Reload(false))
			warned := logs.FilterMessageSnippet("restart to apply").AllUntimed()
			require.Len(t, warned, 1)
			assert.Equal(t, tc.warning, warned[0].Message)
			assert.Equal(t, zap.WarnLevel, warned[0].Level)
			fields := warned[0].ContextMap()
			for k, v := range tc.fields {
				assert.Equal(t, v, fields[k], k)
			}
			// Back to the settings started with, for the next case.
			require.NoError(t, os.WriteFile(path, original, 0o644))
			require.NoError(t, r.Reload(false))
		})
	}
}
