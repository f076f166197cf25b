package resolver

import (
	"maps"
	"time"

	"github.com/dnsfence/dnsfence/blocklist/source"
	"github.com/prometheus/client_golang/prometheus"
)

// The dnsfence_source_* series describe each remote list source (label
// source: the entry as configured), read from the sources at each scrape.
var (
	sourceHasContentDesc = prometheus.NewDesc("dnsfence_source_has_content",
		"1 once the remote list source has a copy (from the network or its disk copy in sources.cache_dir); /readyz waits for every source to have one.",
		[]string{"source"}, nil)
	sourceLastSuccessDesc = prometheus.NewDesc("dnsfence_source_last_success_timestamp_seconds",
		"Unix time the source's server last answered (with a copy or with not modified); 0 before it ever did.",
		[]string{"source"}, nil)
	sourceAgeDesc = prometheus.NewDesc("dnsfence_source_content_age_seconds",
		"Seconds since the version served (the zone serial, or the URL's ETag or body) was first fetched from the network.",
		[]string{"source"}, nil)
	sourceFailuresDesc = prometheus.NewDesc("dnsfence_source_failures_total",
		"Fetches and transfers that failed, and copies refused (an HTML or oversized body, a failed pin, a list of bad lines only, a copy a guard held), since dnsfence started: a reload that restarts the source (a changed sources setting) does not reset it.",
		[]string{"source"}, nil)
	sourceEntriesDesc = prometheus.NewDesc("dnsfence_source_entries",
		"Entries (RPZ triggers) of the list served from the source.",
		[]string{"source"}, nil)
	sourceSerialDesc = prometheus.NewDesc("dnsfence_source_serial",
		"SOA serial of the zone served from a zone transfer source.",
		[]string{"source"}, nil)
	sourceFromCacheDesc = prometheus.NewDesc("dnsfence_source_from_cache",
		"1 while the copy served is the disk copy read at start, not yet confirmed or replaced from the network.",
		[]string{"source"}, nil)
	sourceHeldDesc = prometheus.NewDesc("dnsfence_source_held",
		"1 while the source's newest copy is held by a fail-closed guard (reload.max_shrink) until SIGHUP; the list served is the one before.",
		[]string{"source"}, nil)
	sourceCacheOKDesc = prometheus.NewDesc("dnsfence_source_cache_ok",
		"0 when the source's disk copy could not be written or read: a restart without network would start without this list.",
		[]string{"source"}, nil)
	sourceTransfersDesc = prometheus.NewDesc("dnsfence_source_transfers_total",
		"Zone transfers applied, by type (AXFR, IXFR).",
		[]string{"source", "type"}, nil)
	sourceNotifiesDesc = prometheus.NewDesc("dnsfence_source_notifies_total",
		"DNS NOTIFY messages for the zone, by result: accepted (from the primary's address) or refused (acted on by no source of the zone: from another address, or signed with a TSIG that does not verify).",
		[]string{"source", "result"}, nil)
)

// sourceCollector exports the dnsfence_source_* series of the sources a
// Handler serves with.
type sourceCollector struct{ h *Handler }

func (c sourceCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{sourceHasContentDesc, sourceLastSuccessDesc, sourceAgeDesc, sourceFailuresDesc,
		sourceEntriesDesc, sourceSerialDesc, sourceFromCacheDesc, sourceHeldDesc, sourceCacheOKDesc, sourceTransfersDesc,
		sourceNotifiesDesc} {
		ch <- d
	}
}

func (c sourceCollector) Collect(ch chan<- prometheus.Metric) {
	rem := c.h.remote.Load()
	if rem == nil {
		return
	}
	snap := c.h.Snapshot()
	now := time.Now()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	for _, src := range rem.srcs {
		st := src.Status()
		name := src.Name()
		gauge(sourceHasContentDesc, bit(st.HasContent), name)
		last := 0.0
		if !st.LastSuccess.IsZero() {
			last = float64(st.LastSuccess.Unix())
		}
		gauge(sourceLastSuccessDesc, last, name)
		if st.HasContent && !st.VersionSince.IsZero() {
			gauge(sourceAgeDesc, now.Sub(st.VersionSince).Seconds(), name)
		}
		carried := rem.carried[name]
		counter(sourceFailuresDesc, float64(carried.failures+st.Failures), name)
		if snap != nil {
			if l, ok := snap.Lists[name]; ok {
				gauge(sourceEntriesDesc, float64(l.Len()), name)
			}
		}
		gauge(sourceFromCacheDesc, bit(st.FromCache), name)
		_, held := c.h.held.Load(name)
		gauge(sourceHeldDesc, bit(held), name)
		gauge(sourceCacheOKDesc, bit(st.CacheError == nil), name)
		if st.Kind == source.KindZone {
			if st.HasContent {
				gauge(sourceSerialDesc, float64(st.Serial), name)
			}
			for _, t := range []string{source.TransferAXFR, source.TransferIXFR} {
				counter(sourceTransfersDesc, float64(carried.transfers[t]+st.Transfers[t]), name, t)
			}
			counter(sourceNotifiesDesc, float64(carried.notifiesAccepted+st.NotifiesAccepted), name, "accepted")
			counter(sourceNotifiesDesc, float64(carried.notifiesRefused+st.NotifiesRefused), name, "refused")
		}
	}
}

// sourceCounters are the counts of the sources a reload restarted for one
// entry, which its dnsfence_source_*_total series add to the running
// source's (Status counts from the source's own start).
type sourceCounters struct {
	failures                          uint64
	transfers                         map[string]uint64 // by type
	notifiesAccepted, notifiesRefused uint64
}

// plus is c with the counts of st added, in a map of its own.
func (c sourceCounters) plus(st source.Status) sourceCounters {
	transfers := maps.Clone(c.transfers)
	if transfers == nil {
		transfers = map[string]uint64{}
	}
	for t, n := range st.Transfers {
		transfers[t] += n
	}
	return sourceCounters{
		failures:         c.failures + st.Failures,
		transfers:        transfers,
		notifiesAccepted: c.notifiesAccepted + st.NotifiesAccepted,
		notifiesRefused:  c.notifiesRefused + st.NotifiesRefused,
	}
}

func bit(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// sources registers the dnsfence_source_* series of h's sources.
func (m *Metrics) sources(h *Handler) {
	if m == nil {
		return
	}
	m.reg.MustRegister(sourceCollector{h: h})
}

// setHeld records whether a guard holds the newest copy of the remote list
// called name, for /readyz and dnsfence_source_held.
func (h *Handler) setHeld(name string, held bool) {
	if held {
		h.held.Store(name, true)
	} else {
		h.held.Delete(name)
	}
}
