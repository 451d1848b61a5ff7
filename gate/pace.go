package gate

import (
	"math/rand/v2"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Defaults for a Pacer, chosen for a quick notice and a gentle load: a
// proxy that answers "not ready" in a millisecond or less is asked about
// 110 times a second (readiness noticed about 4 ms late at the median, half
// the floor); one that takes 20 ms to answer is asked about twice a
// second, so that it spends about 4% of its time on us.
//
// PaceWindow is how many recent answers the estimate of the proxy's cost
// per answer is taken from (see Pacer).
const (
	DefaultRefused    = 10 * time.Millisecond
	DefaultRefusedMax = 100 * time.Millisecond
	DefaultPollMin    = 8 * time.Millisecond
	DefaultPollMax    = time.Second
	DefaultShare      = 0.04
	DefaultJitter     = 0.2
	PaceWindow        = 5
)

// answerNoise is the part of an answer's time counted as noise, not as
// the proxy's work: the loopback round trip and the scheduling of two
// processes, which on a busy node come to about a millisecond for an
// answer that costs the proxy microseconds.
const answerNoise = time.Millisecond

// Pacer is the retry policy of a wait. It tells apart the two costs of
// polling: while the proxy's port refuses connections an attempt costs the
// proxy nothing, so it retries fast (Refused, growing slowly to RefusedMax
// if the port stays shut, to spare our own CPU); once the proxy answers, each
// attempt costs it the time it takes to answer, so the pause is that time
// scaled to keep the proxy's share of work for us at Share, within
// [Min, Max]. Pauses vary by ±Jitter so that pods started together drift
// apart.
//
// The time an attempt takes is the proxy's work plus noise: on a busy node
// the scheduler, a page fault or a collection in either process adds
// milliseconds to a sub-millisecond answer, and never takes any away. So
// the cost per answer is the lowest time among the last PaceWindow
// answers, less a millisecond of noise (answerNoise), not the last one's: a stray slow answer leaves the pause where it
// was (scaling it by 24 would add a 100 ms gap, and readiness noticed that
// much later), while a proxy that really slows down is followed once its
// last PaceWindow answers all took longer. One answer alone is not
// trusted with a long pause: the first answer after the start, or after
// the port was shut, is followed by the Min pause, and the next one
// confirms or corrects it. A proxy that takes 20 ms an answer from the
// start so gets one extra attempt, then the full pause.
//
// A Pacer is a backoff.BackOff and learns through Observe; it is not
// safe for concurrent use, and a wait makes its own.
type Pacer struct {
	Refused, RefusedMax time.Duration
	Min, Max            time.Duration
	Share               float64
	Jitter              float64
	// Rand returns a number in [0, 1); nil means math/rand/v2.
	Rand func() float64

	last    Observation
	took    [PaceWindow]time.Duration // ring of the latest answers' times
	answers int                       // answers in took, up to PaceWindow
	next    int                       // where the next answer goes in took
	refused *backoff.ExponentialBackOff
}

// NewPacer returns a Pacer with the defaults.
func NewPacer() *Pacer {
	return &Pacer{Refused: DefaultRefused, RefusedMax: DefaultRefusedMax, Min: DefaultPollMin,
		Max: DefaultPollMax, Share: DefaultShare, Jitter: DefaultJitter}
}

// Observe records the outcome of the attempt that NextBackOff will follow.
func (p *Pacer) Observe(o Observation) {
	p.last = o
	if o.Refused {
		// Nothing listens: whatever answers next is a new proxy, or one
		// starting again, whose cost is to be learnt afresh.
		p.answers, p.next = 0, 0
		return
	}
	if p.refused != nil {
		p.refused.Reset() // the port opened; if it closes again, start fast
	}
	p.took[p.next] = o.Took
	p.next = (p.next + 1) % PaceWindow
	p.answers = min(p.answers+1, PaceWindow)
}

// NextBackOff returns the pause before the next attempt.
func (p *Pacer) NextBackOff() time.Duration {
	if p.last.Refused {
		return p.refusedBackOff().NextBackOff()
	}
	// The proxy worked about cost for us; rest long enough that this is
	// Share of the time: pause = cost × (1 − Share) / Share.
	d := time.Duration(float64(p.cost()) * (1 - p.Share) / p.Share)
	d = min(max(d, p.Min), p.Max)
	return p.jitter(d)
}

// cost estimates the proxy's work per answer: the lowest of the latest
// answers' times less the noise, and nothing until two answers agree that
// it is more.
func (p *Pacer) cost() time.Duration {
	if p.answers < 2 {
		return 0
	}
	c := p.took[0]
	for _, t := range p.took[1:p.answers] {
		c = min(c, t)
	}
	return max(c-answerNoise, 0)
}

// Reset forgets what the pacer learnt.
func (p *Pacer) Reset() {
	p.last = Observation{}
	p.answers, p.next = 0, 0
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
