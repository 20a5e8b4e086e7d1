package mda

import (
	"math"
	"sync"
)

// StoppingPoints returns the MDA stopping points for a confidence in percent (0 < c < 100):
// element k-1 is n_k, the number of probes (flows) that must have reached an interface, with
// exactly k distinct next hops seen among them, before the hypothesis "there is a (k+1)-th
// next hop" is rejected. It returns max points (n_1 .. n_max), or nil for a confidence
// outside (0, 100) or max < 1.
//
// The rule is the one of the MDA papers (Augustin, Friedman, Teixeira; Veitch et al.): with
// alpha = 1 - c/100, n_k is the smallest n such that, were there k+1 equally likely next
// hops, n probes would miss at least one of them with probability at most alpha:
//
//	P_n(miss | k+1) = sum_{i=1..k+1} (-1)^(i+1) C(k+1, i) (1 - i/(k+1))^n <= alpha
//
// It is computed without the alternating sum (which cancels catastrophically for large k):
// the occupancy recurrence p_{n+1}(d) = p_n(d)*d/K + p_n(d-1)*(K-d+1)/K gives the probability
// of having seen d of the K = k+1 next hops, and the miss probability is the sum of the
// positive terms p_n(0..k). 95% gives 6, 11, 16, 21, 27, 33, 38, 44, 51, 57, the table of
// Paris traceroute and scamper; 99% gives 8, 15, 21, 28, 36, 43, 51, ...
//
// The confidence is per hypothesis test, i.e. per interface whose next hops are enumerated:
// an interface with K > 1 next hops is fully enumerated with probability at least c.
func StoppingPoints(confidence float64, max int) []int {
	if !(confidence > 0 && confidence < 100) || max < 1 {
		return nil
	}
	return append([]int(nil), stoppingTable(confidence, max)...)
}

var (
	stopMu    sync.Mutex
	stopCache = map[float64][]int{}
)

// stoppingTable returns a shared (read-only) table of at least max points.
func stoppingTable(confidence float64, max int) []int {
	stopMu.Lock()
	defer stopMu.Unlock()
	t := stopCache[confidence]
	if len(t) >= max {
		return t[:max]
	}
	alpha := 1 - confidence/100
	for k := len(t) + 1; k <= max; k++ {
		prev := 0
		if k > 1 {
			prev = t[k-2]
		}
		t = append(t, stoppingPoint(k, alpha, prev))
	}
	stopCache[confidence] = t
	return t[:max]
}

// stoppingPoint returns the smallest n > prev with P_n(miss | k+1) <= alpha.
func stoppingPoint(k int, alpha float64, prev int) int {
	K := float64(k + 1)
	p := make([]float64, k+2) // p[d]: probability of d distinct next hops after n probes
	p[0] = 1
	for n := 1; ; n++ {
		for d := min(n, k+1); d >= 1; d-- {
			p[d] = p[d]*float64(d)/K + p[d-1]*(K-float64(d-1))/K
		}
		p[0] = 0
		miss := 0.0
		for d := 1; d <= k; d++ {
			miss += p[d]
		}
		if n > prev && miss <= alpha {
			return n
		}
		if n > 1<<22 { // unreachable for any alpha a float64 confidence can express
			return math.MaxInt32
		}
	}
}
