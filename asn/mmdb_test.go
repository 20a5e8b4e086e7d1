package asn

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

// A minimal MaxMind DB writer (IPv6 tree, 24-bit records, IPv4 under ::/96), enough to
// make a GeoLite2-ASN-shaped file for the loader without shipping a binary.

type mmNode struct {
	child [2]*mmNode
	data  [2]int // offset into the data section + 1; 0: none
}

func mmString(s string) []byte {
	if len(s) >= 29 { // a longer size follows in one byte
		return append([]byte{2<<5 | 29, byte(len(s) - 29)}, s...)
	}
	return append([]byte{2<<5 | byte(len(s))}, s...)
}

func mmUint(typ byte, v uint64, n int) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	b = b[8-n:]
	if typ <= 7 {
		return append([]byte{typ<<5 | byte(n)}, b...)
	}
	return append([]byte{byte(n), typ - 7}, b...) // extended type
}

func mmMap(kv ...[]byte) []byte {
	out := []byte{7<<5 | byte(len(kv)/2)}
	for _, b := range kv {
		out = append(out, b...)
	}
	return out
}

type mmRecord struct {
	prefix string
	asn    uint32
	org    string
}

func writeMMDB(t *testing.T, recs []mmRecord) string {
	t.Helper()
	root := &mmNode{}
	var data []byte
	nodes := []*mmNode{root}
	for _, r := range recs {
		p := netip.MustParsePrefix(r.prefix)
		addr, bits := p.Addr().As16(), p.Bits()
		if p.Addr().Is4() {
			addr = [16]byte{12: addr[12], 13: addr[13], 14: addr[14], 15: addr[15]} // ::a.b.c.d
			bits += 96
		}
		off := len(data)
		data = append(data, mmMap(mmString("autonomous_system_number"), mmUint(6, uint64(r.asn), 4),
			mmString("autonomous_system_organization"), mmString(r.org))...)
		n := root
		for i := 0; i < bits; i++ {
			bit := addr[i/8] >> (7 - i%8) & 1
			if i == bits-1 {
				n.data[bit] = off + 1
				break
			}
			if n.child[bit] == nil {
				n.child[bit] = &mmNode{}
				nodes = append(nodes, n.child[bit])
			}
			n = n.child[bit]
		}
	}
	index := map[*mmNode]int{}
	for i, n := range nodes {
		index[n] = i
	}
	count := len(nodes)
	var tree []byte
	for _, n := range nodes {
		for b := range 2 {
			v := count // empty
			switch {
			case n.child[b] != nil:
				v = index[n.child[b]]
			case n.data[b] > 0:
				v = count + 16 + n.data[b] - 1
			}
			tree = append(tree, byte(v>>16), byte(v>>8), byte(v))
		}
	}
	var f bytes.Buffer
	f.Write(tree)
	f.Write(make([]byte, 16))
	f.Write(data)
	f.Write(mmdbMarker)
	f.Write(mmMap(
		mmString("node_count"), mmUint(6, uint64(count), 4),
		mmString("record_size"), mmUint(5, 24, 2),
		mmString("ip_version"), mmUint(5, 6, 2),
		mmString("database_type"), mmString("GeoLite2-ASN"),
		mmString("binary_format_major_version"), mmUint(5, 2, 2),
		mmString("binary_format_minor_version"), mmUint(5, 0, 2),
		mmString("build_epoch"), mmUint(9, 1767225600, 8),
	))
	p := filepath.Join(t.TempDir(), "asn.mmdb")
	if err := os.WriteFile(p, f.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFileMMDB(t *testing.T) {
	p := writeMMDB(t, []mmRecord{
		{"8.8.8.0/24", 15169, "GOOGLE"},
		{"52.112.0.0/14", 8075, "MICROSOFT-CORP-MSN-AS-BLOCK"},
		{"2001:4860::/32", 15169, "GOOGLE"},
	})
	f, err := LoadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if f.Format != "mmdb" || f.Len() != 3 {
		t.Errorf("format %q, %d ranges", f.Format, f.Len())
	}
	for s, want := range map[string]Info{
		"8.8.8.8":         {ASN: 15169, Name: "GOOGLE", Prefix: "8.8.8.0/24"},
		"52.113.194.132":  {ASN: 8075, Name: "MICROSOFT-CORP-MSN-AS-BLOCK", Prefix: "52.112.0.0/14"},
		"2001:4860::8888": {ASN: 15169, Name: "GOOGLE", Prefix: "2001:4860::/32"},
		"1.1.1.1":         {},
	} {
		if got := f.Find(netip.MustParseAddr(s)); got != want {
			t.Errorf("%s: %+v, want %+v", s, got, want)
		}
	}
	// A file cut short is an error naming it.
	raw, _ := os.ReadFile(p)
	bad := filepath.Join(t.TempDir(), "bad.mmdb")
	os.WriteFile(bad, append(raw[:10:10], raw[len(raw)-200:]...), 0o644)
	if _, err := LoadFile(bad); err == nil || !bytes.Contains([]byte(err.Error()), []byte(bad)) {
		t.Errorf("truncated mmdb: %v", err)
	}
}
