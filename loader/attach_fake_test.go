package loader

import (
	"errors"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// fakeNetlink models one interface's qdiscs and filters, enough for the
// legacy TC logic. No privileges needed.
type fakeNetlink struct {
	link     netlink.Link
	qdiscs   []netlink.Qdisc
	filters  map[uint32][]netlink.Filter // by parent
	nextPrio uint16
	closed   bool
	failAdd  error
}

func newFake() *fakeNetlink {
	return &fakeNetlink{
		link:     &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Index: 7, Name: "veth7", EncapType: "ether"}},
		filters:  map[uint32][]netlink.Filter{},
		nextPrio: 0xc000,
	}
}

func (f *fakeNetlink) LinkByIndex(i int) (netlink.Link, error) {
	if i != f.link.Attrs().Index {
		return nil, unix.ENODEV
	}
	return f.link, nil
}

func (f *fakeNetlink) QdiscList(netlink.Link) ([]netlink.Qdisc, error) { return f.qdiscs, nil }

func (f *fakeNetlink) QdiscAdd(q netlink.Qdisc) error {
	for _, x := range f.qdiscs {
		if x.Attrs().Parent == q.Attrs().Parent {
			return unix.EEXIST
		}
	}
	f.qdiscs = append(f.qdiscs, q)
	return nil
}

func (f *fakeNetlink) QdiscDel(q netlink.Qdisc) error {
	for i, x := range f.qdiscs {
		if x.Attrs().Parent == q.Attrs().Parent && x.Type() == q.Type() {
			f.qdiscs = append(f.qdiscs[:i], f.qdiscs[i+1:]...)
			f.filters = map[uint32][]netlink.Filter{}
			return nil
		}
	}
	return unix.ENOENT
}

func (f *fakeNetlink) hasClsact() bool {
	for _, q := range f.qdiscs {
		if q.Type() == "clsact" {
			return true
		}
	}
	return false
}

func (f *fakeNetlink) FilterList(_ netlink.Link, parent uint32) ([]netlink.Filter, error) {
	if !f.hasClsact() {
		return nil, unix.EINVAL
	}
	return append([]netlink.Filter(nil), f.filters[parent]...), nil
}

func (f *fakeNetlink) FilterAdd(flt netlink.Filter) error {
	if f.failAdd != nil {
		return f.failAdd
	}
	if !f.hasClsact() {
		return unix.EINVAL
	}
	bf := *flt.(*netlink.BpfFilter)
	if bf.Priority == 0 {
		f.nextPrio--
		bf.Priority = f.nextPrio
	}
	bf.Id = 100 + bf.Fd // the fake kernel's program id
	bf.Fd = 0
	p := bf.Parent
	f.filters[p] = append(f.filters[p], &bf)
	return nil
}

func (f *fakeNetlink) FilterDel(flt netlink.Filter) error {
	a := flt.Attrs()
	fs := f.filters[a.Parent]
	for i, x := range fs {
		xa := x.Attrs()
		if xa.Priority == a.Priority && xa.Handle == a.Handle && xa.Protocol == a.Protocol {
			f.filters[a.Parent] = append(fs[:i], fs[i+1:]...)
			return nil
		}
	}
	return unix.ENOENT
}

func (f *fakeNetlink) Close() { f.closed = true }

func (f *fakeNetlink) bpfFilter(name string, prio uint16, parent uint32) *netlink.BpfFilter {
	return &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: 7, Parent: parent, Handle: 1, Priority: prio, Protocol: unix.ETH_P_ALL},
		Name:        name, DirectAction: true,
	}
}

func TestLegacyAttachCreatesAndRemovesQdisc(t *testing.T) {
	f := newFake()
	lf, err := attachLegacy(f, f.link, 5, 105)
	if err != nil {
		t.Fatal(err)
	}
	if !lf.createdQdisc || !f.hasClsact() {
		t.Fatal("clsact not created")
	}
	eg := f.filters[netlink.HANDLE_MIN_EGRESS]
	if len(eg) != 1 || eg[0].(*netlink.BpfFilter).Name != LegacyFilterName || !eg[0].(*netlink.BpfFilter).DirectAction {
		t.Fatalf("filters: %+v", eg)
	}
	if lf.attrs.Priority == 0 {
		t.Error("kernel-assigned priority not learned")
	}
	if err := lf.remove(f); err != nil {
		t.Fatal(err)
	}
	if f.hasClsact() || len(f.filters[netlink.HANDLE_MIN_EGRESS]) != 0 {
		t.Error("left behind")
	}
	// Removing twice is harmless.
	if err := lf.remove(f); err != nil {
		t.Fatal(err)
	}
}

func TestLegacyAttachKeepsForeignQdiscAndFilters(t *testing.T) {
	f := newFake()
	_ = f.QdiscAdd(clsactQdisc(7))
	f.filters[netlink.HANDLE_MIN_INGRESS] = []netlink.Filter{f.bpfFilter("cilium", 1, netlink.HANDLE_MIN_INGRESS)}
	lf, err := attachLegacy(f, f.link, 5, 105)
	if err != nil {
		t.Fatal(err)
	}
	if lf.createdQdisc {
		t.Fatal("claims to have created an existing qdisc")
	}
	if err := lf.remove(f); err != nil {
		t.Fatal(err)
	}
	if !f.hasClsact() || len(f.filters[netlink.HANDLE_MIN_INGRESS]) != 1 {
		t.Error("foreign qdisc or filter removed")
	}

	// We created the qdisc, but someone else added a filter meanwhile.
	g := newFake()
	lg, err := attachLegacy(g, g.link, 5, 105)
	if err != nil {
		t.Fatal(err)
	}
	g.filters[netlink.HANDLE_MIN_INGRESS] = []netlink.Filter{g.bpfFilter("other", 1, netlink.HANDLE_MIN_INGRESS)}
	if err := lg.remove(g); err != nil {
		t.Fatal(err)
	}
	if !g.hasClsact() {
		t.Error("qdisc in use by someone else was removed")
	}
}

func TestLegacyAttachPicksOurFilter(t *testing.T) {
	f := newFake()
	_ = f.QdiscAdd(clsactQdisc(7))
	// A stale filter of a crashed run, same name, another program.
	f.filters[netlink.HANDLE_MIN_EGRESS] = []netlink.Filter{f.bpfFilter(LegacyFilterName, 3, netlink.HANDLE_MIN_EGRESS)}
	f.filters[netlink.HANDLE_MIN_EGRESS][0].(*netlink.BpfFilter).Id = 42
	lf, err := attachLegacy(f, f.link, 5, 105)
	if err != nil {
		t.Fatal(err)
	}
	if lf.attrs.Priority == 3 {
		t.Fatal("picked the stale filter")
	}
}

func TestLegacyAttachErrors(t *testing.T) {
	f := newFake()
	f.qdiscs = []netlink.Qdisc{&netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: 7, Parent: netlink.HANDLE_INGRESS}}}
	if _, err := attachLegacy(f, f.link, 5, 105); err == nil {
		t.Error("ingress qdisc: no error")
	}

	g := newFake()
	g.failAdd = unix.EPERM
	_, err := attachLegacy(g, g.link, 5, 105)
	if !errors.Is(err, unix.EPERM) {
		t.Errorf("err = %v", err)
	}
	if g.hasClsact() {
		t.Error("qdisc left behind after a failed attach")
	}
}

func TestCleanupStaleFake(t *testing.T) {
	f := newFake()
	if n, err := cleanupStale(f, 7); n != 0 || err != nil {
		t.Fatalf("no qdisc: %d, %v", n, err)
	}
	_ = f.QdiscAdd(clsactQdisc(7))
	f.filters[netlink.HANDLE_MIN_EGRESS] = []netlink.Filter{
		f.bpfFilter(LegacyFilterName, 1, netlink.HANDLE_MIN_EGRESS),
		f.bpfFilter("other_egress", 2, netlink.HANDLE_MIN_EGRESS),
	}
	f.filters[netlink.HANDLE_MIN_INGRESS] = []netlink.Filter{
		f.bpfFilter("turnpath_ingress", 1, netlink.HANDLE_MIN_INGRESS),
	}
	n, err := cleanupStale(f, 7)
	if err != nil || n != 2 {
		t.Fatalf("removed %d, %v", n, err)
	}
	eg := f.filters[netlink.HANDLE_MIN_EGRESS]
	if len(eg) != 1 || eg[0].(*netlink.BpfFilter).Name != "other_egress" || len(f.filters[netlink.HANDLE_MIN_INGRESS]) != 0 {
		t.Errorf("left: %+v", f.filters)
	}
	if _, err := cleanupStale(f, 8); err == nil {
		t.Error("unknown interface: no error")
	}
}
