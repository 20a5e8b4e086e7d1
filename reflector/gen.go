// Package reflector is a network of any depth for benchmarks: an XDP program
// (bpf/reflector.c) on the far end of a veth answers every probe with the ICMP
// Time Exceeded of the router at the probe's TTL, or the destination's answer
// from a configurable depth on, by XDP_TX. Up builds a prober namespace and a
// reflector namespace joined by such a veth; Capacity drives a turnpath engine
// through it as fast as it can and counts; PeakRSS measures the memory of
// `turnpath trace -f` over long target lists.
package reflector

// The generated reflector_bpfel.go and reflector_bpfel.o are committed, like
// loader's: building needs no C toolchain. Regenerate with `make generate`
// (same pinned clang and flags as loader/gen.go, which explains them).
//go:generate go tool bpf2go -cc $BPF_CLANG -cflags $BPF_CFLAGS -target bpfel -type refl_stats Reflector ../bpf/reflector.c -- -nostdinc -I../bpf/headers -mcpu=v3
