package gate

import (
	"math/rand/v2"
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
	mid := func() float64 { return 0.5 }
	tests := []struct {
		name string
		took time.Duration
		rand func() float64
		want time.Duration
	}{
		{"fast answers: the floor", 200 * time.Microsecond, mid, DefaultPollMin},
		{"20ms answers: 24 times as long, less the noise", 20 * time.Millisecond, mid, 456 * time.Millisecond},
		{"hung attempts: the cap", time.Second, mid, DefaultPollMax},
		{"jitter low", 20 * time.Millisecond, func() float64 { return 0 }, 364800 * time.Microsecond},
		{"jitter high", 20 * time.Millisecond, func() float64 { return 1 }, 547200 * time.Microsecond},
	}
	for _, tc := range tests {
		p := NewPacer()
		p.Rand = tc.rand
		if got := answered(p, tc.took, tc.took); got != tc.want {
			t.Errorf("%s: NextBackOff after two answers = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestPacerOneAnswerIsNotTrusted(t *testing.T) {
	// The first answer may be slow for reasons of our own (a cold start, a
	// busy core): it earns the floor pause, and the second one decides.
	p := NewPacer()
	p.Jitter = 0
	if got := answered(p, 20*time.Millisecond); got != DefaultPollMin {
		t.Errorf("pause after a first 20 ms answer = %v, want the floor %v", got, DefaultPollMin)
	}
	if got := answered(p, 20*time.Millisecond); got != 456*time.Millisecond {
		t.Errorf("pause after a second 20 ms answer = %v, want 456ms", got)
	}
}

func TestPacerNoisyAnswerKeepsThePause(t *testing.T) {
	fast := 300 * time.Microsecond
	noisy := 6 * time.Millisecond // a busy machine, not a busy proxy
	p := NewPacer()
	p.Jitter = 0
	answered(p, fast, fast, fast)
	// Up to PaceWindow−1 noisy answers in a row leave a fast one in the
	// window: the pause stays at the floor, where the last answer alone
	// would make it 144 ms.
	for i := range PaceWindow - 1 {
		if got := answered(p, noisy); got != DefaultPollMin {
			t.Fatalf("pause after %d noisy answers = %v, want the floor %v", i+1, got, DefaultPollMin)
		}
	}
	// A fast answer among noisy ones resets the count.
	answered(p, fast)
	for range PaceWindow - 1 {
		if got := answered(p, noisy); got != DefaultPollMin {
			t.Fatalf("pause after a fast answer and then noisy ones = %v, want the floor %v", got, DefaultPollMin)
		}
	}
}

func TestPacerFollowsARealSlowdown(t *testing.T) {
	p := NewPacer()
	p.Jitter = 0
	answered(p, time.Millisecond/4, time.Millisecond/4)
	slow := 20 * time.Millisecond
	var got time.Duration
	for range PaceWindow {
		got = answered(p, slow)
	}
	if got != 456*time.Millisecond {
		t.Errorf("pause after %d answers of %v = %v, want 456ms", PaceWindow, slow, got)
	}
}

func TestPacerSlowProxyShare(t *testing.T) {
	// A proxy that takes 20 ms to answer, from the first answer on, over
	// the first 4 seconds and the first minute, on a clock of our own: the
	// share of its time it spends answering us stays at most 5%, the
	// extra attempt of the start included.
	const took = 20 * time.Millisecond
	for seed := range uint64(20) {
		for _, span := range []time.Duration{4 * time.Second, time.Minute} {
			p := NewPacer()
			r := rand.New(rand.NewPCG(seed, seed))
			p.Rand = r.Float64
			var now, busy time.Duration
			for now < span {
				busy += took
				now += took
				p.Observe(Observation{Took: took})
				now += p.NextBackOff()
			}
			// The share over the span, the last attempt whole.
			if share := float64(busy) / float64(span+took); share > 0.05 {
				t.Errorf("seed %d, %v: the proxy spends %.2f%% of its time answering, want at most 5%%", seed, span, share*100)
			}
		}
	}
}

func TestPacerShareOfProxyTime(t *testing.T) {
	// Between the floor and the cap, the pause keeps the proxy's share of the wall time
	// spent answering at Share of what it took beyond the millisecond
	// counted as noise, and so within 5% of all it took.
	for _, took := range []time.Duration{5 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond} {
		p := NewPacer()
		p.Rand = func() float64 { return 0.5 }
		pause := answered(p, took, took)
		if share := float64(took-answerNoise) / float64(took+pause); share > DefaultShare+1e-9 {
			t.Errorf("answer time %v: pause %v gives the proxy a %.1f%% share of work, want at most %.0f%%", took, pause, share*100, DefaultShare*100)
		}
		if share := float64(took) / float64(took+pause); share > 0.05 {
			t.Errorf("answer time %v: pause %v gives the proxy a %.1f%% share, want at most 5%%", took, pause, share*100)
		}
	}
}

func TestPacerNoiseIsFree(t *testing.T) {
	// Answers that take about a millisecond, the loopback round trip and
	// the scheduling of two busy processes, leave the pause at the floor.
	p := NewPacer()
	p.Jitter = 0
	if got := answered(p, time.Millisecond, 1100*time.Microsecond, 900*time.Microsecond); got != DefaultPollMin {
		t.Errorf("pause after answers of about 1 ms = %v, want the floor %v", got, DefaultPollMin)
	}
}

func TestPacerRefusedGrowsAndResets(t *testing.T) {
	p := NewPacer()
	p.Jitter = 0
	var last time.Duration
	for range 40 {
		p.Observe(Observation{Refused: true})
		last = p.NextBackOff()
	}
	if last != DefaultRefusedMax {
		t.Errorf("after 40 refusals the pause is %v, want the cap %v", last, DefaultRefusedMax)
	}
	// The port opens, then shuts again: fast once more.
	answered(p, 20*time.Millisecond, 20*time.Millisecond)
	p.Observe(Observation{Refused: true})
	if got := p.NextBackOff(); got != DefaultRefused {
		t.Errorf("first pause after the port shut again = %v, want %v", got, DefaultRefused)
	}
	// Whatever answers next is learnt afresh: one answer is not enough.
	if got := answered(p, 20*time.Millisecond); got != DefaultPollMin {
		t.Errorf("first pause after the port opened again = %v, want the floor %v", got, DefaultPollMin)
	}
}
