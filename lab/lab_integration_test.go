package lab

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestLabIntegration builds a lab (as root), checks it against the ground truth and
// tears it down again. It never touches the host namespace and asserts that too.
func TestLabIntegration(t *testing.T) {
	if os.Geteuid() != 0 || checkPrivileges() != nil {
		t.Skip("needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN)")
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	host := hostSnapshot(t)
	prefix := fmt.Sprintf("tpt%06d", rand.IntN(1_000_000))
	t.Cleanup(func() {
		if anythingPresent(prefix) {
			if err := Down(context.Background(), prefix); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	})

	upStart := time.Now()
	l, err := Up(ctx, Options{Prefix: prefix, Profile: ProfileFast})
	if err != nil {
		t.Fatalf("Up: %v", err)
	}
	t.Logf("lab %s up in %v", prefix, time.Since(upStart).Round(time.Millisecond))
	st, err := readState(prefix)
	if err != nil || st == nil || !st.Complete {
		t.Fatalf("state after Up: %+v, %v", st, err)
	}

	t.Run("Bindings", func(t *testing.T) { testBindings(t, l) })
	t.Run("Allocate401", func(t *testing.T) { testAllocate(t, l) })
	t.Run("TTL/ipv4", func(t *testing.T) { testTTL(t, l, IPv4) })
	t.Run("TTL/ipv6", func(t *testing.T) { testTTL(t, l, IPv6) })
	t.Run("TTL/bound", func(t *testing.T) { testTTLBound(t, l) })
	t.Run("Unreachable", func(t *testing.T) { testUnreachable(t, l) })
	t.Run("Silent", func(t *testing.T) { testSilentCounters(t, l) })
	t.Run("PTR", func(t *testing.T) { testPTR(t, l) })
	t.Run("Repeat", func(t *testing.T) { testRepeatUp(t, l) })
	t.Run("Status", func(t *testing.T) {
		s, err := Status(prefix)
		if err != nil || !s.Up() {
			t.Fatalf("Status: %v / %v", err, s.Err())
		}
		var b strings.Builder
		s.Print(&b)
		if !strings.Contains(b.String(), "up (profile fast") {
			t.Errorf("status output:\n%s", b.String())
		}
	})

	downStart := time.Now()
	if err := Down(ctx, prefix); err != nil {
		t.Fatalf("Down: %v", err)
	}
	t.Logf("lab down in %v", time.Since(downStart).Round(time.Millisecond))
	for _, n := range DefaultTopology().Nodes {
		if nsExists(NSName(prefix, n.Name)) {
			t.Errorf("namespace %s left after Down", NSName(prefix, n.Name))
		}
	}
	for _, p := range st.Processes {
		if procAlive(p.PID) {
			t.Errorf("%s (pid %d) still running after Down", p.Name, p.PID)
		}
	}
	for _, p := range []string{stateDir(prefix), clientEtcDir(prefix)} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s left after Down", p)
		}
	}
	if err := Down(ctx, prefix); !errors.Is(err, ErrNotUp) {
		t.Errorf("second Down: got %v, want ErrNotUp", err)
	}
	if got := hostSnapshot(t); got != host {
		t.Errorf("host namespace changed:\nbefore:\n%s\nafter:\n%s", host, got)
	}
	t.Logf("whole test %v", time.Since(start).Round(time.Millisecond))
}

// hostSnapshot captures the host namespace's links, routes and the sysctls the lab
// sets in its own namespaces.
func hostSnapshot(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatalf("list host links: %v", err)
	}
	for _, l := range links {
		fmt.Fprintf(&b, "link %s %v\n", l.Attrs().Name, l.Attrs().Flags)
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := netlink.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
		if err != nil {
			t.Fatalf("list host routes: %v", err)
		}
		for _, r := range routes {
			fmt.Fprintf(&b, "route %v\n", r)
		}
	}
	for _, s := range sysctlsFor(Node{Kind: KindRouter, Silent: true}, ProfileFast) {
		v, _ := os.ReadFile("/proc/sys/" + strings.ReplaceAll(s.key, ".", "/"))
		fmt.Fprintf(&b, "%s=%s\n", s.key, strings.TrimSpace(string(v)))
	}
	return b.String()
}

func udpNet(f Family) string {
	if f == IPv4 {
		return "udp4"
	}
	return "udp6"
}

// firstTarget returns the first target of group in family f, skipping network-looking .0.
func firstTarget(l *Lab, group string, f Family) netip.Addr {
	for _, a := range l.Targets(group) {
		if FamilyOf(a) == f && a.As16()[15] != 0 {
			return a
		}
	}
	return netip.Addr{}
}

// testBindings: a Binding gets a success answer; the wildcard group answers from t1's
// link address, the bound group from the probed address.
func testBindings(t *testing.T, l *Lab) {
	for _, g := range l.Groups() {
		for _, f := range []Family{IPv4, IPv6} {
			dst := firstTarget(l, g, f)
			tt, _ := l.Truth().TargetTruth(dst)
			c, err := l.ListenPacket(udpNet(f), ":0")
			if err != nil {
				t.Fatal(err)
			}
			from, err := stunBinding(c, netip.AddrPortFrom(dst, 3478), 2*time.Second)
			c.Close()
			if err != nil {
				t.Errorf("%s %v: %v", g, dst, err)
				continue
			}
			if from != tt.STUNReplyFrom() {
				t.Errorf("%s %v: answer from %v, truth says %v", g, dst, from, tt.STUNReplyFrom())
			}
			if g == "wildcard" && from == dst || g == "bound" && from != dst {
				t.Errorf("%s %v: answer from %v", g, dst, from)
			}
			t.Logf("%s %v: Binding success from %v", g, dst, from)
		}
	}
}

// testAllocate: an unauthenticated Allocate gets 401 Unauthorized.
func testAllocate(t *testing.T, l *Lab) {
	for _, g := range l.Groups() {
		for _, f := range []Family{IPv4, IPv6} {
			dst := firstTarget(l, g, f)
			c, err := l.ListenPacket(udpNet(f), ":0")
			if err != nil {
				t.Fatal(err)
			}
			req := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
				stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}})
			resp, _, err := stunExchange(c, netip.AddrPortFrom(dst, 3478), req, 2*time.Second)
			c.Close()
			if err != nil {
				t.Errorf("%s %v: %v", g, dst, err)
				continue
			}
			var code stun.ErrorCodeAttribute
			if err := code.GetFrom(resp); err != nil || resp.Type.Class != stun.ClassErrorResponse || code.Code != 401 {
				t.Errorf("%s %v: got %v %v (%v), want 401", g, dst, resp.Type, code, err)
			}
		}
	}
}

// errSocket is a UDP socket in the client namespace with IP(V6)_RECVERR on, so ICMP
// errors about its packets land in its error queue with the offender's address.
type errSocket struct {
	fd int
	f  Family
}

func newErrSocket(l *Lab, f Family, sport int) (*errSocket, error) {
	s := &errSocket{fd: -1, f: f}
	err := l.Do(func() error {
		dom := unix.AF_INET
		if f == IPv6 {
			dom = unix.AF_INET6
		}
		fd, err := unix.Socket(dom, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
		if err != nil {
			return err
		}
		s.fd = fd
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open socket in client ns: %w", err)
	}
	var sa unix.Sockaddr = &unix.SockaddrInet4{Port: sport}
	lvl, opt := unix.IPPROTO_IP, unix.IP_RECVERR
	if f == IPv6 {
		sa = &unix.SockaddrInet6{Port: sport}
		lvl, opt = unix.IPPROTO_IPV6, unix.IPV6_RECVERR
	}
	if err := unix.SetsockoptInt(s.fd, lvl, opt, 1); err != nil {
		s.close()
		return nil, fmt.Errorf("set recverr: %w", err)
	}
	if err := unix.Bind(s.fd, sa); err != nil {
		s.close()
		return nil, fmt.Errorf("bind port %d: %w", sport, err)
	}
	return s, nil
}

func (s *errSocket) close() { unix.Close(s.fd) }

// send sends one probe with the given TTL; the payload carries the TTL so the error
// queue entry (which returns the quoted payload) says which probe it was.
func (s *errSocket) send(dst netip.Addr, ttl int) error { return s.sendTo(dst, 3478, ttl) }

func (s *errSocket) sendTo(dst netip.Addr, port, ttl int) error {
	var sa unix.Sockaddr
	if s.f == IPv4 {
		sa = &unix.SockaddrInet4{Port: port, Addr: dst.As4()}
		if err := unix.SetsockoptInt(s.fd, unix.IPPROTO_IP, unix.IP_TTL, ttl); err != nil {
			return err
		}
	} else {
		sa = &unix.SockaddrInet6{Port: port, Addr: dst.As16()}
		if err := unix.SetsockoptInt(s.fd, unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, ttl); err != nil {
			return err
		}
	}
	payload := []byte{'t', 'p', 'l', 'a', 'b', byte(ttl)}
	for try := 0; ; try++ {
		err := unix.Sendto(s.fd, payload, 0, sa)
		// An ICMP error for an earlier probe sets the socket's pending error, which the
		// next send reports (and clears) instead of sending: just send again.
		if err == nil || try > 3 || !(errors.Is(err, unix.EHOSTUNREACH) || errors.Is(err, unix.ENETUNREACH) || errors.Is(err, unix.ECONNREFUSED)) {
			return err
		}
	}
}

// icmpReply is one Time Exceeded (or other ICMP error) from the error queue.
type icmpReply struct {
	ttl    int
	from   netip.Addr
	icmpTE bool
}

// drain reads the error queue until deadline.
func (s *errSocket) drain(deadline time.Time) ([]icmpReply, error) {
	var out []icmpReply
	buf := make([]byte, 256)
	oob := make([]byte, 512)
	for {
		wait := time.Until(deadline)
		if wait <= 0 {
			return out, nil
		}
		pfd := []unix.PollFd{{Fd: int32(s.fd), Events: 0}} // POLLERR is always reported
		n, err := unix.Poll(pfd, int(wait.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return out, err
		}
		if n == 0 {
			return out, nil
		}
		for {
			n, oobn, _, _, err := unix.Recvmsg(s.fd, buf, oob, unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
			if errors.Is(err, unix.EAGAIN) {
				break
			}
			if err != nil {
				return out, fmt.Errorf("read error queue: %w", err)
			}
			msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
			if err != nil {
				return out, err
			}
			for _, m := range msgs {
				if !(m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_RECVERR) &&
					!(m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_RECVERR) {
					continue
				}
				if len(m.Data) < 16 {
					continue
				}
				origin, typ := m.Data[4], m.Data[5]
				r := icmpReply{ttl: -1}
				if n >= 6 && string(buf[:5]) == "tplab" {
					r.ttl = int(buf[5])
				}
				off := m.Data[16:]
				switch {
				case origin == unix.SO_EE_ORIGIN_ICMP && len(off) >= 8 && binary.LittleEndian.Uint16(off) == unix.AF_INET:
					r.from = netip.AddrFrom4([4]byte(off[4:8]))
					r.icmpTE = typ == 11
				case origin == unix.SO_EE_ORIGIN_ICMP6 && len(off) >= 24 && binary.LittleEndian.Uint16(off) == unix.AF_INET6:
					r.from = netip.AddrFrom16([16]byte(off[8:24]))
					r.icmpTE = typ == 3
				default:
					continue
				}
				out = append(out, r)
			}
		}
	}
}

// traceFlow probes dst from sport with TTL 1..maxTTL at once and returns, per TTL,
// the addresses that sent Time Exceeded.
func traceFlow(l *Lab, f Family, dst netip.Addr, sport, maxTTL int) (map[int][]netip.Addr, []icmpReply, error) {
	s, err := newErrSocket(l, f, sport)
	if err != nil {
		return nil, nil, err
	}
	defer s.close()
	for ttl := 1; ttl <= maxTTL; ttl++ {
		if err := s.send(dst, ttl); err != nil {
			return nil, nil, fmt.Errorf("send ttl %d: %w", ttl, err)
		}
	}
	replies, err := s.drain(time.Now().Add(300 * time.Millisecond))
	if err != nil {
		return nil, nil, err
	}
	byTTL := map[int][]netip.Addr{}
	for _, r := range replies {
		if r.icmpTE && r.ttl > 0 {
			byTTL[r.ttl] = append(byTTL[r.ttl], r.from)
		}
	}
	return byTTL, replies, nil
}

// matchPath returns the truth path that explains the observation exactly: every
// non-silent router before the destination answered from its truth address, silent
// routers and the destination (coturn listens on the port) did not answer.
func matchPath(tt *TargetTruth, obs map[int][]netip.Addr, maxTTL int) (Path, bool) {
	for _, p := range tt.Paths() {
		ok := true
		for ttl := 1; ttl <= maxTTL && ok; ttl++ {
			got := obs[ttl]
			var want []netip.Addr
			if ttl < len(p) && !p[ttl-1].Silent {
				want = []netip.Addr{p[ttl-1].Addr}
			}
			ok = slices.Equal(got, want)
		}
		if ok {
			return p, true
		}
	}
	return nil, false
}

func pathString(obs map[int][]netip.Addr, maxTTL int) string {
	var b strings.Builder
	for ttl := 1; ttl <= maxTTL; ttl++ {
		fmt.Fprintf(&b, " %d:%v", ttl, obs[ttl])
	}
	return b.String()
}

// testTTL: 32 flows to one wildcard target, TTL 1..10 each, must each follow exactly
// one truth path, together cover every ECMP branch, and one flow repeated on fresh
// sockets must always take the same path.
func testTTL(t *testing.T, l *Lab, f Family) {
	dst := firstTarget(l, "wildcard", f)
	tt, _ := l.Truth().TargetTruth(dst)
	maxTTL := tt.MaxTTL()
	base := 20000 + rand.IntN(20000)
	const flows = 32

	type result struct {
		sport int
		obs   map[int][]netip.Addr
		all   []icmpReply
		err   error
	}
	results := make([]result, flows)
	var wg sync.WaitGroup
	for i := range flows {
		wg.Add(1)
		go func() {
			defer wg.Done()
			obs, all, err := traceFlow(l, f, dst, base+i, maxTTL)
			results[i] = result{base + i, obs, all, err}
		}()
	}
	wg.Wait()

	seen := map[int]map[netip.Addr]bool{}
	silent := silentAddrs(l.Topology())
	for _, r := range results {
		if r.err != nil {
			t.Fatalf("sport %d: %v", r.sport, r.err)
		}
		for _, rep := range r.all {
			if !rep.icmpTE {
				t.Errorf("sport %d: unexpected ICMP error from %v (ttl %d)", r.sport, rep.from, rep.ttl)
			}
			if silent[rep.from] {
				t.Errorf("sport %d: silent router answered from %v", r.sport, rep.from)
			}
		}
		for ttl, addrs := range r.obs {
			for _, a := range addrs {
				if !slices.Contains(tt.AddrsAt(ttl), a) {
					t.Errorf("sport %d ttl %d: %v answered, truth allows %v", r.sport, ttl, a, tt.AddrsAt(ttl))
				}
				if seen[ttl] == nil {
					seen[ttl] = map[netip.Addr]bool{}
				}
				seen[ttl][a] = true
			}
		}
		if _, ok := matchPath(tt, r.obs, maxTTL); !ok {
			t.Errorf("sport %d: observation matches no truth path:%s", r.sport, pathString(r.obs, maxTTL))
		}
	}
	// Every address the truth names at TTL 3..6 (both diamonds, both branch lengths)
	// must show up across the flows.
	for ttl := 1; ttl <= maxTTL; ttl++ {
		for _, a := range tt.AddrsAt(ttl) {
			if a != dst && !seen[ttl][a] {
				t.Errorf("ttl %d: %v never answered in %d flows (seen %v)", ttl, a, flows, seen[ttl])
			}
		}
	}

	// Stability: the same 5-tuple on fresh sockets (fresh random skb hashes) must take
	// the same path every time.
	first := pathString(results[0].obs, maxTTL)
	for rep := 0; rep < 5; rep++ {
		obs, _, err := traceFlow(l, f, dst, results[0].sport, maxTTL)
		if err != nil {
			t.Fatal(err)
		}
		if got := pathString(obs, maxTTL); got != first {
			t.Errorf("sport %d repeat %d: path changed:\n%s\n%s", results[0].sport, rep, first, got)
		}
	}
	t.Logf("%v: %d flows, per-TTL responders %v", dst, flows, seen)
}

// testTTLBound: the short branch to t2 (r1, r2, r9) in both families.
func testTTLBound(t *testing.T, l *Lab) {
	for _, f := range []Family{IPv4, IPv6} {
		dst := firstTarget(l, "bound", f)
		tt, _ := l.Truth().TargetTruth(dst)
		obs, _, err := traceFlow(l, f, dst, 40000+rand.IntN(20000), tt.MaxTTL()+1)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := matchPath(tt, obs, tt.MaxTTL()+1); !ok {
			t.Errorf("%v: matches no truth path:%s", dst, pathString(obs, tt.MaxTTL()+1))
		}
	}
}

func silentAddrs(topo *Topology) map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	for _, n := range topo.Nodes {
		if n.Silent {
			for _, i := range topo.Ifaces(n.Name) {
				out[i.Addr4.Addr()], out[i.Addr6.Addr()] = true, true
			}
		}
	}
	return out
}

// testSilentCounters: after all the probing, the silent router's own counters say it
// sent no Time Exceeded in either family, while its neighbour r6 sent plenty.
func testSilentCounters(t *testing.T, l *Lab) {
	count := func(node, file, key string) int {
		var v int
		err := InNetNS(l.NS(node), func() error {
			// thread-self: /proc/self/net would show the main thread's namespace.
			b, err := os.ReadFile(filepath.Join("/proc/thread-self/net", file))
			if err != nil {
				return err
			}
			v = snmpValue(string(b), key)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, n := range l.Topology().Nodes {
		if !n.Silent {
			continue
		}
		if v4, v6 := count(n.Name, "snmp", "Icmp.OutTimeExcds"), count(n.Name, "snmp6", "Icmp6OutTimeExcds"); v4 != 0 || v6 != 0 {
			t.Errorf("silent %s sent Time Exceeded: %d IPv4, %d IPv6", n.Name, v4, v6)
		}
	}
	if v4, v6 := count("r6", "snmp", "Icmp.OutTimeExcds"), count("r6", "snmp6", "Icmp6OutTimeExcds"); v4 == 0 || v6 == 0 {
		t.Errorf("r6 sent no Time Exceeded (%d, %d): did the TTL tests run?", v4, v6)
	}
}

// snmpValue reads "Icmp.OutTimeExcds" from /proc/net/snmp (header line + value line)
// or "Icmp6OutTimeExcds" from /proc/net/snmp6 (name value lines).
func snmpValue(text, key string) int {
	lines := strings.Split(text, "\n")
	if proto, field, ok := strings.Cut(key, "."); ok {
		for i := 0; i+1 < len(lines); i++ {
			h, v := strings.Fields(lines[i]), strings.Fields(lines[i+1])
			if len(h) == 0 || h[0] != proto+":" || len(v) != len(h) || v[0] != h[0] {
				continue
			}
			for j := range h {
				if h[j] == field {
					var n int
					fmt.Sscan(v[j], &n)
					return n
				}
			}
		}
		return -1
	}
	for _, line := range lines {
		if f := strings.Fields(line); len(f) == 2 && f[0] == key {
			var n int
			fmt.Sscan(f[1], &n)
			return n
		}
	}
	return -1
}

// testPTR: dnsmasq names router interfaces in both families.
func testPTR(t *testing.T, l *Lab) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r := l.Resolver()
	topo := l.Topology()
	for _, c := range []struct{ node, peer string }{{"r3b", "r2"}, {"r9", "r2"}, {"r7", "r6"}, {"r5c", "r6"}} {
		i, _ := topo.IfaceTo(c.node, c.peer)
		for _, a := range []netip.Addr{i.Addr4.Addr(), i.Addr6.Addr()} {
			names, err := r.LookupAddr(ctx, a.String())
			want := topo.PTRName(i) + "."
			if err != nil || !slices.Contains(names, want) {
				t.Errorf("PTR %v: %v %v, want %s", a, names, err, want)
			}
		}
	}
	if _, err := r.LookupAddr(ctx, "198.18.200.1"); err == nil {
		t.Errorf("PTR of an unknown address resolved")
	}
}

// testRepeatUp: the bad-input cases that need a running lab.
func testRepeatUp(t *testing.T, l *Lab) {
	ctx := context.Background()
	again, err := Up(ctx, Options{Prefix: l.Prefix(), Profile: ProfileFast})
	if err != nil || !again.Reused() {
		t.Errorf("second Up, same profile: %v (reused %v)", err, again != nil && again.Reused())
	}
	_, err = Up(ctx, Options{Prefix: l.Prefix(), Profile: ProfileRealistic})
	if !errors.Is(err, ErrAlreadyUp) {
		t.Errorf("second Up, other profile: got %v, want ErrAlreadyUp", err)
	}
	if _, err := Open(l.Prefix()); err != nil {
		t.Errorf("Open: %v", err)
	}
	var ue *UsageError
	if _, err := Up(ctx, Options{Prefix: l.Prefix(), Profile: "slow"}); !errors.As(err, &ue) {
		t.Errorf("unknown profile: got %v, want UsageError", err)
	}
}

// testUnreachable: a closed port on each kind of target answers with Port Unreachable
// from where the truth says (IPv6 AnyIP: the target node's link address).
func testUnreachable(t *testing.T, l *Lab) {
	for _, g := range l.Groups() {
		for _, f := range []Family{IPv4, IPv6} {
			dst := firstTarget(l, g, f)
			tt, _ := l.Truth().TargetTruth(dst)
			s, err := newErrSocket(l, f, 0)
			if err != nil {
				t.Fatal(err)
			}
			err = s.sendTo(dst, 9, 64)
			var replies []icmpReply
			if err == nil {
				replies, err = s.drain(time.Now().Add(300 * time.Millisecond))
			}
			s.close()
			if err != nil {
				t.Fatal(err)
			}
			if len(replies) != 1 || replies[0].icmpTE || !slices.Contains(tt.UnreachableFrom(), replies[0].from) {
				t.Errorf("%s %v port 9: got %+v, truth says unreachable from %v", g, dst, replies, tt.UnreachableFrom())
			}
		}
	}
}
