package bench

import (
	"fmt"
	"math"
	"slices"
)

var nan = math.NaN()

// Summary is the median of several runs with the smallest and largest value.
type Summary struct {
	N      int     `json:"n"`
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

// Summarize returns the median, min and max of xs (NaN values are ignored). The median
// of an even count is the mean of the two middle values.
func Summarize(xs []float64) Summary {
	v := make([]float64, 0, len(xs))
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return Summary{}
	}
	slices.Sort(v)
	return Summary{N: len(v), Median: quantileSorted(v, 0.5), Min: v[0], Max: v[len(v)-1]}
}

// Quantile returns the q-quantile (0..1) of xs by linear interpolation between closest
// ranks (the "R-7" rule of R and numpy's default), NaN for no values.
func Quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	v := slices.Clone(xs)
	slices.Sort(v)
	return quantileSorted(v, q)
}

func quantileSorted(v []float64, q float64) float64 {
	if len(v) == 1 {
		return v[0]
	}
	pos := q * float64(len(v)-1)
	lo := int(math.Floor(pos))
	hi := int(math.Ceil(pos))
	return v[lo] + (v[hi]-v[lo])*(pos-float64(lo))
}

// Ratios divides a[i] by b[i] for every i where both exist and b[i] > 0: ratios of
// measurements taken in the same round.
func Ratios(a, b []float64) []float64 {
	var out []float64
	for i := 0; i < len(a) && i < len(b); i++ {
		if b[i] > 0 && !math.IsNaN(a[i]) && !math.IsNaN(b[i]) {
			out = append(out, a[i]/b[i])
		}
	}
	return out
}

// Format writes "median (min–max)" with the given printf verb for each number, or
// just the value when all runs agree, and "–" without runs.
func (s Summary) Format(verb, unit string) string {
	if s.N == 0 {
		return "–"
	}
	med := fmt.Sprintf(verb, s.Median)
	lo, hi := fmt.Sprintf(verb, s.Min), fmt.Sprintf(verb, s.Max)
	if lo == hi {
		return med + unit
	}
	return fmt.Sprintf("%s%s (%s–%s)", med, unit, lo, hi)
}

// Seconds formats a Summary of seconds with a precision that suits its size.
func (s Summary) Seconds() string {
	switch {
	case s.N == 0:
		return "–"
	case s.Max < 1:
		return s.Format("%.3f", " s")
	case s.Max < 10:
		return s.Format("%.2f", " s")
	}
	return s.Format("%.1f", " s")
}

// Scale multiplies every figure by k.
func (s Summary) Scale(k float64) Summary {
	return Summary{N: s.N, Median: k * s.Median, Min: k * s.Min, Max: k * s.Max}
}

// Percent formats a Summary of fractions (0..1) as whole percentages.
func (s Summary) Percent() string { return s.Scale(100).Format("%.0f", " %") }

// Times formats a Summary of ratios ("12× (10–15)").
func (s Summary) Times() string {
	verb := "%.1f"
	if s.Min >= 10 {
		verb = "%.0f"
	}
	return s.Format(verb, "×")
}
