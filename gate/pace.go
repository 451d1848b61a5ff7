package gate

import (
	"math/rand/v2"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Defaults for a Pacer, chosen for a quick notice and a gentle load: a
// proxy that answers "not ready" in well under a millisecond is asked
// about 90 times a second (readiness noticed about 5 ms late on average);
// one that takes 20 ms to answer is asked about twice a second, so that it
// spends 4% of its time on us.
const (
	DefaultRefused    = 10 * time.Millisecond
	DefaultRefusedMax = 100 * time.Millisecond
	DefaultPollMin    = 10 * time.Millisecond
	DefaultPollMax    = time.Second
	DefaultShare      = 0.04
	DefaultJitter     = 0.2
)

// Pacer is the retry policy of a wait. It tells apart the two costs of
// polling: while the proxy's port refuses connections an attempt costs the
// proxy nothing, so it retries fast (Refused, growing slowly to RefusedMax
// if the port stays shut, to spare our own CPU); once the proxy answers, each
// attempt costs it the time it takes to answer, so the pause is that time
// scaled to keep the proxy's share of work for us at Share, within
// [Min, Max]. Pauses vary by ±Jitter so that pods started together drift
// apart. A Pacer is a backoff.BackOff and learns through Observe; it is not
// safe for concurrent use, and a wait makes its own.
type Pacer struct {
	Refused, RefusedMax time.Duration
	Min, Max            time.Duration
	Share               float64
	Jitter              float64
	// Rand returns a number in [0, 1); nil means math/rand/v2.
	Rand func() float64

	last    Observation
	refused *backoff.ExponentialBackOff
}

// NewPacer returns a Pacer with the defaults.
func NewPacer() *Pacer {
	return &Pacer{Refused: DefaultRefused, RefusedMax: DefaultRefusedMax, Min: DefaultPollMin,
		Max: DefaultPollMax, Share: DefaultShare, Jitter: DefaultJitter}
}

// Observe records the outcome of the attempt that NextBackOff will follow.
func (p *Pacer) Observe(o Observation) {
	if !o.Refused && p.refused != nil {
		p.refused.Reset() // the port opened; if it closes again, start fast
	}
	p.last = o
}

// NextBackOff returns the pause before the next attempt.
func (p *Pacer) NextBackOff() time.Duration {
	if p.last.Refused {
		return p.refusedBackOff().NextBackOff()
	}
	// The proxy worked Took for us; rest long enough that this is Share
	// of the time: pause = Took × (1 − Share) / Share.
	d := time.Duration(float64(p.last.Took) * (1 - p.Share) / p.Share)
	d = min(max(d, p.Min), p.Max)
	return p.jitter(d)
}

// Reset forgets what the pacer learnt.
func (p *Pacer) Reset() {
	p.last = Observation{}
	p.refused = nil
}

// refusedBackOff grows the pause while the port stays shut; backoff's own
// jitter spreads it.
func (p *Pacer) refusedBackOff() *backoff.ExponentialBackOff {
	if p.refused == nil {
		p.refused = backoff.NewExponentialBackOff(
			backoff.WithInitialInterval(p.Refused),
			backoff.WithMaxInterval(max(p.RefusedMax, p.Refused)),
			backoff.WithMultiplier(1.1),
			backoff.WithRandomizationFactor(p.Jitter),
			backoff.WithMaxElapsedTime(0),
		)
	}
	return p.refused
}

func (p *Pacer) jitter(d time.Duration) time.Duration {
	r := rand.Float64
	if p.Rand != nil {
		r = p.Rand
	}
	return time.Duration(float64(d) * (1 + p.Jitter*(2*r()-1)))
}
