package unattended

import (
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
)

// Shard is one of N parts of a target list: shard K of N (1 <= K <= N) takes the targets
// whose name hashes to K-1 modulo N. The split depends on each target alone (FNV-1a of
// the name as written, lower case), so every target is in exactly one shard, the same
// one on every run, and adding or removing targets moves no other target to another
// shard. The zero Shard takes everything.
type Shard struct {
	K, N int
}

// IndexEnv is where a Kubernetes Indexed Job gives each pod its index (0 .. completions-1).
const IndexEnv = "JOB_COMPLETION_INDEX"

// maxShards bounds N: more shards than that is a typo, not a fleet.
const maxShards = 1 << 20

// ParseShard reads K/N, or auto/N: K from the Indexed Job's completion index (getenv
// IndexEnv, 0-based) plus one. "" is no sharding.
func ParseShard(spec string, getenv func(string) string) (Shard, error) {
	if spec == "" {
		return Shard{}, nil
	}
	ks, ns, ok := strings.Cut(spec, "/")
	if !ok {
		return Shard{}, fmt.Errorf("--shard %q: want K/N (1 <= K <= N) or auto/N", spec)
	}
	n, err := strconv.Atoi(ns)
	if err != nil || n < 1 || n > maxShards {
		return Shard{}, fmt.Errorf("--shard %q: N must be a whole number in 1..%d", spec, maxShards)
	}
	var k int
	if ks == "auto" {
		idx := getenv(IndexEnv)
		if idx == "" {
			return Shard{}, fmt.Errorf("--shard %s: %s is not set (auto is for a Kubernetes Indexed Job)", spec, IndexEnv)
		}
		i, err := strconv.Atoi(idx)
		if err != nil || i < 0 || i >= n {
			return Shard{}, fmt.Errorf("--shard %s: %s=%q is not an index in 0..%d", spec, IndexEnv, idx, n-1)
		}
		k = i + 1
	} else if k, err = strconv.Atoi(ks); err != nil || k < 1 || k > n {
		return Shard{}, fmt.Errorf("--shard %q: K must be a whole number in 1..%d", spec, n)
	}
	return Shard{K: k, N: n}, nil
}

// ErrEmptyShard: the shard has none of the targets.
var ErrEmptyShard = errors.New("no target falls in this shard")

// Holds reports whether the target called name is in the shard.
func (s Shard) Holds(name string) bool {
	if s.N <= 1 {
		return true
	}
	h := fnv.New64a()
	h.Write([]byte(strings.ToLower(strings.TrimSuffix(name, "."))))
	return int(h.Sum64()%uint64(s.N)) == s.K-1
}

// Select returns the names in the shard, in their order.
func (s Shard) Select(names []string) []string {
	if s.N <= 1 {
		return names
	}
	out := make([]string, 0, len(names)/s.N+1)
	for _, n := range names {
		if s.Holds(n) {
			out = append(out, n)
		}
	}
	return out
}

func (s Shard) String() string {
	if s.N == 0 {
		return ""
	}
	return fmt.Sprintf("%d/%d", s.K, s.N)
}
