package gate

import (
	"testing"
	"time"
)

func TestPacer(t *testing.T) {
	mid := func() float64 { return 0.5 }
	tests := []struct {
		name string
		took time.Duration
		rand func() float64
		want time.Duration
	}{
		{"fast answer: the floor", 200 * time.Microsecond, mid, DefaultPollMin},
		{"20ms answer: 24 times as long", 20 * time.Millisecond, mid, 480 * time.Millisecond},
		{"hung attempt: the cap", time.Second, mid, DefaultPollMax},
		{"jitter low", 20 * time.Millisecond, func() float64 { return 0 }, 384 * time.Millisecond},
		{"jitter high", 20 * time.Millisecond, func() float64 { return 1 }, 576 * time.Millisecond},
	}
	for _, tc := range tests {
		p := NewPacer()
		p.Rand = tc.rand
		p.Observe(Observation{Took: tc.took})
		if got := p.NextBackOff(); got != tc.want {
			t.Errorf("%s: NextBackOff = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestPacerShareOfProxyTime(t *testing.T) {
	// Whatever the answer time, the proxy's share of the wall time spent
	// answering stays at Share, until the floor or the cap takes over.
	for _, took := range []time.Duration{time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond} {
		p := NewPacer()
		p.Rand = func() float64 { return 0.5 }
		p.Observe(Observation{Took: took})
		pause := p.NextBackOff()
		if share := float64(took) / float64(took+pause); share > DefaultShare+1e-9 {
			t.Errorf("answer time %v: pause %v gives the proxy a %.1f%% share, want at most %.0f%%", took, pause, share*100, DefaultShare*100)
		}
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
	p.Observe(Observation{Took: time.Millisecond})
	p.NextBackOff()
	p.Observe(Observation{Refused: true})
	if got := p.NextBackOff(); got != DefaultRefused {
		t.Errorf("first pause after the port shut again = %v, want %v", got, DefaultRefused)
	}
}
