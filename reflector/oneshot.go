package reflector

import (
	"context"
	"errors"
)

// One-shot forms for the benchmark harness: each brings up its own reflector network
// (namespaces <prefix>-prober and <prefix>-refl), measures and takes it down again.

// Capacity runs (*Net).Capacity on a fresh network of depth 8 (namespaces tpcap-*).
func Capacity(ctx context.Context, opts CapacityOptions) (CapacityResult, error) {
	n, err := Up(ctx, Options{Prefix: "tpcap", Depth: 8})
	if err != nil {
		return CapacityResult{}, err
	}
	res, err := n.Capacity(ctx, opts)
	return res, errors.Join(err, n.Down())
}

// PeakRSS runs (*Net).PeakRSS on a fresh network of depth 8 (namespaces tprss-*) and
// returns turnpath's peak RSS in bytes for `trace -f` over targets targets with the
// given engine ("ebpf" or "socket").
func PeakRSS(ctx context.Context, binary string, targets int, engine string) (int64, error) {
	n, err := Up(ctx, Options{Prefix: "tprss", Depth: 8})
	if err != nil {
		return 0, err
	}
	res, err := n.PeakRSS(ctx, binary, targets, RSSOptions{Engine: engine})
	return res.PeakBytes, errors.Join(err, n.Down())
}
