package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/turnpath/turnpath/loader"
)

// kernelStater is the eBPF engine (engine.EBPF.KernelStats): the socket engine has no
// kernel counters, and then these metrics are absent.
type kernelStater interface {
	KernelStats() (loader.Stats, error)
}

// kernelCollector reads the eBPF programs' counters at scrape time. They live in the
// engine's maps, so a new engine (monitor's Reopen after an outage) starts them at zero:
// what the old one had counted, as last read, is kept as a base so the totals never go
// down.
type kernelCollector struct {
	mu   sync.Mutex
	src  kernelStater
	base loader.Stats // the counts of the engines before src
	last loader.Stats // src's counts at the last read
}

var kernelDescs = struct {
	seen, updErr, matched, drops, lookup, trunc, foreign *prometheus.Desc
}{
	seen: prometheus.NewDesc("turnpath_ebpf_probes_seen_total",
		"Probes TC egress recorded as this run's.", nil, nil),
	updErr: prometheus.NewDesc("turnpath_ebpf_sent_update_errors_total",
		"Send-time records TC egress failed to store.", nil, nil),
	matched: prometheus.NewDesc("turnpath_ebpf_replies_matched_total",
		"Replies XDP (or TCX ingress) matched to this run's probes.", nil, nil),
	drops: prometheus.NewDesc("turnpath_ebpf_ringbuf_drops_total",
		"Matched replies lost because the ring buffer was full.", nil, nil),
	lookup: prometheus.NewDesc("turnpath_ebpf_lookup_failures_total",
		"Kernel map lookups that found nothing: map=\"sent\" a matched reply without a send time, map=\"flows\" a STUN answer with an unknown flowtag.",
		[]string{"map"}, nil),
	trunc: prometheus.NewDesc("turnpath_ebpf_truncated_total",
		"Candidate replies too short to parse.", nil, nil),
	foreign: prometheus.NewDesc("turnpath_ebpf_foreign_total",
		"Probe-shaped packets (dir=\"tx\") and replies (dir=\"rx\") of another run, passed untouched.",
		[]string{"dir"}, nil),
}

func newKernelCollector() *kernelCollector { return &kernelCollector{} }

// use makes eng the source (nothing when it has no kernel counters).
func (k *kernelCollector) use(eng any) {
	ks, ok := eng.(kernelStater)
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.src != nil {
		k.base = add(k.base, k.last)
		k.last = loader.Stats{}
	}
	k.src = nil
	if ok {
		k.src = ks
	}
}

func (k *kernelCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{kernelDescs.seen, kernelDescs.updErr, kernelDescs.matched,
		kernelDescs.drops, kernelDescs.lookup, kernelDescs.trunc, kernelDescs.foreign} {
		ch <- d
	}
}

func (k *kernelCollector) Collect(ch chan<- prometheus.Metric) {
	k.mu.Lock()
	if k.src == nil && k.base == (loader.Stats{}) {
		k.mu.Unlock()
		return
	}
	if k.src != nil {
		// A closed engine (the run is ending) keeps its last counts.
		if st, err := k.src.KernelStats(); err == nil {
			k.last = st
		}
	}
	s := add(k.base, k.last)
	k.mu.Unlock()
	c := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	c(kernelDescs.seen, s.TxSeen)
	c(kernelDescs.updErr, s.TxUpdateErr)
	c(kernelDescs.matched, s.RxMatched)
	c(kernelDescs.drops, s.RingbufDrops)
	c(kernelDescs.lookup, s.RxNoTx, "sent")
	c(kernelDescs.lookup, s.STUNNoFlow, "flows")
	c(kernelDescs.trunc, s.Truncated)
	c(kernelDescs.foreign, s.TxForeign, "tx")
	c(kernelDescs.foreign, s.RxForeign, "rx")
}

func add(a, b loader.Stats) loader.Stats {
	return loader.Stats{TxSeen: a.TxSeen + b.TxSeen, TxUpdateErr: a.TxUpdateErr + b.TxUpdateErr,
		RxMatched: a.RxMatched + b.RxMatched, RxNoTx: a.RxNoTx + b.RxNoTx,
		RxUnmatchedICMP: a.RxUnmatchedICMP + b.RxUnmatchedICMP, RingbufDrops: a.RingbufDrops + b.RingbufDrops,
		Truncated: a.Truncated + b.Truncated, STUNNoFlow: a.STUNNoFlow + b.STUNNoFlow,
		TxForeign: a.TxForeign + b.TxForeign, RxForeign: a.RxForeign + b.RxForeign}
}
