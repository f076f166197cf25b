package configs

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/resolver"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// manifest is the part of a Kubernetes object the deployment tests read.
// Spec holds the fields of every kind used (Deployment, Service, ...); the
// ones a kind lacks stay zero.
type manifest struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec struct {
		Template struct {
			Spec podSpec `yaml:"spec"`
		} `yaml:"template"`
		Type                  string        `yaml:"type"`
		ExternalTrafficPolicy string        `yaml:"externalTrafficPolicy"`
		Ports                 []servicePort `yaml:"ports"`
	} `yaml:"spec"`

	file string // base name of the file it came from
}

type podSpec struct {
	TerminationGracePeriodSeconds int    `yaml:"terminationGracePeriodSeconds"`
	DNSPolicy                     string `yaml:"dnsPolicy"`
	DNSConfig                     struct {
		Nameservers []string `yaml:"nameservers"`
	} `yaml:"dnsConfig"`
	SecurityContext struct {
		RunAsNonRoot *bool `yaml:"runAsNonRoot"`
		Sysctls      []struct {
			Name  string `yaml:"name"`
			Value string `yaml:"value"`
		} `yaml:"sysctls"`
	} `yaml:"securityContext"`
	InitContainers []container `yaml:"initContainers"`
	Containers     []container `yaml:"containers"`
	Volumes        []struct {
		Name      string `yaml:"name"`
		ConfigMap *struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
		Secret *struct {
			SecretName string `yaml:"secretName"`
		} `yaml:"secret"`
		EmptyDir *struct{} `yaml:"emptyDir"`
	} `yaml:"volumes"`
}

type container struct {
	Name  string `yaml:"name"`
	Image string `yaml:"image"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
		Protocol      string `yaml:"protocol"`
	} `yaml:"ports"`
	LivenessProbe   *probe `yaml:"livenessProbe"`
	ReadinessProbe  *probe `yaml:"readinessProbe"`
	StartupProbe    *probe `yaml:"startupProbe"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		SubPath   string `yaml:"subPath"`
		SubPathEx string `yaml:"subPathExpr"`
	} `yaml:"volumeMounts"`
}

type probe struct {
	HTTPGet *struct {
		Path string    `yaml:"path"`
		Port yaml.Node `yaml:"port"` // a number or a port name
	} `yaml:"httpGet"`
	PeriodSeconds    int `yaml:"periodSeconds"`    // Kubernetes' default: 10
	FailureThreshold int `yaml:"failureThreshold"` // Kubernetes' default: 3
}

// gives is how long p is failed for before the kubelet acts on it (for a
// startup probe: kills the container and starts it again).
func (p *probe) gives() time.Duration {
	period, failures := p.PeriodSeconds, p.FailureThreshold
	if period == 0 {
		period = 10
	}
	if failures == 0 {
		failures = 3
	}
	return time.Duration(period*failures) * time.Second
}

type servicePort struct {
	Name       string    `yaml:"name"`
	Port       int       `yaml:"port"`
	TargetPort yaml.Node `yaml:"targetPort"`
	Protocol   string    `yaml:"protocol"`
}

// dnsfenceConfig is the part of a dnsfence configuration the deployment
// tests read; whether it is a valid configuration is for `dnsfence check`.
type dnsfenceConfig struct {
	Listen          []string `yaml:"listen"`
	Upstreams       []string `yaml:"upstreams"`
	UpstreamTimeout string   `yaml:"upstream_timeout"`
	ShutdownDelay   string   `yaml:"shutdown_delay"`
	HTTP            *string  `yaml:"http"`
	Policies        []struct {
		Name        string   `yaml:"name"`
		Clients     []string `yaml:"clients"`
		ClientFiles []string `yaml:"client_files"`
		Block       []string `yaml:"block"`
		Allow       []string `yaml:"allow"`
	} `yaml:"policies"`
}

const kubernetesDir = "deploy/kubernetes"

// loadManifests decodes every document of every YAML file under
// deploy/kubernetes, also checking each parses as generic YAML.
func loadManifests(t *testing.T) []manifest {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(kubernetesDir, "*.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	var all []manifest
	for _, file := range files {
		data, err := os.ReadFile(file)
		require.NoError(t, err)
		dec := yaml.NewDecoder(bytes.NewReader(data))
		n := 0
		for {
			var node yaml.Node
			err := dec.Decode(&node)
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err, "%s: document %d", file, n+1)
			n++
			if len(node.Content) == 0 || node.Content[0].Kind == 0 {
				continue // a document of comments only
			}
			var m manifest
			require.NoError(t, node.Decode(&m), "%s: document %d", file, n)
			m.file = filepath.Base(file)
			assert.NotEmpty(t, m.APIVersion, "%s: document %d has no apiVersion", file, n)
			assert.NotEmpty(t, m.Kind, "%s: document %d has no kind", file, n)
			assert.NotEmpty(t, m.Metadata.Name, "%s: document %d has no metadata.name", file, n)
			all = append(all, m)
		}
		assert.Positive(t, n, "%s has no documents", file)
	}
	return all
}

func find(t *testing.T, all []manifest, file, kind, name string) manifest {
	t.Helper()
	for _, m := range all {
		if m.file == file && m.Kind == kind && m.Metadata.Name == name {
			return m
		}
	}
	require.Failf(t, "manifest missing", "%s: no %s %q", file, kind, name)
	return manifest{}
}

// dnsfenceContainer is the container named dnsfence, a regular container or
// a native sidecar (an init container).
func dnsfenceContainer(t *testing.T, m manifest) container {
	t.Helper()
	spec := m.Spec.Template.Spec
	for _, c := range append(spec.InitContainers, spec.Containers...) {
		if c.Name == "dnsfence" {
			return c
		}
	}
	require.Failf(t, "no dnsfence container", "%s: %s %s", m.file, m.Kind, m.Metadata.Name)
	return container{}
}

// containerPort resolves a probe's or a Service's port, a number or the name
// of a container port.
func containerPort(t *testing.T, c container, port yaml.Node) int {
	t.Helper()
	if n, err := strconv.Atoi(port.Value); err == nil {
		return n
	}
	for _, p := range c.Ports {
		if p.Name == port.Value {
			return p.ContainerPort
		}
	}
	require.Failf(t, "unknown port", "container %s has no port %q", c.Name, port.Value)
	return 0
}

func assertProbe(t *testing.T, c container, p *probe, what, wantPath string) {
	t.Helper()
	if !assert.NotNil(t, p, "%s probe missing", what) || !assert.NotNil(t, p.HTTPGet, "%s probe is not httpGet", what) {
		return
	}
	assert.Equal(t, wantPath, p.HTTPGet.Path, "%s probe path", what)
	assert.Equal(t, 9153, containerPort(t, c, p.HTTPGet.Port), "%s probe port", what)
}

// assertNoSubPath checks every ConfigMap of the pod is mounted as a
// directory: subPath mounts never receive ConfigMap updates.
func assertNoSubPath(t *testing.T, m manifest) map[string]string {
	t.Helper()
	spec := m.Spec.Template.Spec
	configMaps := map[string]string{} // volume name -> ConfigMap name
	for _, v := range spec.Volumes {
		if v.ConfigMap != nil {
			configMaps[v.Name] = v.ConfigMap.Name
		}
	}
	mounts := map[string]string{} // mount path -> ConfigMap name
	for _, c := range append(spec.InitContainers, spec.Containers...) {
		for _, vm := range c.VolumeMounts {
			cm, ok := configMaps[vm.Name]
			if !ok {
				continue
			}
			assert.Empty(t, vm.SubPath, "%s: %s mounts ConfigMap %s with subPath; it would never be updated", m.file, c.Name, cm)
			assert.Empty(t, vm.SubPathEx, "%s: %s mounts ConfigMap %s with subPathExpr; it would never be updated", m.file, c.Name, cm)
			mounts[vm.MountPath] = cm
		}
	}
	return mounts
}

func assertHardened(t *testing.T, m manifest, c container) {
	t.Helper()
	sc := m.Spec.Template.Spec.SecurityContext
	require.NotNil(t, sc.RunAsNonRoot, "%s: runAsNonRoot", m.file)
	assert.True(t, *sc.RunAsNonRoot, "%s: runAsNonRoot", m.file)
	require.NotNil(t, c.SecurityContext.AllowPrivilegeEscalation, "%s: allowPrivilegeEscalation", m.file)
	assert.False(t, *c.SecurityContext.AllowPrivilegeEscalation, "%s: allowPrivilegeEscalation", m.file)
	require.NotNil(t, c.SecurityContext.ReadOnlyRootFilesystem, "%s: readOnlyRootFilesystem", m.file)
	assert.True(t, *c.SecurityContext.ReadOnlyRootFilesystem, "%s: readOnlyRootFilesystem", m.file)
	assert.Equal(t, []string{"ALL"}, c.SecurityContext.Capabilities.Drop, "%s: capabilities.drop", m.file)
}

// parseConfig decodes a dnsfence configuration and checks the keys every
// deployment sets.
func parseConfig(t *testing.T, where string, data []byte) dnsfenceConfig {
	t.Helper()
	var keys map[string]any
	require.NoError(t, yaml.Unmarshal(data, &keys), where)
	for _, k := range []string{"listen", "upstreams", "policies", "http"} {
		assert.Contains(t, keys, k, "%s: key %s", where, k)
	}
	var cfg dnsfenceConfig
	require.NoError(t, yaml.Unmarshal(data, &cfg), where)
	require.NotEmpty(t, cfg.Listen, where)
	require.NotEmpty(t, cfg.Upstreams, where)
	require.NotEmpty(t, cfg.Policies, where)
	require.NotNil(t, cfg.HTTP, where)
	for _, u := range cfg.Upstreams {
		// In a pod, resolv.conf names the cluster DNS or dnsfence itself.
		assert.NotContains(t, u, "resolv.conf", "%s: upstreams must be real resolvers in a container", where)
	}
	blocking := false
	for _, p := range cfg.Policies {
		assert.NotEmpty(t, p.Name, where)
		assert.True(t, len(p.Clients) > 0 || len(p.ClientFiles) > 0, "%s: policy %s has no clients", where, p.Name)
		blocking = blocking || len(p.Block) > 0
	}
	assert.True(t, blocking, "%s: no policy blocks anything", where)
	return cfg
}

// files is every file a configuration names, relative to its folder.
func (c dnsfenceConfig) files() []string {
	var all []string
	for _, p := range c.Policies {
		all = append(all, p.ClientFiles...)
		all = append(all, p.Block...)
		all = append(all, p.Allow...)
	}
	return all
}

func listenPort(t *testing.T, where, addr string) int {
	t.Helper()
	i := strings.LastIndex(addr, ":")
	require.Positive(t, i, "%s: listen %q has no port", where, addr)
	port, err := strconv.Atoi(addr[i+1:])
	require.NoError(t, err, "%s: listen %q", where, addr)
	return port
}

// assertDrains checks that the pod of m, behind a Service, is taken out
// of it before it stops taking queries: its configuration's
// shutdown_delay keeps it answering, /readyz 503, while its endpoint is
// removed and kube-proxy on every node catches up (seconds; CoreDNS's
// health lameduck of 5 s for the same, coredns/deployment#199), where
// without it the queries still sent to it at each rollout got no answer
// and their clients waited out a timeout; and terminationGracePeriodSeconds
// holds that delay and the drain of the queries in flight, (upstreams + 1)
// × upstream_timeout, before the kubelet's SIGKILL.
func assertDrains(t *testing.T, m manifest, cfg dnsfenceConfig, where string) {
	t.Helper()
	if !assert.NotEmpty(t, cfg.ShutdownDelay, "%s: shutdown_delay, so that the Service takes the pod out before it stops answering", where) {
		return
	}
	delay, err := time.ParseDuration(cfg.ShutdownDelay)
	require.NoError(t, err, "%s: shutdown_delay", where)
	assert.GreaterOrEqual(t, delay, 5*time.Second, "%s: shutdown_delay", where)
	timeout := config.DefaultUpstreamTimeout
	if cfg.UpstreamTimeout != "" {
		timeout, err = time.ParseDuration(cfg.UpstreamTimeout)
		require.NoError(t, err, "%s: upstream_timeout", where)
	}
	drain := time.Duration(len(cfg.Upstreams)+1) * timeout
	grace := time.Duration(m.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
	assert.Greater(t, grace, delay+drain, "%s: terminationGracePeriodSeconds must hold shutdown_delay %v and the drain %v", m.file, delay, drain)
}

func TestKubernetesDeployment(t *testing.T) {
	all := loadManifests(t)
	dep := find(t, all, "deployment.yaml", "Deployment", "dnsfence")
	c := dnsfenceContainer(t, dep)
	assertProbe(t, c, c.LivenessProbe, "liveness", "/healthz")
	assertProbe(t, c, c.ReadinessProbe, "readiness", "/readyz")
	assertHardened(t, dep, c)

	mounts := assertNoSubPath(t, dep)
	assert.Equal(t, "dnsfence-config", mounts["/etc/dnsfence"])
	assert.Equal(t, "dnsfence-lists", mounts["/etc/dnsfence/lists"])

	// The configuration in the ConfigMap, and every file it names present in
	// the ConfigMap mounted at that file's folder.
	cm := find(t, all, "configmap.yaml", "ConfigMap", "dnsfence-config")
	require.Contains(t, cm.Data, "dnsfence.yaml")
	cfg := parseConfig(t, "ConfigMap dnsfence-config", []byte(cm.Data["dnsfence.yaml"]))
	assert.NotContains(t, *cfg.HTTP, "127.0.0.1", "the kubelet's probes must reach the HTTP endpoint")
	assertDrains(t, dep, cfg, "ConfigMap dnsfence-config")
	for _, f := range cfg.files() {
		dir, name := path.Split(path.Join("/etc/dnsfence", f))
		owner, ok := mounts[strings.TrimSuffix(dir, "/")]
		if !assert.True(t, ok, "%s: no ConfigMap mounted at %s", f, dir) {
			continue
		}
		// The lists and ranges are their own ConfigMaps, apart from the
		// configuration, so that re-applying the configuration never
		// overwrites real lists.
		require.NotEqual(t, "dnsfence-config", owner, "%s: lists must not share the configuration's ConfigMap", f)
		data := find(t, all, "configmap-lists-example.yaml", "ConfigMap", owner).Data
		assert.Contains(t, data, name, "ConfigMap %s has no %s, which the config names", owner, name)
	}

	// The Service maps 53 to the port dnsfence listens on and keeps client
	// addresses.
	svc := find(t, all, "service.yaml", "Service", "dnsfence")
	assert.Equal(t, "Local", svc.Spec.ExternalTrafficPolicy, "the policy needs client source addresses")
	protocols := map[string]bool{}
	for _, p := range svc.Spec.Ports {
		assert.Equal(t, 53, p.Port)
		for _, l := range cfg.Listen {
			assert.Equal(t, listenPort(t, "dnsfence-config", l), containerPort(t, c, p.TargetPort), "Service port %s", p.Name)
		}
		protocols[p.Protocol] = true
	}
	assert.Equal(t, map[string]bool{"UDP": true, "TCP": true}, protocols)
	metrics := find(t, all, "service.yaml", "Service", "dnsfence-metrics")
	require.Len(t, metrics.Spec.Ports, 1)
	assert.Equal(t, 9153, containerPort(t, c, metrics.Spec.Ports[0].TargetPort))
}

func TestKubernetesSidecar(t *testing.T) {
	all := loadManifests(t)
	var dep manifest
	for _, m := range all {
		if m.file == "sidecar.yaml" && m.Kind == "Deployment" {
			dep = m
		}
	}
	require.Equal(t, "Deployment", dep.Kind, "sidecar.yaml has a Deployment")
	spec := dep.Spec.Template.Spec
	assert.Equal(t, "None", spec.DNSPolicy)
	assert.Equal(t, []string{"127.0.0.1"}, spec.DNSConfig.Nameservers)
	c := dnsfenceContainer(t, dep)
	assertProbe(t, c, c.LivenessProbe, "liveness", "/healthz")
	// The app starts once the startup probe passes, and asks its first
	// names at once: the probe must wait for DNS to be answered, which
	// /healthz, 200 while the lists still load, does not.
	assertProbe(t, c, c.StartupProbe, "startup", "/startupz")
	assertHardened(t, dep, c)
	mounts := assertNoSubPath(t, dep)
	assert.Equal(t, "dnsfence-lists", mounts["/etc/dnsfence/lists"])

	cm := find(t, all, "sidecar.yaml", "ConfigMap", mounts["/etc/dnsfence"])
	cfg := parseConfig(t, "sidecar config", []byte(cm.Data["dnsfence.yaml"]))
	// The startup probe restarts a start it gives up on, and /startupz
	// is 503 for as long as the start waits on purpose: for a list being
	// written (reload.writer_wait) and a remote list's first copy
	// (resolver.StartWait), with a minute for the rest, as the start
	// budget systemd is given (cmd/dnsfence's startBudget). A probe that
	// gives up sooner kills such a start and begins it again, which
	// waits the same, over and over: the app never starts.
	dir := t.TempDir()
	for _, f := range []string{"lists/tiktok.txt", "lists/bytedance.txt", "lists/allow.txt"} {
		require.NoError(t, os.MkdirAll(filepath.Join(dir, path.Dir(f)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, f), []byte("tiktok.com\n"), 0o644))
	}
	parsed, err := config.Parse(filepath.Join(dir, "dnsfence.yaml"), []byte(cm.Data["dnsfence.yaml"]), os.ReadFile)
	require.NoError(t, err)
	if start := parsed.Reload.WriterWait + resolver.StartWait + time.Minute; c.StartupProbe != nil {
		assert.GreaterOrEqual(t, c.StartupProbe.gives(), start,
			"the startup probe (periodSeconds x failureThreshold) must outlast a start that waits: reload.writer_wait %v, a remote list's first copy %v and a minute", parsed.Reload.WriterWait, resolver.StartWait)
	}
	assert.Equal(t, []string{"127.0.0.1:53"}, cfg.Listen, "dnsConfig cannot name a port")
	assert.Contains(t, cfg.Policies[0].Clients, "127.0.0.0/8", "the pod's loopback is the government range")
	// Port 53 as non-root: the pod lowers the unprivileged port start.
	unprivileged := ""
	for _, s := range spec.SecurityContext.Sysctls {
		if s.Name == "net.ipv4.ip_unprivileged_port_start" {
			unprivileged = s.Value
		}
	}
	assert.Equal(t, "53", unprivileged)
}

func TestContainerConfig(t *testing.T) {
	data, err := os.ReadFile("deploy/dnsfence-container.yaml")
	require.NoError(t, err)
	cfg := parseConfig(t, "deploy/dnsfence-container.yaml", data)
	for _, l := range cfg.Listen {
		assert.Equal(t, 5353, listenPort(t, "deploy/dnsfence-container.yaml", l), "non-root listens on 5353")
	}
	assert.NotContains(t, *cfg.HTTP, "127.0.0.1", "health checks must reach the HTTP endpoint")
	// The Dockerfile copies configs/lists and configs/networks next to it.
	for _, f := range cfg.files() {
		assert.FileExists(t, f, "the container configuration names %s", f)
	}
}

// TestKubernetesRemoteLists checks the DaemonSet that takes its lists from
// a zone transfer and a URL: its configuration (a Secret, for the TSIG key)
// is valid and names remote lists only, its disk copies go to a writable
// volume, its ranges come from the networks ConfigMap.
func TestKubernetesRemoteLists(t *testing.T) {
	all := loadManifests(t)
	ds := find(t, all, "daemonset-remote-lists.yaml", "DaemonSet", "dnsfence-remote")
	c := dnsfenceContainer(t, ds)
	assertProbe(t, c, c.LivenessProbe, "liveness", "/healthz")
	assertProbe(t, c, c.ReadinessProbe, "readiness", "/readyz")
	assertHardened(t, ds, c)
	assertNoSubPath(t, ds)
	volumes := map[string]string{} // mount path -> what: secret:NAME, configMap:NAME, emptyDir
	for _, v := range ds.Spec.Template.Spec.Volumes {
		for _, vm := range c.VolumeMounts {
			if vm.Name != v.Name {
				continue
			}
			assert.Empty(t, vm.SubPath, "%s is mounted with subPath: it would never be updated", vm.MountPath)
			switch {
			case v.Secret != nil:
				volumes[vm.MountPath] = "secret:" + v.Secret.SecretName
			case v.ConfigMap != nil:
				volumes[vm.MountPath] = "configMap:" + v.ConfigMap.Name
			case v.EmptyDir != nil:
				volumes[vm.MountPath] = "emptyDir"
			}
		}
	}
	assert.Equal(t, "secret:dnsfence-remote-config", volumes["/etc/dnsfence"])
	assert.Equal(t, "configMap:dnsfence-networks", volumes["/etc/dnsfence/networks"])

	data, err := os.ReadFile("deploy/dnsfence-remote-lists.yaml")
	require.NoError(t, err)
	parsed := parseConfig(t, "deploy/dnsfence-remote-lists.yaml", data)
	assertDrains(t, ds, parsed, "deploy/dnsfence-remote-lists.yaml")
	for _, l := range parsed.Listen {
		assert.Equal(t, 5353, listenPort(t, "deploy/dnsfence-remote-lists.yaml", l))
	}
	// Valid as dnsfence reads it, with the ranges where the pod has them.
	dir := t.TempDir()
	ranges, err := os.ReadFile("networks/government.txt")
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "networks"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "networks", "government.txt"), ranges, 0o644))
	cfg, err := config.Parse(filepath.Join(dir, "dnsfence.yaml"), data, os.ReadFile)
	require.NoError(t, err)
	assert.NotEmpty(t, cfg.RemoteLists())
	for _, p := range cfg.Policies {
		for _, l := range append(p.Block, p.Allow...) {
			assert.True(t, config.IsRemote(l), "%s: every list of this example is remote", l)
		}
		for _, f := range p.ClientFiles {
			dir, _ := path.Split(path.Join("/etc/dnsfence", f))
			assert.Equal(t, "configMap:dnsfence-networks", volumes[strings.TrimSuffix(dir, "/")], "%s", f)
		}
	}
	assert.Equal(t, "emptyDir", volumes[cfg.SourceOptions().CacheDir], "sources.cache_dir is a writable volume")
}

// TestSystemdUnitKeepsRemoteListCopies: under the shipped unit the disk
// copies of remote lists (sources.cache_dir: /var/lib/dnsfence/sources in
// dnsfence-remote-lists.yaml and in the README) must be writable and
// outlive the process. DynamicUser= implies ProtectSystem=strict, which
// leaves every path read-only but the unit's own StateDirectory= (and
// ReadWritePaths=): without one, no copy is ever written
// (dnsfence_source_cache_ok 0) and a restart while a list's server or
// primary is down serves that list empty, its names not blocked.
func TestSystemdUnitKeepsRemoteListCopies(t *testing.T) {
	unit := systemdUnit(t)
	var writable []string // folders the service may write, kept across restarts
	for _, v := range unit["StateDirectory"] {
		writable = append(writable, path.Join("/var/lib", v))
	}
	for _, v := range unit["ReadWritePaths"] {
		writable = append(writable, path.Clean(strings.TrimLeft(v, "-+")))
	}
	cacheDir := remoteListsCacheDir(t)
	kept := false
	for _, w := range writable {
		kept = kept || cacheDir == w || strings.HasPrefix(cacheDir, w+"/")
	}
	assert.True(t, kept, "sources.cache_dir %s is in no folder the unit may write (StateDirectory=, ReadWritePaths=: %v): under DynamicUser= and ProtectSystem=strict no disk copy of a remote list could be written", cacheDir, writable)
}

// TestSystemdUnitStartedOnceServing: the unit is ordered before
// nss-lookup.target so that units resolving names at start-up wait for
// dnsfence, but it was Type=simple, which systemd calls started as soon
// as the process is, so they started while dnsfence still loaded its
// lists (up to 10 s more for a remote list without a copy) and nothing
// answered. Type=notify waits for dnsfence's READY=1, sent once every
// listener answers (TestSystemdNotifiedOnceServing), as Unbound's and
// dnsdist's units do.
func TestSystemdUnitStartedOnceServing(t *testing.T) {
	unit := systemdUnit(t)
	require.Contains(t, unit["Before"], "nss-lookup.target")
	assert.Equal(t, []string{"notify"}, unit["Type"], "a unit ordered before nss-lookup.target is started once it serves")
	assert.Equal(t, []string{"main"}, unit["NotifyAccess"], "READY=1 comes from dnsfence itself")
}

// systemdUnit is the shipped unit's settings, each key's values (every
// word of every line setting it) in order.
func systemdUnit(t *testing.T) map[string][]string {
	t.Helper()
	data, err := os.ReadFile("deploy/systemd/dnsfence.service")
	require.NoError(t, err)
	unit := make(map[string][]string)
	for _, line := range strings.Split(string(data), "\n") {
		key, value, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok || strings.HasPrefix(key, "#") {
			continue
		}
		unit[key] = append(unit[key], strings.Fields(value)...)
	}
	return unit
}

// TestDockerImageKeepsRemoteListCopies: in the shipped image the disk
// copies of remote lists (sources.cache_dir of dnsfence-remote-lists.yaml)
// must be writable by the image's user and may outlive the container. The
// image had no such folder: uid 65532 cannot make one under /var/lib, no
// copy was ever written (dnsfence_source_cache_ok 0), and a container
// started while a list's server or primary was down served that list
// empty. The image now makes the folder, owned by its user, in a VOLUME.
func TestDockerImageKeepsRemoteListCopies(t *testing.T) {
	data, err := os.ReadFile("deploy/Dockerfile")
	require.NoError(t, err)
	text := strings.ReplaceAll(string(data), "\\\n", " ")
	var user string
	var volumes, owned []string // VOLUME paths; paths COPY --chown'd to the user
	var made []string           // folders made in the build stage under /out
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch f[0] {
		case "USER":
			user = f[1]
		case "VOLUME":
			volumes = append(volumes, f[1:]...)
		case "COPY":
			chown := ""
			for _, a := range f[1:] {
				if v, ok := strings.CutPrefix(a, "--chown="); ok {
					chown = v
				}
			}
			if chown != "" {
				owned = append(owned, chown+" "+f[len(f)-1])
			}
		case "RUN":
			for i, a := range f {
				if a == "-p" && i+1 < len(f) && strings.HasPrefix(f[i+1], "/out/") {
					made = append(made, path.Clean(strings.TrimPrefix(f[i+1], "/out")))
				}
			}
		}
	}
	require.NotEmpty(t, user)
	cacheDir := remoteListsCacheDir(t)
	under := func(dirs []string) bool {
		for _, d := range dirs {
			if cacheDir == d || strings.HasPrefix(cacheDir, d+"/") {
				return true
			}
		}
		return false
	}
	assert.Contains(t, made, cacheDir, "the build stage makes sources.cache_dir")
	var ownedDirs []string
	for _, o := range owned {
		if who, dir, _ := strings.Cut(o, " "); who == user {
			ownedDirs = append(ownedDirs, path.Clean(dir))
		}
	}
	assert.True(t, under(ownedDirs), "sources.cache_dir %s is copied into the image owned by USER %s (%v)", cacheDir, user, owned)
	assert.True(t, under(volumes), "sources.cache_dir %s is in a VOLUME (%v)", cacheDir, volumes)
}

// remoteListsCacheDir is sources.cache_dir of the shipped
// dnsfence-remote-lists.yaml, cleaned: an absolute path.
func remoteListsCacheDir(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("deploy/dnsfence-remote-lists.yaml")
	require.NoError(t, err)
	var cfg struct {
		Sources struct {
			CacheDir string `yaml:"cache_dir"`
		} `yaml:"sources"`
	}
	require.NoError(t, yaml.Unmarshal(data, &cfg))
	dir := path.Clean(cfg.Sources.CacheDir)
	require.True(t, path.IsAbs(dir), "sources.cache_dir %q", cfg.Sources.CacheDir)
	return dir
}

// TestDockerHealthcheckIsNoReadiness: the image's HEALTHCHECK asks
// /startupz, never /readyz. Docker acts on an unhealthy container where
// it is an orchestrator's liveness: Swarm kills and replaces the task,
// and compose setups restart it (willfarrell/autoheal). /readyz turns 503
// when every upstream fails, which a restart of every replica cannot
// mend (and meanwhile nothing answers, blocked names included), and when
// a fail-closed guard has held a reload for reload.unready_after: the
// restart then loads the files as they are, and applies the very change
// the guard held (a block list a broken sync emptied, an allow entry
// over a blocked name), with no SIGHUP. /startupz says the process
// answers DNS, and stays so.
func TestDockerHealthcheckIsNoReadiness(t *testing.T) {
	data, err := os.ReadFile("deploy/Dockerfile")
	require.NoError(t, err)
	text := strings.ReplaceAll(string(data), "\\\n", " ")
	var check string
	for _, line := range strings.Split(text, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == "HEALTHCHECK" {
			check = line
		}
	}
	require.NotEmpty(t, check, "the image has a HEALTHCHECK")
	assert.Contains(t, check, `"/dnsfence", "health"`, "the binary asks itself: the image has no shell or curl")
	assert.Contains(t, check, "/startupz", "HEALTHCHECK: %s", check)
	assert.NotContains(t, check, "/readyz", "HEALTHCHECK: %s", check)
}
