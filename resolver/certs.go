package resolver

import (
	"crypto/x509"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Results of a certificate reload, the `result` label of
// dnsfence_tls_certificate_reloads_total.
const (
	certReloaded = "success" // the new pair is served
	certRefused  = "failure" // the new pair was refused; the old one is served
)

// Certificate is the server certificate of the encrypted listeners: the
// listen.CertStore that serves it, reloaded when tls.cert or tls.key
// changes on disk (cert-manager and certbot renew in place) and on
// SIGHUP, with every reload logged and counted. A refused pair (one that
// does not parse, a key that is not the certificate's, an expired one)
// leaves the old pair served, and /readyz as it was: the listeners still
// serve, and the error log line says why the new pair was refused.
type Certificate struct {
	Store *listen.CertStore
	log   *zap.Logger
	m     *Metrics
	// served, when set, is told each certificate the listeners start to
	// serve after a reload (Server.StartEncrypted: DDR's warnings).
	served atomic.Pointer[func(leaf *x509.Certificate)]
}

// OpenCertificate loads the tls pair of cfg (config.CheckCertificate
// first, so that a bad pair is reported as `file:line: tls.cert: why`) and
// starts watching it. With no tls.cert it returns nil, nil. Close stops
// the watch.
func OpenCertificate(log *zap.Logger, cfg *config.Config, m *Metrics) (*Certificate, error) {
	if cfg.TLS.Cert == "" {
		return nil, nil
	}
	if _, err := cfg.CheckCertificate(); err != nil {
		return nil, err
	}
	c := &Certificate{log: log, m: m}
	store, err := listen.NewCertStore(cfg.Path(cfg.TLS.Cert), cfg.Path(cfg.TLS.Key), listen.CertOptions{OnReload: c.reloaded})
	if err != nil {
		return nil, err // changed since CheckCertificate read it
	}
	c.Store = store
	if err := store.Start(); err != nil {
		return nil, err
	}
	m.certificate(store.NotAfter(), "")
	log.Info("TLS certificate loaded", zap.String("cert", cfg.Path(cfg.TLS.Cert)), zap.String("key", cfg.Path(cfg.TLS.Key)),
		zap.String("subject", store.Leaf().Subject.String()), zap.Strings("names", store.Leaf().DNSNames),
		zap.Time("not_after", store.NotAfter()))
	c.warnNoHost()
	return c, nil
}

// warnNoHost warns when the certificate served names no host: clients
// that connect by name cannot verify it, and no encrypted resolver is
// designated (ddr, RFC 9462), at start and at every reload that serves
// such a certificate.
func (c *Certificate) warnNoHost() {
	if _, ok := certHost(c.Store.Leaf()); !ok {
		c.log.Warn(noHostDesignated, zap.Strings("names", c.Store.Leaf().DNSNames))
	}
}

// Reload reads the pair now (SIGHUP) and reports it as the watch does
// when the files changed. A nil Certificate does nothing.
func (c *Certificate) Reload() {
	if c == nil {
		return
	}
	if changed, err := c.Store.Reload(); changed {
		c.reloaded(c.Store.NotAfter(), err)
	}
}

// Close stops watching the files; the pair loaded stays served. A nil
// Certificate does nothing.
func (c *Certificate) Close() error {
	if c == nil {
		return nil
	}
	return c.Store.Close()
}

// reloaded logs and counts one reload that found the files changed:
// notAfter is the expiry of the pair served after it.
func (c *Certificate) reloaded(notAfter time.Time, err error) {
	if err != nil {
		c.m.certificate(notAfter, certRefused)
		c.log.Error("TLS certificate reload refused, still serving the old certificate", zap.Error(err),
			zap.Time("not_after", notAfter))
		return
	}
	c.m.certificate(notAfter, certReloaded)
	c.log.Info("TLS certificate reloaded", zap.String("subject", c.Store.Leaf().Subject.String()),
		zap.Strings("names", c.Store.Leaf().DNSNames), zap.Time("not_after", notAfter))
	c.warnNoHost()
	if served := c.served.Load(); served != nil {
		(*served)(c.Store.Leaf())
	}
}

// certMetrics are the series of the server certificate, registered when
// one is loaded: a deployment without encrypted listeners has no expiry
// to alert on.
type certMetrics struct {
	once   sync.Once
	expiry prometheus.Gauge
	// expiryOld is expiry under its first name, which did not say it holds
	// a time (Prometheus names a Unix time …_timestamp_seconds, as
	// dnsfence_reload_last_success_timestamp_seconds): kept with the same
	// value so that alerts written against it still fire.
	expiryOld prometheus.Gauge
	reloads   *prometheus.CounterVec
}

// certificate records the expiry of the pair served and, unless result is
// "", one reload's result.
func (m *Metrics) certificate(notAfter time.Time, result string) {
	if m == nil {
		return
	}
	m.cert.once.Do(func() {
		m.cert.expiry = prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dnsfence_tls_certificate_expiry_timestamp_seconds",
			Help: "Unix time at which the server certificate of the encrypted listeners (tls.cert) expires.",
		})
		m.cert.expiryOld = prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dnsfence_tls_certificate_expiry_seconds",
			Help: "Deprecated: dnsfence_tls_certificate_expiry_timestamp_seconds under its old name, the same value; it will be removed.",
		})
		m.cert.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnsfence_tls_certificate_reloads_total",
			Help: "Reloads of the server certificate after its files changed, by result: success (the new pair is served) or failure (refused, the old pair still served; the log says why).",
		}, []string{"result"})
		m.reg.MustRegister(m.cert.expiry, m.cert.expiryOld, m.cert.reloads)
		m.cert.reloads.WithLabelValues(certReloaded)
		m.cert.reloads.WithLabelValues(certRefused)
	})
	m.cert.expiry.Set(float64(notAfter.Unix()))
	m.cert.expiryOld.Set(float64(notAfter.Unix()))
	if result != "" {
		m.cert.reloads.WithLabelValues(result).Inc()
	}
}
