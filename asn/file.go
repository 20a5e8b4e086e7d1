package asn

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/oschwald/maxminddb-golang/v2"
)

// File is an offline source: a data file loaded once into one sorted range table for
// both families (IPv4 as IPv4-mapped IPv6), looked up by binary search. Formats,
// detected by content (gzip allowed): ip2asn TSV (start end AS country name), RouteViews
// pfx2as (prefix length AS), the CSV of @ip-location-db/asn (start,end,asn,org) and
// MaxMind-format mmdb (autonomous_system_number/organization).
type File struct {
	Path   string
	Format string // ip2asn, pfx2as, csv, mmdb

	lo, hi []u128   // range bounds, sorted by lo then widest first
	as     []uint32 // index into ases, per range
	ases   []asEntry
}

type asEntry struct {
	asn      uint32
	name, cc string
}

// u128 is an address as a number: IPv4 mapped into IPv6, so one table holds both.
type u128 struct{ hi, lo uint64 }

func key(a netip.Addr) u128 {
	b := a.As16() // an IPv4 address gives ::ffff:a.b.c.d
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

func (x u128) cmp(y u128) int {
	switch {
	case x.hi != y.hi:
		if x.hi < y.hi {
			return -1
		}
		return 1
	case x.lo < y.lo:
		return -1
	case x.lo > y.lo:
		return 1
	}
	return 0
}

// FileError is a malformed data file: which file, which line, what is wrong.
type FileError struct {
	Path    string
	Line    int
	Msg     string
	unknown bool // the format is not one we read at all
}

func (e *FileError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.Path, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.Path, e.Msg)
}

// Name says the source and file.
func (f *File) Name() string { return "file " + f.Path }

// Len is the number of ranges loaded.
func (f *File) Len() int { return len(f.lo) }

// Lookup answers from the table: no query leaves the host.
func (f *File) Lookup(_ context.Context, addrs []netip.Addr) (map[netip.Addr]Info, error) {
	out := make(map[netip.Addr]Info, len(addrs))
	for _, a := range addrs {
		out[a.Unmap()] = f.Find(a)
	}
	return out, nil
}

// maxNesting bounds the walk back over ranges that start before a but end before it too
// (pfx2as nests more specific prefixes inside wider ones).
const maxNesting = 64

// Find is a's entry (Info{} when no range holds it): the most specific range.
func (f *File) Find(a netip.Addr) Info {
	k := key(a.Unmap())
	i, _ := slices.BinarySearchFunc(f.lo, k, func(x, t u128) int {
		if x.cmp(t) <= 0 {
			return -1
		}
		return 1
	})
	for j := i - 1; j >= 0 && j >= i-maxNesting; j-- {
		if f.hi[j].cmp(k) >= 0 {
			e := f.ases[f.as[j]]
			return Info{ASN: e.asn, Name: e.name, CC: e.cc, Prefix: rangeString(f.lo[j], f.hi[j])}
		}
	}
	return Info{}
}

func addrOf(x u128) netip.Addr {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], x.hi)
	binary.BigEndian.PutUint64(b[8:], x.lo)
	return netip.AddrFrom16(b).Unmap()
}

// rangeString is the range as a prefix when it is one, else "start-end".
func rangeString(lo, hi u128) string {
	a, b := addrOf(lo), addrOf(hi)
	for bits := 0; bits <= a.BitLen(); bits++ {
		p := netip.PrefixFrom(a, bits)
		if p.Masked().Addr() == a && lastOf(p) == b {
			return p.String()
		}
	}
	return a.String() + "-" + b.String()
}

// lastOf is the last address of p.
func lastOf(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// mmdbMarker starts the metadata section of a MaxMind DB file.
var mmdbMarker = []byte("\xab\xcd\xefMaxMind.com")

// LoadFile reads a data file into a table, detecting its format. A directory (an
// unpacked @ip-location-db/asn package, say) loads every data file in it whose format
// is known (asn-ipv4.csv and asn-ipv6.csv, not the integer -num variants nor README).
func LoadFile(path string) (*File, error) {
	f := &File{Path: path}
	b := newBuilder(f)
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read asn data: %w", err)
	}
	if !fi.IsDir() {
		if err := b.load(path); err != nil {
			return nil, err
		}
	} else {
		ents, err := os.ReadDir(path)
		if err != nil {
			return nil, fmt.Errorf("read asn data: %w", err)
		}
		for _, e := range ents {
			p := filepath.Join(path, e.Name())
			if !e.Type().IsRegular() || !dataFileName(e.Name()) {
				continue
			}
			var fe *FileError
			if err := b.load(p); errors.As(err, &fe) && fe.unknown {
				continue // not a data file after all
			} else if err != nil {
				return nil, err
			}
		}
	}
	if len(f.lo) == 0 {
		return nil, &FileError{Path: path, Msg: "no ranges (not an ip2asn, pfx2as, ip-location-db CSV or mmdb file?)"}
	}
	b.finish()
	return f, nil
}

// dataFileName: the names a directory's data files may have.
func dataFileName(name string) bool {
	name = strings.TrimSuffix(name, ".gz")
	for _, ext := range []string{".csv", ".tsv", ".txt", ".mmdb"} {
		if strings.HasSuffix(name, ext) {
			return true
		}
	}
	return false
}

// load adds one file's ranges. Text formats are read as a stream (a large dataset
// never sits in memory whole); an mmdb, recognised by its metadata marker near the
// end, is read whole.
func (b *builder) load(path string) error {
	fh, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read asn data: %w", err)
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return fmt.Errorf("read asn data: %w", err)
	}
	tail := make([]byte, min(fi.Size(), 128*1024))
	if _, err := fh.ReadAt(tail, fi.Size()-int64(len(tail))); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read asn data: %w", err)
	}
	if bytes.Contains(tail, mmdbMarker) {
		raw, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read asn data: %w", err)
		}
		b.format("mmdb")
		return b.mmdb(path, raw)
	}
	br := bufio.NewReaderSize(fh, 1<<16)
	var r io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return &FileError{Path: path, Msg: "bad gzip: " + err.Error()}
		}
		r = zr
	}
	return b.text(path, r)
}

// format records a file's format: the table's is the list of them.
func (b *builder) format(name string) {
	if !slices.Contains(strings.Split(b.f.Format, ","), name) {
		if b.f.Format != "" {
			name = b.f.Format + "," + name
		}
		b.f.Format = name
	}
}

// builder collects ranges and deduplicates AS entries.
type builder struct {
	f   *File
	idx map[asEntry]uint32
}

func newBuilder(f *File) *builder { return &builder{f: f, idx: map[asEntry]uint32{}} }

func (b *builder) add(lo, hi netip.Addr, e asEntry) {
	i, ok := b.idx[e]
	if !ok {
		i = uint32(len(b.f.ases))
		b.f.ases = append(b.f.ases, e)
		b.idx[e] = i
	}
	b.f.lo, b.f.hi, b.f.as = append(b.f.lo, key(lo)), append(b.f.hi, key(hi)), append(b.f.as, i)
}

// finish sorts by start, the widest range first, so a nested range follows its parent.
func (b *builder) finish() {
	f := b.f
	order := make([]int32, len(f.lo))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortFunc(order, func(x, y int32) int {
		if c := f.lo[x].cmp(f.lo[y]); c != 0 {
			return c
		}
		return -f.hi[x].cmp(f.hi[y])
	})
	lo, hi, as := make([]u128, len(order)), make([]u128, len(order)), make([]uint32, len(order))
	for k, i := range order {
		lo[k], hi[k], as[k] = f.lo[i], f.hi[i], f.as[i]
	}
	f.lo, f.hi, f.as = lo, hi, as
}

// text reads the line formats; the first data line says which one the file is.
func (b *builder) text(path string, r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	format := ""
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if format == "" {
			if format = detect(line); format == "" {
				return &FileError{Path: path, Line: n, Msg: "unknown format (want ip2asn TSV, pfx2as, ip-location-db CSV or mmdb)", unknown: true}
			}
			b.format(format)
			if format == "csv" && strings.HasPrefix(strings.ToLower(line), "start") {
				continue // a header line
			}
		}
		var err error
		switch format {
		case "ip2asn":
			err = b.ip2asn(line)
		case "pfx2as":
			err = b.pfx2as(line)
		case "csv":
			err = b.csvLine(line)
		}
		if err != nil {
			return &FileError{Path: path, Line: n, Msg: err.Error()}
		}
	}
	if err := sc.Err(); err != nil {
		return &FileError{Path: path, Line: n + 1, Msg: err.Error()}
	}
	return nil
}

// detect names the format of a data line ("" unknown).
func detect(line string) string {
	if f := strings.Split(line, "\t"); len(f) >= 3 {
		_, e1 := netip.ParseAddr(f[0])
		_, e2 := netip.ParseAddr(f[1])
		_, e3 := strconv.Atoi(f[1])
		switch {
		case e1 == nil && e2 == nil && len(f) >= 3:
			return "ip2asn"
		case e1 == nil && e3 == nil:
			return "pfx2as"
		}
	}
	if f := strings.Split(line, ","); len(f) >= 3 {
		_, e1 := netip.ParseAddr(f[0])
		if e1 == nil || strings.HasPrefix(strings.ToLower(f[0]), "start") {
			return "csv"
		}
	}
	return ""
}

// rangeOf checks a start-end pair.
func rangeOf(s, e string) (netip.Addr, netip.Addr, error) {
	lo, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return lo, lo, fmt.Errorf("bad range start %q", s)
	}
	hi, err := netip.ParseAddr(strings.TrimSpace(e))
	if err != nil {
		return lo, hi, fmt.Errorf("bad range end %q", e)
	}
	if lo.Is4() != hi.Is4() || hi.Less(lo) {
		return lo, hi, fmt.Errorf("bad range %s-%s", lo, hi)
	}
	return lo, hi, nil
}

// rangeAS reads a range's start, end and AS fields (AS 0: not routed, skipped).
func rangeAS(start, end, as string) (lo, hi netip.Addr, n uint32, err error) {
	if lo, hi, err = rangeOf(start, end); err != nil {
		return lo, hi, 0, err
	}
	n, err = firstASN(as)
	return lo, hi, n, err
}

// firstASN reads an AS field; a multi-origin (13335_4637) or set (4637,1234) takes the
// first.
func firstASN(s string) (uint32, error) {
	s = strings.TrimSpace(s)
	if i := strings.IndexAny(s, "_,"); i >= 0 {
		s = s[:i]
	}
	n, ok := parseASN(s)
	if !ok {
		return 0, fmt.Errorf("bad AS number %q", s)
	}
	return n, nil
}

// ip2asn: range_start range_end AS_number country_code AS_description (AS 0: not routed).
func (b *builder) ip2asn(line string) error {
	f := strings.Split(line, "\t")
	if len(f) < 3 {
		return errors.New("want range_start, range_end, AS_number, country, description separated by tabs")
	}
	lo, hi, n, err := rangeAS(f[0], f[1], f[2])
	if err != nil || n == 0 {
		return err
	}
	e := asEntry{asn: n}
	if len(f) > 3 && f[3] != "None" {
		e.cc = f[3]
	}
	if len(f) > 4 {
		e.name = strings.Join(f[4:], " ")
	}
	b.add(lo, hi, e)
	return nil
}

// pfx2as: prefix length AS.
func (b *builder) pfx2as(line string) error {
	f := strings.Split(line, "\t")
	if len(f) != 3 {
		return errors.New("want prefix, length, AS separated by tabs")
	}
	a, err := netip.ParseAddr(f[0])
	if err != nil {
		return fmt.Errorf("bad prefix %q", f[0])
	}
	bits, err := strconv.Atoi(f[1])
	if err != nil {
		return fmt.Errorf("bad prefix length %q", f[1])
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return fmt.Errorf("bad prefix %s/%s", f[0], f[1])
	}
	n, err := firstASN(f[2])
	if err != nil {
		return err
	}
	b.add(p.Addr(), lastOf(p), asEntry{asn: n})
	return nil
}

// csvLine: start,end,asn,org (the org quoted when it holds commas).
func (b *builder) csvLine(line string) error {
	f := strings.SplitN(line, ",", 4)
	if strings.Contains(line, `"`) { // quoted fields: the slow, exact way
		r := csv.NewReader(strings.NewReader(line))
		r.FieldsPerRecord, r.LazyQuotes = -1, true
		var err error
		if f, err = r.Read(); err != nil {
			return errors.New("want start,end,asn,org")
		}
	}
	if len(f) < 3 {
		return errors.New("want start,end,asn,org")
	}
	lo, hi, n, err := rangeAS(f[0], f[1], f[2])
	if err != nil || n == 0 {
		return err
	}
	b.add(lo, hi, asEntry{asn: n, name: strings.TrimSpace(strings.Join(f[3:], ","))})
	return nil
}

// mmdb reads every network of a MaxMind-format database with an AS number.
func (b *builder) mmdb(path string, raw []byte) error {
	db, err := maxminddb.OpenBytes(raw)
	if err != nil {
		return &FileError{Path: path, Msg: "bad mmdb: " + err.Error()}
	}
	defer db.Close()
	var rec struct {
		ASN uint32 `maxminddb:"autonomous_system_number"`
		Org string `maxminddb:"autonomous_system_organization"`
	}
	for res := range db.Networks() {
		rec.ASN, rec.Org = 0, ""
		if err := res.Decode(&rec); err != nil {
			return &FileError{Path: path, Msg: fmt.Sprintf("bad mmdb record for %s: %v", res.Prefix(), err)}
		}
		if rec.ASN == 0 {
			continue
		}
		p := res.Prefix()
		b.add(p.Addr().Unmap(), lastOf(p).Unmap(), asEntry{asn: rec.ASN, name: rec.Org})
	}
	return nil
}
