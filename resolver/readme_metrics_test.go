package resolver

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
)

// recordingRegisterer registers with a Registry and keeps every collector
// registered, so that a test can read the series they describe, those of
// vectors with no child yet included.
type recordingRegisterer struct {
	*prometheus.Registry
	collectors []prometheus.Collector
}

func (r *recordingRegisterer) Register(c prometheus.Collector) error {
	r.collectors = append(r.collectors, c)
	return r.Registry.Register(c)
}

func (r *recordingRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// descPattern reads a series' name and variable labels from
// prometheus.Desc.String.
var descPattern = regexp.MustCompile(`^Desc\{fqName: "([^"]+)", .*variableLabels: \{([^}]*)\}\}$`)

// registeredSeries is every dnsfence series, by name, with its labels in
// order: those NewMetrics registers, and those registered once a Handler
// serves (the cache, the upstream gauges, the remote list sources) or an
// encrypted listener loads its certificate.
func registeredSeries(t *testing.T) map[string][]string {
	t.Helper()
	rec := &recordingRegisterer{Registry: prometheus.NewRegistry()}
	m := NewMetrics(rec)
	NewHandler(zap.NewNop(), nil, m)
	m.certificate(time.Now(), certReloaded)
	series := map[string][]string{}
	for _, c := range rec.collectors {
		ch := make(chan *prometheus.Desc, 64)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			sm := descPattern.FindStringSubmatch(d.String())
			require.NotNil(t, sm, "a description of the form Desc{fqName: …, variableLabels: {…}}: %s", d)
			var labels []string
			if sm[2] != "" {
				labels = strings.Split(sm[2], ",")
			}
			series[sm[1]] = labels
		}
	}
	return series
}

// readmeSeriesCell is one series in the first cell of a row of README's
// table of series: `dnsfence_name{label,label}`.
var readmeSeriesCell = regexp.MustCompile("`(dnsfence_[a-z0-9_]+)(?:\\{([a-z_,]*)\\})?`")

// TestREADMEMetricsTable: README's table of series (Operations, Metrics
// and health) has a row for every series dnsfence registers, with the
// labels it has, and no row for a series it does not. The table had
// fallen behind: dnsfence_cache_entries, the certificate's two series and
// the eleven dnsfence_source_* series were in no row.
func TestREADMEMetricsTable(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	readme := map[string][]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "| `dnsfence_") {
			continue
		}
		cell, _, _ := strings.Cut(strings.TrimPrefix(line, "| "), " |")
		for _, sm := range readmeSeriesCell.FindAllStringSubmatch(cell, -1) {
			var labels []string
			if sm[2] != "" {
				labels = strings.Split(sm[2], ",")
			}
			readme[sm[1]] = labels
		}
	}
	require.NotEmpty(t, readme, "README's table of series")
	registered := registeredSeries(t)
	for name, labels := range registered {
		shown, ok := readme[name]
		if assert.True(t, ok, "README's table of series has no row for %s", name) {
			slices.Sort(labels)
			slices.Sort(shown)
			assert.Equal(t, labels, shown, "README's labels of %s", name)
		}
	}
	for name := range readme {
		assert.Contains(t, registered, name, "README's table has a row for %s, which dnsfence does not register", name)
	}
}
