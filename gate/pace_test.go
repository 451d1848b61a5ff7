package gate

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// answered feeds p the answer times in order and returns the pause after
// the last one.
func answered(p *Pacer, took ...time.Duration) time.Duration {
	var d time.Duration
	for _, t := range took {
		p.Observe(Observation{Took: t})
		d = p.NextBackOff()
	}
	return d
}

func TestPacer(t *testing.T) {
	const fast, noisy, slow = 300 * time.Microsecond, 6 * time.Millisecond, 20 * time.Millisecond
	mid := func() float64 { return 0.5 }
	rep := func(d time.Duration, n int) []time.Duration { return slices.Repeat([]time.Duration{d}, n) }
	tests := []struct {
		name string
		took []time.Duration
		rand func() float64
		want time.Duration
	}{
		{"fast answers: the floor", rep(fast, 2), mid, DefaultPollMin},
		{"20ms answers: 24 times as long, less the noise", rep(slow, 2), mid, 456 * time.Millisecond},
		{"hung attempts: the cap", rep(time.Second, 2), mid, DefaultPollMax},
		{"jitter low", rep(slow, 2), func() float64 { return 0 }, 364800 * time.Microsecond},
		{"jitter high", rep(slow, 2), func() float64 { return 1 }, 547200 * time.Microsecond},
		// The first answer may be slow for reasons of our own (a cold
		// start, a busy core): the second one decides.
		{"one answer is not trusted", rep(slow, 1), mid, DefaultPollMin},
		// About a millisecond is the loopback round trip and the
		// scheduling of two busy processes.
		{"noise is free", []time.Duration{time.Millisecond, 1100 * time.Microsecond, 900 * time.Microsecond}, mid, DefaultPollMin},
		// A busy machine, not a busy proxy: up to PaceWindow−1 noisy
		// answers in a row leave a fast one in the window, where the
		// last answer alone would make the pause 144 ms.
		{"noisy answers", append(rep(fast, 3), rep(noisy, PaceWindow-1)...), mid, DefaultPollMin},
		{"a fast answer among noisy ones", slices.Concat(rep(fast, 3), rep(noisy, 3), rep(fast, 1), rep(noisy, PaceWindow-1)), mid, DefaultPollMin},
		{"a real slowdown is followed", append(rep(fast, 2), rep(slow, PaceWindow)...), mid, 456 * time.Millisecond},
	}
	for _, tc := range tests {
		p := NewPacer()
		p.Rand = tc.rand
		if got := answered(p, tc.took...); got != tc.want {
			t.Errorf("%s: NextBackOff after %v = %v, want %v", tc.name, tc.took, got, tc.want)
		}
	}
}

// Between the floor and the cap, the pause keeps the proxy's share of
// wall time spent answering us at Share of what it took beyond the
// millisecond of noise, and within 5% of all it took; with jitter, from
// the first answer on, over the first 4 seconds and the first minute.
func TestPacerShareOfProxyTime(t *testing.T) {
	for _, took := range []time.Duration{5 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond} {
		pause := answered(steady(), took, took)
		if share := float64(took-answerNoise) / float64(took+pause); share > DefaultShare+1e-9 || float64(took)/float64(took+pause) > 0.05 {
			t.Errorf("answer time %v: pause %v gives the proxy a %.1f%% share of work, want at most %.0f%%", took, pause, share*100, DefaultShare*100)
		}
	}
	const took = 20 * time.Millisecond
	for seed := range uint64(20) {
		for _, span := range []time.Duration{4 * time.Second, time.Minute} {
			p := NewPacer()
			p.Rand = rand.New(rand.NewPCG(seed, seed)).Float64
			var now, busy time.Duration
			for now < span {
				busy += took
				now += took + answered(p, took)
			}
			// The share over the span, the last attempt whole.
			if share := float64(busy) / float64(span+took); share > 0.05 {
				t.Errorf("seed %d, %v: the proxy spends %.2f%% of its time answering, want at most 5%%", seed, span, share*100)
			}
		}
	}
}

func TestPacerRefusedGrowsAndResets(t *testing.T) {
	p := steady()
	refused := func() time.Duration { p.Observe(Observation{Refused: true}); return p.NextBackOff() }
	for range 39 {
		refused()
	}
	if last := refused(); last != DefaultRefusedMax {
		t.Errorf("after 40 refusals the pause is %v, want the cap %v", last, DefaultRefusedMax)
	}
	// The port opens, then shuts again: fast once more.
	answered(p, 20*time.Millisecond, 20*time.Millisecond)
	if got := refused(); got != DefaultRefused {
		t.Errorf("first pause after the port shut again = %v, want %v", got, DefaultRefused)
	}
	// Whatever answers next is learnt afresh: one answer is not enough.
	if got := answered(p, 20*time.Millisecond); got != DefaultPollMin {
		t.Errorf("first pause after the port opened again = %v, want the floor %v", got, DefaultPollMin)
	}
}
