// Package reflector is a network of any depth for benchmarks and tests: an XDP
// program (bpf/reflector.c) on the far end of a veth answers every probe with the
// ICMP Time Exceeded of the router at the probe's TTL, or the destination's answer
// from a configurable depth on, by XDP_TX. Up builds a prober namespace and a
// reflector namespace joined by such a veth; Net says where things are (Target,
// Source, Responder, Do, UseEngine) and what the program answered (Stats). It is
// the fixture only: package bench measures through it (capacity, peak RSS).
package reflector

// The generated reflector_bpfel.go and reflector_bpfel.o are committed, like
// loader's: building needs no C toolchain. Regenerate with `make generate`
// (same pinned clang and flags as loader/gen.go, which explains them).
//go:generate go tool bpf2go -cc $BPF_CLANG -cflags $BPF_CFLAGS -target bpfel -type refl_stats Reflector ../bpf/reflector.c -- -nostdinc -I../bpf/headers -mcpu=v3
