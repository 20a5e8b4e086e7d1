package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Probe protocols accepted in Config.Proto.
const (
	ProtoICMP   uint8 = unix.IPPROTO_ICMP   // ICMP echo probes (ICMPv6 on IPv6)
	ProtoTCP    uint8 = unix.IPPROTO_TCP    // TCP SYN probes
	ProtoUDP    uint8 = unix.IPPROTO_UDP    // UDP probes (including STUN/TURN payloads)
	ProtoICMPv6 uint8 = unix.IPPROTO_ICMPV6 // same as ProtoICMP
)

// Config is what the BPF programs are specialised for; it is baked into the
// programs as `volatile const` variables at load time.
type Config struct {
	// Proto is the probe protocol: ProtoUDP, ProtoTCP or ProtoICMP
	// (ProtoICMPv6 is accepted as a synonym; both families are handled).
	Proto uint8
	// SportLo..SportHi is the probes' source port range (inclusive). For
	// ICMP echo probes it is the range of the flow bases F (probe.Flow.SPort):
	// a packet is a probe iff identifier +' sequence (ones' complement sum)
	// is in the range and the sequence is a valid probe id.
	SportLo, SportHi uint16
	// DPort is the UDP/TCP destination port (ignored for ICMP).
	DPort uint16
	// Nonce is written big endian into STUN transaction id bytes 0..3.
	// 0 disables STUN answer matching.
	Nonce uint32
	// NonceOff is where the probes carry Nonce, counted from the transport header:
	// NonceOffSTUN for UDP probes with a STUN/TURN/MS-TURN payload, NonceOffEcho for
	// ICMP echo probes, 0 when they carry none (TCP, other payloads). TC egress then
	// records only probes with the nonce, and a reply whose quote shows another value
	// is someone else's.
	NonceOff uint16
	// Drop makes the programs drop replies verified as this run's (see bpf/turnpath.c).
	Drop bool
}

// Where probes carry the nonce (Config.NonceOff): UDP header + STUN transaction id
// bytes 0..3, or the first 4 bytes of echo data.
const (
	NonceOffSTUN uint16 = 8 + 8
	NonceOffEcho uint16 = 8
)

func (c Config) validate() error {
	switch c.Proto {
	case ProtoUDP, ProtoTCP:
		if c.DPort == 0 {
			return fmt.Errorf("loader: config: DPort must be set for protocol %d", c.Proto)
		}
	case ProtoICMP, ProtoICMPv6:
	default:
		return fmt.Errorf("loader: config: unsupported protocol %d (want 17, 6, 1 or 58)", c.Proto)
	}
	if c.SportLo == 0 || c.SportLo > c.SportHi {
		return fmt.Errorf("loader: config: bad source port range %d-%d", c.SportLo, c.SportHi)
	}
	if c.NonceOff != 0 && c.NonceOff != NonceOffSTUN && c.NonceOff != NonceOffEcho {
		return fmt.Errorf("loader: config: nonce offset %d (want 0, %d or %d)", c.NonceOff, NonceOffEcho, NonceOffSTUN)
	}
	return nil
}

// Objects are the loaded BPF programs and maps for one Config.
type Objects struct {
	cfg  Config
	objs TurnpathObjects
	// spec loads the programs a run needs only sometimes (legacy TC egress before
	// kernel 6.6, TCX ingress when XDP is taken) when it does: every program costs a
	// verifier pass at start-up.
	spec *ebpf.CollectionSpec
	mu   sync.Mutex
	bss  *ebpf.Map // the .bss section: the run's configuration (struct tp_cfg)
	// quiet is cfg.rb_quiet in the memory-mapped .bss (nil when it cannot be mapped).
	quiet    *uint32
	quietMem []byte
	// startNs is the run's cfg.start_ns (0 for objects loaded for the run): the
	// generation of its `flows` entries.
	startNs uint64

	// Pinning (pin.go): the slot directory and its flock, how the objects were
	// obtained, why not pinned, and whether the reader must first drain what an
	// earlier run of the slot left in the ring buffer.
	pinDir      string
	lock        int
	how         How
	pinNote     string
	drainOnOpen bool
}

// VerifierError is returned by Load when the kernel's verifier rejects a
// program. Error() is a one-line summary; format it with %+v for the full
// verifier log.
type VerifierError struct {
	Err     *ebpf.VerifierError
	wrapped error // the collection loader's error, naming the program
}

func (e *VerifierError) Error() string {
	msg := e.Err.Error()
	if e.wrapped != nil {
		msg = e.wrapped.Error()
	}
	return "loader: BPF verifier rejected turnpath: " + msg
}

func (e *VerifierError) Unwrap() error { return e.Err }

// Format implements fmt.Formatter: %+v prints the summary and then the
// complete verifier log.
func (e *VerifierError) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('+') {
		fmt.Fprintf(f, "%s\n%+v", e.Error(), e.Err)
		return
	}
	io.WriteString(f, e.Error())
}

// ErrPermission is wrapped by Load and Attach errors caused by missing
// privileges.
var ErrPermission = errors.New("permission denied: loading and attaching BPF needs root, or CAP_BPF + CAP_NET_ADMIN (+ CAP_PERFMON) on kernels >= 5.8, or CAP_SYS_ADMIN")

func wrapPerm(what string, err error) error {
	if errors.Is(err, unix.EPERM) {
		return fmt.Errorf("loader: %s: %w (%w)", what, ErrPermission, err)
	}
	return nil
}

// Spec returns the embedded CollectionSpec with cfg as the initial value of the
// programs' configuration (nothing loaded), e.g. for inspection or custom loading.
func Spec(cfg Config) (*ebpf.CollectionSpec, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	spec, err := LoadTurnpath()
	if err != nil {
		return nil, fmt.Errorf("loader: %w", err)
	}
	v, ok := spec.Variables[TurnpathVarCfg]
	if !ok {
		return nil, fmt.Errorf("loader: BPF object has no variable %q", TurnpathVarCfg)
	}
	if err := v.Set(cfg.raw(0)); err != nil {
		return nil, fmt.Errorf("loader: set %s: %w", TurnpathVarCfg, err)
	}
	return spec, nil
}

// raw is the kernel form of the configuration for a run that started at startNs.
func (c Config) raw(startNs uint64) TurnpathTpCfg {
	r := TurnpathTpCfg{StartNs: startNs, Nonce: c.Nonce, SportLo: c.SportLo, SportHi: c.SportHi,
		Dport: c.DPort, NonceOff: c.NonceOff, Proto: c.Proto}
	if c.Drop {
		r.Drop = 1
	}
	return r
}

// writeConfig writes the run's configuration, with its start time, into the programs'
// .bss: how a run takes over pinned objects an earlier run loaded.
func (o *Objects) writeConfig() error {
	o.startNs = KernelNow()
	if err := o.bss.Put(uint32(0), o.cfg.raw(o.startNs)); err != nil {
		return fmt.Errorf("loader: write configuration: %w", err)
	}
	o.mapQuiet()
	return nil
}

// mapQuiet maps the .bss (created BPF_F_MMAPABLE where the kernel can) so SetQuiet is a
// plain store.
func (o *Objects) mapQuiet() {
	if o.quiet != nil || o.bss.Flags()&unix.BPF_F_MMAPABLE == 0 {
		return
	}
	mem, err := unix.Mmap(o.bss.FD(), 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return
	}
	var c TurnpathTpCfg
	o.quiet = (*uint32)(unsafe.Pointer(&mem[unsafe.Offsetof(c.RbQuiet)]))
	o.quietMem = mem
}

// SetQuiet tells the programs whether Go drains the ring buffer on its own (no wakeup per
// event: BPF_RB_NO_WAKEUP until the ring is half full). It reports false when that cannot
// be told (no memory-mapped .bss): every event then wakes the reader as usual.
func (o *Objects) SetQuiet(on bool) bool {
	if o.quiet == nil {
		return false
	}
	v := uint32(0)
	if on {
		v = 1
	}
	atomic.StoreUint32(o.quiet, v)
	return true
}

// Load specialises the embedded BPF objects for cfg and loads them into the
// kernel, for this run only (Open reuses pinned ones). Nothing is attached yet.
func Load(cfg Config) (*Objects, error) {
	spec, err := Spec(cfg)
	if err != nil {
		return nil, err
	}
	// Only needed before kernel 5.11 (memcg accounting); harmless after.
	_ = rlimit.RemoveMemlock()

	o := &Objects{cfg: cfg, spec: spec, lock: -1}
	// What every run attaches: the maps, TCX egress and XDP.
	var core struct {
		TurnpathMaps
		Bss       *ebpf.Map     `ebpf:".bss"`
		TcxEgress *ebpf.Program `ebpf:"tcx_egress"`
		XdpRx     *ebpf.Program `ebpf:"xdp_rx"`
	}
	if err := spec.LoadAndAssign(&core, nil); err != nil {
		return nil, loadErr(err)
	}
	o.objs.TurnpathMaps, o.objs.TcxEgress, o.objs.XdpRx, o.bss = core.TurnpathMaps, core.TcxEgress, core.XdpRx, core.Bss
	o.mapQuiet()
	return o, nil
}

func loadErr(err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		return &VerifierError{Err: ve, wrapped: err}
	}
	if perr := wrapPerm("load BPF objects", err); perr != nil {
		return perr
	}
	return fmt.Errorf("loader: load BPF objects: %w", err)
}

// tcEgress is the legacy clsact program, loaded the first time it is needed.
func (o *Objects) tcEgress() (*ebpf.Program, error) {
	return o.lazy("tc_egress", &o.objs.TcEgress, func(opts *ebpf.CollectionOptions) (*ebpf.Program, error) {
		var p struct {
			P *ebpf.Program `ebpf:"tc_egress"`
		}
		err := o.spec.LoadAndAssign(&p, opts)
		return p.P, err
	})
}

// tcxIngress is the TCX ingress matcher, loaded the first time it is needed.
func (o *Objects) tcxIngress() (*ebpf.Program, error) {
	return o.lazy("tcx_ingress", &o.objs.TcxIngress, func(opts *ebpf.CollectionOptions) (*ebpf.Program, error) {
		var p struct {
			P *ebpf.Program `ebpf:"tcx_ingress"`
		}
		err := o.spec.LoadAndAssign(&p, opts)
		return p.P, err
	})
}

// lazy loads the program in *slot the first time it is asked for, with the run's maps
// (and pins it into the run's slot for later runs). Objects from a pinned slot have no
// spec: it is parsed then.
func (o *Objects) lazy(name string, slot **ebpf.Program, load func(*ebpf.CollectionOptions) (*ebpf.Program, error)) (*ebpf.Program, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if *slot == nil {
		if o.spec == nil {
			spec, err := Spec(o.cfg)
			if err != nil {
				return nil, err
			}
			o.spec = spec
		}
		m := o.objs.TurnpathMaps
		p, err := load(&ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{
			"events": m.Events, "flows": m.Flows, "sent": m.Sent, "stats": m.Stats, ".bss": o.bss}})
		if err != nil {
			return nil, loadErr(err)
		}
		*slot = p
		o.pinLazy(name, p)
	}
	return *slot, nil
}

// Config returns the configuration the objects were loaded with.
func (o *Objects) Config() Config { return o.cfg }

// Close releases the programs and maps. Attachments hold their own
// references: close them first (or they keep the programs alive).
func (o *Objects) Close() error {
	err := o.objs.Close()
	if o.quietMem != nil {
		o.quiet = nil
		_ = unix.Munmap(o.quietMem)
		o.quietMem = nil
	}
	if o.bss != nil {
		err = errors.Join(err, o.bss.Close())
	}
	if o.lock >= 0 {
		// Releases the slot to the next run (the pins stay).
		err = errors.Join(err, unix.Close(o.lock))
		o.lock = -1
	}
	return err
}

// ProbeKey identifies one probe: the key of the `sent` map.
type ProbeKey struct {
	Dst   netip.Addr // probe destination (IPv4 or IPv6)
	SPort uint16     // source port; ICMP echo: the flow base F = identifier +' seq
	ID    uint16     // probe id (ttl | attempt<<8)
}

// addr16 is the kernel form of an address: IPv4 as ::ffff:a.b.c.d.
func addr16(a netip.Addr) [16]byte {
	return a.As16()
}

// addrFrom16 turns a kernel address back into a netip.Addr, unmapping IPv4.
func addrFrom16(b [16]byte) netip.Addr {
	return netip.AddrFrom16(b).Unmap()
}

func (k ProbeKey) raw() TurnpathProbeKey {
	return TurnpathProbeKey{Daddr: addr16(k.Dst), Sport: k.SPort, Id: k.ID}
}

// SetFlow registers one of the run's flows under its flowtag: XDP turns a STUN answer's
// flowtag back into its flow, and TC egress records a probe carrying the run's nonce and a
// flowtag only when the flowtag stands for the probe's own flow. The table has 65536
// slots (tag & 0xffff): a tag whose slot another live flow of the run holds is refused.
func (o *Objects) SetFlow(tag uint32, daddr netip.Addr, sport uint16) error {
	if !daddr.IsValid() {
		return fmt.Errorf("loader: SetFlow: invalid address")
	}
	if tag == 0 {
		return fmt.Errorf("loader: SetFlow: flowtag 0")
	}
	idx := tag & 0xffff
	var cur TurnpathFlowVal
	if err := o.objs.Flows.Lookup(idx, &cur); err != nil {
		return fmt.Errorf("loader: SetFlow %d: %w", tag, err)
	}
	if cur.Tag != 0 && cur.Tag != tag && cur.Gen == o.startNs {
		return fmt.Errorf("loader: SetFlow %d: slot held by flowtag %d (more than 65536 flows at once)", tag, cur.Tag)
	}
	val := TurnpathFlowVal{Daddr: addr16(daddr), Sport: sport, Tag: tag, Gen: o.startNs}
	if err := o.objs.Flows.Put(idx, val); err != nil {
		return fmt.Errorf("loader: SetFlow %d: %w", tag, err)
	}
	return nil
}

// DeleteFlow removes a flow set with SetFlow.
func (o *Objects) DeleteFlow(tag uint32) error {
	idx := tag & 0xffff
	var cur TurnpathFlowVal
	if err := o.objs.Flows.Lookup(idx, &cur); err != nil {
		return fmt.Errorf("loader: DeleteFlow %d: %w", tag, err)
	}
	if cur.Tag != tag || cur.Gen != o.startNs {
		return nil // not there (or another flow's now)
	}
	if err := o.objs.Flows.Put(idx, TurnpathFlowVal{}); err != nil {
		return fmt.Errorf("loader: DeleteFlow %d: %w", tag, err)
	}
	return nil
}

// flowOf returns the run's flow under tag, as the programs see it (tests).
func (o *Objects) flowOf(tag uint32) (TurnpathFlowVal, bool) {
	var cur TurnpathFlowVal
	if tag == 0 || o.objs.Flows.Lookup(tag&0xffff, &cur) != nil || cur.Tag != tag || cur.Gen != o.startNs {
		return TurnpathFlowVal{}, false
	}
	return cur, true
}

// SentTimestamp returns the kernel tx timestamp (bpf_ktime_get_ns, i.e.
// CLOCK_MONOTONIC ns) TC egress recorded for the probe, if any (and this run's).
func (o *Objects) SentTimestamp(key ProbeKey) (uint64, bool) {
	raw := key.raw()
	var set TurnpathSentSet
	if err := o.objs.Sent.Lookup(sentSetOf(&raw), &set); err != nil {
		return 0, false
	}
	for _, w := range set.Way {
		if w.Key == raw && w.Ts != 0 && w.Ts >= o.startNs {
			return w.Ts, true
		}
	}
	return 0, false
}

// sentKeys lists the probes `sent` holds (tests).
func (o *Objects) sentKeys() ([]ProbeKey, error) {
	var (
		idx uint32
		set TurnpathSentSet
		out []ProbeKey
	)
	it := o.objs.Sent.Iterate()
	for it.Next(&idx, &set) {
		for _, w := range set.Way {
			if w.Ts != 0 {
				out = append(out, ProbeKey{Dst: addrFrom16(w.Key.Daddr), SPort: w.Key.Sport, ID: w.Key.Id})
			}
		}
	}
	return out, it.Err()
}

// sentSetOf is the `sent` set of a probe key: sent_set_of in bpf/turnpath.c, over the
// key's five 32-bit words in host order.
func sentSetOf(k *TurnpathProbeKey) uint32 {
	b := unsafe.Slice((*byte)(unsafe.Pointer(k)), 20)
	w := func(i int) uint32 { return binary.NativeEndian.Uint32(b[4*i:]) }
	h := w(0) * 0x9e3779b1
	h = (h ^ w(1)) * 0x85ebca77
	h = (h ^ w(2)) * 0xc2b2ae3d
	h = (h ^ w(3)) * 0x27d4eb2f
	h = (h ^ w(4)) * 0x165667b1
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h & (sentSets - 1)
}

// sentSets is SENT_SETS in bpf/turnpath.h.
const sentSets = 1 << 15

// Stats are the BPF counters summed over all CPUs.
type Stats struct {
	TxSeen          uint64 // probes recorded by TC egress
	TxUpdateErr     uint64 // `sent` updates that failed
	RxMatched       uint64 // replies matched and emitted by XDP
	RxNoTx          uint64 // matched replies without a `sent` entry
	RxUnmatchedICMP uint64 // ICMP errors / echo replies that were not ours
	RingbufDrops    uint64 // events lost because the ring buffer was full
	Truncated       uint64 // candidate replies too short to parse
	STUNNoFlow      uint64 // STUN answers with an unknown flowtag
	TxForeign       uint64 // probe-shaped packets TC egress did not take as this run's
	RxForeign       uint64 // replies to probes that were not this run's (passed untouched)
}

// Stats reads and sums the per-CPU counters.
func (o *Objects) Stats() (Stats, error) {
	var per []TurnpathTpStats
	if err := o.objs.Stats.Lookup(uint32(0), &per); err != nil {
		return Stats{}, fmt.Errorf("loader: read stats: %w", err)
	}
	var s Stats
	for _, c := range per {
		s.TxSeen += c.TxSeen
		s.TxUpdateErr += c.TxUpdateErr
		s.RxMatched += c.RxMatched
		s.RxNoTx += c.RxNoTx
		s.RxUnmatchedICMP += c.RxUnmatchedIcmp
		s.RingbufDrops += c.RingbufDrops
		s.Truncated += c.Truncated
		s.STUNNoFlow += c.StunNoFlow
		s.TxForeign += c.TxForeign
		s.RxForeign += c.RxForeign
	}
	return s, nil
}

// Verdicts returned by RunXDP and RunTCEgress.
const (
	XDPDrop     uint32 = 1
	XDPPass     uint32 = 2
	TCActUnspec uint32 = 0xffffffff // TC_ACT_UNSPEC == TCX_NEXT == -1: "no opinion", the packet goes on
)

// RunXDP runs the XDP program once on an Ethernet frame (BPF_PROG_TEST_RUN)
// and returns its verdict (XDPPass or XDPDrop). Events go to the ring buffer
// as for real traffic. For tests and benchmarks.
func (o *Objects) RunXDP(frame []byte) (uint32, error) {
	return o.objs.XdpRx.Run(&ebpf.RunOptions{Data: frame})
}

// RunTCXIngress runs the TCX ingress matcher (the same matching as XDP) once on an
// Ethernet frame and returns its verdict: TCXDrop or TCActUnspec (TCX_NEXT).
func (o *Objects) RunTCXIngress(frame []byte) (uint32, error) {
	p, err := o.tcxIngress()
	if err != nil {
		return 0, err
	}
	return p.Run(&ebpf.RunOptions{Data: frame})
}

// TCXDrop is the TCX ingress verdict for a reply of ours that is dropped.
const TCXDrop uint32 = 2

// RunTCEgress runs the TC egress program once on an Ethernet frame and returns
// its verdict (always TCActUnspec). Probes are recorded in `sent`.
func (o *Objects) RunTCEgress(frame []byte) (uint32, error) {
	p, err := o.tcEgress()
	if err != nil {
		return 0, err
	}
	return p.Run(&ebpf.RunOptions{Data: frame})
}

// KernelNow returns the clock bpf_ktime_get_ns uses (CLOCK_MONOTONIC), to relate event
// timestamps to the present. It is the Go runtime's monotonic clock, read through the
// vDSO without a system call (unix.ClockGettime is a real syscall: ~6 % of a core at a
// high probe rate); on Linux the runtime's nanotime is CLOCK_MONOTONIC itself
// (TestKernelNowIsMonotonicClock checks it against clock_gettime).
func KernelNow() uint64 { return uint64(nanotime()) }

//go:linkname nanotime runtime.nanotime
func nanotime() int64
