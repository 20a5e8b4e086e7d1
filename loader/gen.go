// Package loader loads turnpath's BPF objects (bpf/turnpath.c), configures
// them through `volatile const` variables, attaches them to an interface
// (TC egress via TCX or a legacy clsact filter, XDP via a bpf_link) and reads
// matched replies from the ring buffer.
package loader

// The generated turnpath_bpfel.go and turnpath_bpfel.o are committed: building
// turnpath needs no C toolchain. Regenerate with `make generate`, i.e.
//
//	cd loader && BPF_CLANG=clang-16 BPF_CFLAGS="-O2 -g -Wall -Werror" go generate ./...
//
// BPF_CLANG and BPF_CFLAGS must be set (the Makefile does). -mcpu=v3 (kernel
// >= 5.1: 32-bit jumps and ALU) comes after bpf2go's default -mcpu=v1 and
// therefore wins; -nostdinc keeps the host's /usr/include out, so the object
// only depends on bpf/ and the compiler (byte-identical across machines with
// the same clang).
//go:generate go tool bpf2go -cc $BPF_CLANG -cflags $BPF_CFLAGS -target bpfel -type probe_key -type flow_val -type tp_event -type tp_stats -type sent_set Turnpath ../bpf/turnpath.c -- -nostdinc -I../bpf/headers -mcpu=v3
//go:generate go tool bpf2go -cc $BPF_CLANG -cflags $BPF_CFLAGS -target bpfel -type gen_slot Gen ../bpf/gen.c -- -nostdinc -I../bpf/headers -mcpu=v3
