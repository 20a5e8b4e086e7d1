package engine

import "github.com/turnpath/turnpath/loader"

// KernelStats reads the BPF programs' counters (probes seen at TC egress, replies
// matched, ring-buffer drops, map lookups that found nothing), summed over the CPUs.
// It is safe to call from another goroutine while the engine runs (package metrics
// reads it at every scrape); after Close it returns an error.
func (e *EBPF) KernelStats() (loader.Stats, error) { return e.objs.Stats() }
