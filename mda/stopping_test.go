package mda

import (
	"slices"
	"testing"
)

func TestStoppingPoints(t *testing.T) {
	for _, c := range []struct {
		conf float64
		want []int
	}{
		{95, []int{6, 11, 16, 21, 27, 33, 38, 44, 51, 57}},
		{99, []int{8, 15, 21, 28, 36}},
	} {
		got := StoppingPoints(c.conf, len(c.want))
		if !slices.Equal(got, c.want) {
			t.Errorf("StoppingPoints(%v) = %v, want %v", c.conf, got, c.want)
		}
	}
	for _, bad := range []float64{0, 100, -5, 150} {
		if got := StoppingPoints(bad, 4); got != nil {
			t.Errorf("StoppingPoints(%v) = %v, want nil", bad, got)
		}
	}
	// Monotone, and stable when extended.
	long := StoppingPoints(95, 200)
	for i := 1; i < len(long); i++ {
		if long[i] <= long[i-1] {
			t.Fatalf("not increasing at %d: %v", i, long[i-1:i+1])
		}
	}
	if !slices.Equal(long[:10], StoppingPoints(95, 10)) {
		t.Fatal("prefix changed when extended")
	}
}
