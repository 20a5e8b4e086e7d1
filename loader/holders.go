package loader

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
)

// Process is a process that holds a BPF program (through a program or link fd).
type Process struct {
	PID  int
	Comm string
}

func (p Process) String() string { return fmt.Sprintf("%s (pid %d)", p.Comm, p.PID) }

// XDPHolder describes who holds an interface's XDP hook.
type XDPHolder struct {
	ProgID    uint32
	ProgName  string    // the program's name ("xdp_rx" for turnpath), "" if unknown
	Processes []Process // processes with an fd of the program or its link; none: pinned or netlink-attached
}

func (h XDPHolder) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "XDP program %d", h.ProgID)
	if h.ProgName != "" {
		fmt.Fprintf(&b, " (%s)", h.ProgName)
	}
	if len(h.Processes) == 0 {
		b.WriteString(", held by no process (pinned, or attached through netlink)")
		return b.String()
	}
	b.WriteString(", held by ")
	for i, p := range h.Processes {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(p.String())
	}
	return b.String()
}

// HolderOfXDP returns who holds the XDP hook of interface ifindex (in the calling
// thread's network namespace), or ok false when it is free.
func HolderOfXDP(ifindex int) (h XDPHolder, ok bool, err error) {
	lnk, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return h, false, fmt.Errorf("loader: interface %d: %w", ifindex, err)
	}
	x := lnk.Attrs().Xdp
	if x == nil || !x.Attached || x.ProgId == 0 {
		return h, false, nil
	}
	h.ProgID = x.ProgId
	if p, err := ebpf.NewProgramFromID(ebpf.ProgramID(x.ProgId)); err == nil {
		if info, err := p.Info(); err == nil {
			h.ProgName = info.Name
		}
		p.Close()
	}
	h.Processes = ProgramHolders("/proc", x.ProgId, os.Getpid())
	return h, true, nil
}

// ProgramHolders lists the processes under procfs (other than self) that have an fd
// whose fdinfo names program id (a program fd or a bpf_link fd: both show "prog_id:").
// Processes it may not read are skipped.
func ProgramHolders(procfs string, id uint32, self int) []Process {
	want := []byte("prog_id:\t" + strconv.FormatUint(uint64(id), 10))
	dirs, _ := filepath.Glob(filepath.Join(procfs, "[0-9]*"))
	var out []Process
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil || pid == self {
			continue
		}
		infos, _ := filepath.Glob(filepath.Join(d, "fdinfo", "*"))
		for _, fi := range infos {
			if fdinfoNames(fi, want) {
				comm, _ := os.ReadFile(filepath.Join(d, "comm"))
				out = append(out, Process{PID: pid, Comm: strings.TrimSpace(string(comm))})
				break
			}
		}
	}
	return out
}

// fdinfoNames reports whether the fdinfo file has the line want exactly.
func fdinfoNames(path string, want []byte) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if bytes.Equal(bytes.TrimRight(sc.Bytes(), " "), want) {
			return true
		}
	}
	return false
}
