package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/turnpath/turnpath/lab"
	"golang.org/x/sys/unix"
)

// TestConcurrentRunsOneInterface: three traces and a multipath started together on one
// lab interface, all with --engine ebpf (cron jobs that overlap, a monitor and an ad-hoc
// trace), all from source port 50000 up. Each must use the eBPF engine and report exactly
// the lab's truth: a run that takes another run's replies makes that run's routers look
// silent. Meanwhile a plain UDP socket sending from a port in the runs' range to 3478
// keeps getting its ICMP errors.
func TestConcurrentRunsOneInterface(t *testing.T) {
	_, client, inLab := cliLab(t, "tpcc")
	truth := lab.DefaultTruth()
	targets := []string{"198.19.1.1", "198.19.1.2", "198.19.2.1", "fd51:1:2::5"}

	type job struct {
		name string
		args []string
		out  bytes.Buffer
		errb bytes.Buffer
		code int
	}
	var jobs []*job
	for i := range 3 {
		jobs = append(jobs, &job{name: fmt.Sprintf("trace %d", i+1),
			args: inLab(append([]string{"trace", "-n", "--engine", "ebpf", "--format", "json"}, targets...)...)})
	}
	jobs = append(jobs, &job{name: "multipath",
		args: inLab("multipath", "-n", "--engine", "ebpf", "--sport", "50000", "--format", "json", "198.19.1.1")})

	// The application: its socket is bound to the runs' default first port.
	appDone := make(chan struct{})
	var appGot, appSent int
	var appErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		appSent, appGot, appErr = udpApp(client, netip.MustParseAddr("198.19.1.1"), appDone)
	}()

	var cmds []*exec.Cmd
	for _, j := range jobs {
		cmd := exec.Command(j.args[0], j.args[1:]...)
		cmd.Stdout, cmd.Stderr = &j.out, &j.errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	for i, cmd := range cmds {
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				jobs[i].code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
		case <-time.After(90 * time.Second):
			for _, c := range cmds {
				c.Process.Kill()
			}
			t.Fatalf("%s hung", jobs[i].name)
		}
	}
	close(appDone)
	wg.Wait()

	for _, j := range jobs[:3] {
		if j.code != 0 {
			t.Errorf("%s: exit %d: %s", j.name, j.code, j.errb.String())
			continue
		}
		var doc struct {
			Engine  string `json:"engine"`
			Targets []struct {
				Address string     `json:"address"`
				Reached bool       `json:"reached"`
				Hops    []traceHop `json:"hops"`
			} `json:"targets"`
		}
		if err := json.Unmarshal(j.out.Bytes(), &doc); err != nil {
			t.Fatalf("%s: %v\n%s", j.name, err, j.out.String())
		}
		if doc.Engine != "ebpf" {
			t.Errorf("%s: engine %q, want ebpf (%s)", j.name, doc.Engine, j.errb.String())
		}
		for _, tg := range doc.Targets {
			tt, ok := truth.TargetTruth(netip.MustParseAddr(tg.Address))
			if !ok || !tg.Reached {
				t.Errorf("%s: %s reached %v", j.name, tg.Address, tg.Reached)
				continue
			}
			// A Paris flow takes one of the truth's paths: its hops must be that path,
			// router by router, silent exactly where the path's router is.
			var diffs []string
			for _, p := range tt.Paths() {
				d := pathDiff(p, tg.Hops)
				if d == "" {
					diffs = nil
					break
				}
				diffs = append(diffs, d)
			}
			if diffs != nil {
				t.Errorf("%s: %s matches no path of the truth: %s", j.name, tg.Address, strings.Join(diffs, "; "))
			}
		}
	}

	mp := jobs[3]
	if mp.code != 0 {
		t.Errorf("multipath: exit %d: %s", mp.code, mp.errb.String())
	} else {
		var doc struct {
			Engine  string `json:"engine"`
			Targets []struct {
				Reached bool `json:"reached"`
				Links   []struct{ From, To string }
			} `json:"targets"`
		}
		if err := json.Unmarshal(mp.out.Bytes(), &doc); err != nil || len(doc.Targets) != 1 {
			t.Fatalf("multipath: %v\n%s", err, mp.out.String())
		}
		if doc.Engine != "" && doc.Engine != "ebpf" {
			t.Errorf("multipath: engine %q", doc.Engine)
		}
		if strings.Contains(mp.errb.String(), "socket engine") {
			t.Errorf("multipath fell back: %s", mp.errb.String())
		}
		tt, _ := truth.TargetTruth(netip.MustParseAddr("198.19.1.1"))
		want := map[string]bool{}
		isAddr := func(s string) bool { _, err := netip.ParseAddr(s); return err == nil }
		for _, l := range tt.Links() {
			if isAddr(l.From) && isAddr(l.To) {
				want[l.From+" "+l.To] = true
			}
		}
		got := map[string]bool{}
		for _, l := range doc.Targets[0].Links {
			got[l.From+" "+l.To] = true
		}
		for l := range want {
			if !got[l] {
				t.Errorf("multipath: missed link %s", l)
			}
		}
	}

	if appErr != nil {
		t.Fatalf("udp application: %v", appErr)
	}
	if appSent < 3 || appGot < appSent {
		t.Errorf("udp application: %d ICMP errors for %d datagrams sent during the runs", appGot, appSent)
	}
}

type traceHop struct {
	TTL       int      `json:"ttl"`
	Addresses []string `json:"addresses"`
}

// pathDiff says how a trace's hops differ from one truth path ("" when they are it):
// every router answers, from its address, a silent one not at all, and the destination
// at the path's length.
func pathDiff(p lab.Path, hops []traceHop) string {
	for _, h := range hops {
		if h.TTL > len(p) {
			break
		}
		r := p[h.TTL-1]
		switch {
		case r.Destination:
			return ""
		case r.Silent && len(h.Addresses) > 0:
			return fmt.Sprintf("TTL %d: %v where %s is silent", h.TTL, h.Addresses, r.Node)
		case !r.Silent && len(h.Addresses) == 0:
			return fmt.Sprintf("TTL %d: silent where %s answers", h.TTL, r.Addr)
		case !r.Silent && (len(h.Addresses) != 1 || h.Addresses[0] != r.Addr.String()):
			return fmt.Sprintf("TTL %d: %v, not %s", h.TTL, h.Addresses, r.Addr)
		}
	}
	if len(hops) < len(p) {
		return fmt.Sprintf("%d hops for a path of %d", len(hops), len(p))
	}
	return ""
}

// udpApp is another application in the client namespace: a UDP socket bound to port
// 50000 (inside turnpath's default source port range) sending TTL-1 datagrams to
// dst:3478 every 50 ms until done, each answered by the first router with Time
// Exceeded, read from the socket's error queue (IP_RECVERR). It returns how many it
// sent and how many errors came back.
func udpApp(ns string, dst netip.Addr, done <-chan struct{}) (sent, got int, err error) {
	var fd int
	err = lab.InNetNS(ns, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return 0, 0, fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	for _, o := range [][2]int{{unix.IP_TTL, 1}, {unix.IP_RECVERR, 1}} {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, o[0], o[1]); err != nil {
			return 0, 0, fmt.Errorf("setsockopt: %w", err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: 50000}); err != nil {
		return 0, 0, fmt.Errorf("bind: %w", err)
	}
	to := &unix.SockaddrInet4{Port: 3478, Addr: dst.As4()}
	buf, oob := make([]byte, 512), make([]byte, 512)
	for {
		select {
		case <-done:
			return sent, got, nil
		default:
		}
		if err := unix.Sendto(fd, []byte("not a probe, an application datagram"), 0, to); err != nil {
			return sent, got, fmt.Errorf("send: %w", err)
		}
		sent++
		deadline := time.Now().Add(50 * time.Millisecond)
		for time.Now().Before(deadline) {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLERR}}
			if n, _ := unix.Poll(fds, int(time.Until(deadline).Milliseconds())+1); n == 0 {
				break
			}
			_, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
			if err != nil {
				continue
			}
			msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
			for _, m := range msgs {
				// struct sock_extended_err: errno, origin, type, code ...
				if m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_RECVERR && len(m.Data) >= 8 &&
					m.Data[4] == unix.SO_EE_ORIGIN_ICMP && m.Data[5] == 11 {
					got++
				}
			}
		}
		time.Sleep(time.Until(deadline))
	}
}

// TestCheckNamesXDPHolder: while a run holds the interface's XDP hook, `check` says who
// holds it and that a run would match at TCX ingress (not a missing capability).
func TestCheckNamesXDPHolder(t *testing.T) {
	_, _, inLab := cliLab(t, "tpch")
	args := inLab("trace", "-n", "--engine", "ebpf", "--rate", "20", "198.19.1.1", "198.19.1.2", "198.19.1.3")
	cmd := exec.Command(args[0], args[1:]...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(unix.SIGINT)
		cmd.Wait()
	}()
	time.Sleep(700 * time.Millisecond) // loaded and attached; ~60 probes at 20/s to go
	r := run(t, 30*time.Second, inLab("check", "198.19.1.1")...)
	if r.code != 0 {
		t.Fatalf("check: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{"TCX ingress: the XDP hook is taken", "(xdp_rx), held by turnpath (pid " + fmt.Sprint(cmd.Process.Pid) + ")", "engine: ebpf"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("check output lacks %q:\n%s", want, r.stdout)
		}
	}
}
