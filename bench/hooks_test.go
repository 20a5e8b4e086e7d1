package bench

import (
	"math"
	"testing"
)

func TestProfileShares(t *testing.T) {
	report := []byte(`# Total Lost Samples: 0
#
# Samples: 6K of event 'cpu-clock:pppH'
# Event count (accounting in ms): 1522
#
# Children      Self  Symbol
# ........  ........  ......
#
    75.71%     0.21%  [.] syscall.Syscall6.abi0
    53.94%     0.23%  [k] __x64_sys_sendto
    53.71%     0.42%  [k] __sys_sendto
    25.44%     0.63%  [k] net_rx_action
    12.83%     0.71%  [k] bpf_prog_c2ebc1cea4f98100_xdp_rx
    12.27%     0.48%  [.] github.com/cilium/ebpf/ringbuf.(*Reader).ReadInto
    11.30%     0.50%  [k] bpf_prog_94f796b5d1afb89a_tcx_egress
     8.47%     0.21%  [k] __schedule
     1.01%     0.88%  [k] bpf_prog_43d49144f0ce86d4_xdp_reflect
     1.78%     1.18%  [.] github.com/turnpath/turnpath/probe.(*Builder).Build
     9.92%     0.25%  [k] irq_work_queue
     0.10%     0.10%  [k] xdp_rx
# comment
`)
	got, samples := profileShares(report)
	if samples != 6000 {
		t.Errorf("samples %d, want 6000", samples)
	}
	want := map[string]float64{"sendto": 53.71, "softirq": 25.44, "xdp": 12.83, "read": 12.27, "tc": 11.30,
		"schedule": 8.47, "reflector": 1.01, "build": 1.78, "wakeup": 9.92}
	for k, v := range want {
		if math.Abs(got[k]-v) > 1e-9 {
			t.Errorf("%s: %v, want %v", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %v", got)
	}
}

func TestTargetsText(t *testing.T) {
	for n, want := range map[int]string{1: "1 target", 1000: "1 000 targets", 100_000: "100 000 targets", 12: "12 targets", 1_000_000: "1 000 000 targets"} {
		if got := targetsText(n); got != want {
			t.Errorf("%d: %q, want %q", n, got, want)
		}
	}
}

func TestKilo(t *testing.T) {
	if got := kilo(Summarize([]float64{81_200, 79_000, 83_500})); got != "81.2k (79.0–83.5)" {
		t.Errorf("kilo: %q", got)
	}
	if got := kilo(Summary{}); got != "–" {
		t.Errorf("kilo of nothing: %q", got)
	}
}
