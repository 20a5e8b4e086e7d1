package bench

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/turnpath/turnpath/reflector/reflectortest"
)

// TestCapacity is a short capacity run of every way the section measures (the eBPF
// engine's batches on AF_PACKET, its TX ring and raw sendmmsg, sendto per probe, and the
// socket engine; 100k probes each, TP_CAPACITY_PROBES sets more): everything sent must be
// answered and matched, by the method the way names.
func TestCapacity(t *testing.T) {
	n := reflectortest.Up(t, "rft", 8)
	probes := 100_000
	if s := os.Getenv("TP_CAPACITY_PROBES"); s != "" {
		probes, _ = strconv.Atoi(s)
	}
	cpu := 0
	if s := os.Getenv("TP_CAPACITY_CPU"); s != "" {
		cpu, _ = strconv.Atoi(s)
	}
	for _, v := range capEngines {
		kind := v.Key
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		o := v.opts(probes, cpu)
		o.Targets = 0 // the default
		res, err := Capacity(ctx, n, o)
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		b, _ := json.Marshal(res)
		t.Logf("%s", b)
		if res.Sent != int64(probes) || res.Answered < uint64(res.Sent) {
			t.Errorf("%s: sent %d of %d, reflector answered %d", kind, res.Sent, probes, res.Answered)
		}
		// Some loss is allowed at full speed (a ring buffer or socket buffer overflows
		// while one core does everything), but most must be matched.
		if res.Matched < res.Sent*9/10 {
			t.Errorf("%s: matched %d of %d", kind, res.Matched, res.Sent)
		}
		if v.Engine == "ebpf" && res.Kernel != res.Matched {
			t.Errorf("%s: %d of %d matched replies with kernel timestamps", kind, res.Kernel, res.Matched)
		}
		// Each way sent every probe by its own method (the reflector network's
		// neighbour entries are permanent: AF_PACKET from the first batch).
		if v.Engine == "ebpf" {
			st := res.Send
			by := map[string]uint64{"ebpf-gen": st.Gen, "ebpf": st.PacketMmsg, "ebpf-ring": st.Ring, "ebpf-mmsg": st.RawMmsg, "ebpf-before": st.SendTo}
			if by[kind] != uint64(res.Sent) {
				t.Errorf("%s: send stats %+v, want all %d probes by its method", kind, *st, res.Sent)
			}
		}
	}
}
