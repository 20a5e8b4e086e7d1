package asn

import (
	"bufio"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The real offline dataset: the npm package @ip-location-db/asn that `make deps`
// unpacks (scripts/asn-data.sh) into .cache/ip-location-db at the repository's root.
func npmDataset(t testing.TB) string {
	dir := os.Getenv("TURNPATH_ASN_DATA")
	if dir == "" {
		dir = filepath.Join("..", ".cache", "ip-location-db", "package")
	}
	if _, err := os.Stat(filepath.Join(dir, "asn-ipv4.csv")); err != nil {
		t.Skipf("no @ip-location-db/asn dataset in %s (make deps, or scripts/asn-data.sh)", dir)
	}
	return dir
}

// rssKB reads a field of /proc/self/status (VmRSS, VmHWM) in kB.
func rssKB(field string) int {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && k == field {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	return 0
}

// Known public prefixes resolve offline; the load time, lookup rate and memory are
// logged (README "AS numbers and names" quotes them).
func TestNPMDataset(t *testing.T) {
	dir := npmDataset(t)
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	heap0 := ms.HeapAlloc
	start := time.Now()
	f, err := LoadFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	load := time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&ms)
	heap := (ms.HeapAlloc - heap0) >> 20
	if f.Len() < 400000 || f.Format != "csv" {
		t.Errorf("%d ranges, format %q", f.Len(), f.Format)
	}
	for s, want := range map[string]uint32{
		"8.8.8.8":              15169, // Google Public DNS
		"52.114.132.46":        8075,  // a Microsoft Teams relay in 52.112.0.0/14
		"52.112.0.1":           8075,
		"2001:4860:4860::8888": 15169,
		"1.1.1.1":              13335,
	} {
		if got := f.Find(netip.MustParseAddr(s)); got.ASN != want {
			t.Errorf("%s: %+v, want AS%d", s, got, want)
		}
	}
	// Lookups per second over addresses spread across the IPv4 space.
	const n = 1 << 20
	addrs := make([]netip.Addr, 4096)
	for i := range addrs {
		x := uint32(i) * 1048573
		addrs[i] = netip.AddrFrom4([4]byte{byte(x >> 24), byte(x >> 16), byte(x >> 8), byte(x)})
	}
	start = time.Now()
	found := 0
	for i := range n {
		if f.Find(addrs[i%len(addrs)]).ASN != 0 {
			found++
		}
	}
	rate := float64(n) / time.Since(start).Seconds()
	t.Logf("@ip-location-db/asn: %d ranges, %d ASes, loaded in %v, table %d MiB of heap, process RSS peak %d MiB, %.2f M lookups/s (%d of %d found)",
		f.Len(), len(f.ases), load.Round(time.Millisecond), heap, rssKB("VmHWM")/1024, rate/1e6, found, n)
}

// npmTable is the dataset loaded once per test binary: go test calls a benchmark
// several times.
var npmTable = sync.OnceValues(func() (*File, error) { return LoadFile(filepath.Join("..", ".cache", "ip-location-db", "package")) })

// BenchmarkASNFind is one offline lookup in the full @ip-location-db/asn table (make
// bench's Go microbenchmarks).
func BenchmarkASNFind(b *testing.B) {
	npmDataset(b)
	f, err := npmTable()
	if err != nil {
		b.Fatal(err)
	}
	a := netip.MustParseAddr("52.114.132.46")
	b.ResetTimer()
	for range b.N {
		f.Find(a)
	}
}
