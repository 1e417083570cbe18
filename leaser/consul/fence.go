package consul

import "time"

// fence is the arithmetic of a held lease's deadlines: from the times the
// last acknowledged renewal and check pass were sent, when the next must
// have been answered, and until when this node may take writes.
//
// Every bound counts from when a request was sent: Consul acted on it no
// earlier, so a timer it reset then runs out no earlier than that plus its
// length.
//
//   - The session TTL: Consul invalidates the session no sooner than TTL
//     after the last renewal. A renewal must be answered within 3/4 of the
//     TTL, and writes stop then too.
//   - The check (checkTTL > 0): the agent turns the check critical no
//     sooner than checkTTL after the last pass, and only then invalidates
//     the session and keeps the lock from every node for lockDelay. A pass
//     must be answered within checkTTL minus a margin of a quarter of it,
//     or the check may have lapsed in between: a later pass turns the check
//     passing again but does not bring the session back, so it does not
//     count. Writes stop by that time plus lockDelay: before any other node
//     could take the lock after a check-triggered invalidation.
type fence struct {
	ttl       time.Duration // the session's TTL
	checkTTL  time.Duration // the check's TTL; 0: the session has no check of this node's
	lockDelay time.Duration // Consul's lock-delay on the lease's key
}

// margin is how long before the check could lapse a pass must have been
// answered.
func (f fence) margin() time.Duration { return f.checkTTL / 4 }

// renewBy is when a renewal must have been answered, the last acknowledged
// one having been sent at renewed.
func (f fence) renewBy(renewed time.Time) time.Time { return renewed.Add(f.ttl * 3 / 4) }

// passBy is when a check pass must have been answered, the last
// acknowledged one having been sent at passed.
func (f fence) passBy(passed time.Time) time.Time { return passed.Add(f.checkTTL - f.margin()) }

// validUntil is when this node must stop taking writes, unless a renewal
// or pass acknowledged before then moves it.
func (f fence) validUntil(renewed, passed time.Time) time.Time {
	until := f.renewBy(renewed)
	if f.checkTTL > 0 {
		if c := f.passBy(passed).Add(f.lockDelay); c.Before(until) {
			until = c
		}
	}
	return until
}

// passEvery is how often the node passes its check: three times within
// passBy, and a failed pass is retried at twice that rate, so that it
// takes several failures in a row to lose the lease.
func (f fence) passEvery() time.Duration { return f.checkTTL / 4 }
