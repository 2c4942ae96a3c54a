//! When a failed destination is tried again: exponential backoff with jitter. The first retry
//! comes within `first`, each next one waits up to twice as long, capped at `cap`; a session
//! that streamed healthily for `reset_after` starts the sequence over.

use std::time::Duration;

pub struct Backoff {
    first: Duration,
    cap: Duration,
    reset_after: Duration,
    failures: u32,
    rng: u64,
}

pub const FIRST: Duration = Duration::from_secs(1);
pub const CAP: Duration = Duration::from_secs(30);
pub const RESET_AFTER: Duration = Duration::from_secs(30);

impl Backoff {
    /// `seed` spreads destinations (and relays) apart; any value works.
    pub fn new(first: Duration, cap: Duration, reset_after: Duration, seed: u64) -> Self {
        Backoff {
            first,
            cap,
            reset_after,
            failures: 0,
            rng: seed | 1,
        }
    }

    /// The wait before the next attempt, after a session that was healthy for `healthy`.
    pub fn next(&mut self, healthy: Duration) -> Duration {
        if healthy >= self.reset_after {
            self.failures = 0;
        }
        let ceiling = self
            .first
            .saturating_mul(1 << self.failures.min(16))
            .min(self.cap);
        self.failures = self.failures.saturating_add(1);
        // Uniform in [ceiling/2, ceiling]: never more than the ceiling, never a burst.
        let fraction = 0.5 + 0.5 * self.random();
        ceiling.mul_f64(fraction)
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// xorshift64*: jitter needs no more.
    fn random(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff(seed: u64) -> Backoff {
        Backoff::new(FIRST, CAP, RESET_AFTER, seed)
    }

    #[test]
    fn doubles_from_one_second_to_the_cap_with_jitter() {
        for seed in 0..50 {
            let mut b = backoff(seed);
            let waits: Vec<f64> = (0..10)
                .map(|_| b.next(Duration::ZERO).as_secs_f64())
                .collect();
            for (i, w) in waits.iter().enumerate() {
                let ceiling = (1u64 << i).min(30) as f64;
                assert!(
                    *w >= ceiling / 2.0 && *w <= ceiling,
                    "seed {seed}: wait {i} = {w}"
                );
            }
        }
    }

    #[test]
    fn a_refusing_destination_gets_at_most_eight_attempts_a_minute() {
        for seed in 0..200 {
            let mut b = backoff(seed);
            let (mut t, mut attempts) = (0.0, 1);
            loop {
                t += b.next(Duration::ZERO).as_secs_f64();
                if t > 60.0 {
                    break;
                }
                attempts += 1;
            }
            assert!(attempts <= 8, "seed {seed}: {attempts} attempts");
        }
    }

    #[test]
    fn healthy_streaming_resets_the_sequence() {
        let mut b = backoff(7);
        for _ in 0..6 {
            b.next(Duration::from_secs(2));
        }
        assert!(b.next(Duration::from_secs(1)) > Duration::from_secs(10));
        assert!(b.next(RESET_AFTER) <= FIRST);
        assert_eq!(b.failures(), 1);
    }

    #[test]
    fn seeds_spread_the_waits() {
        let a = backoff(1).next(Duration::ZERO);
        let b = backoff(2).next(Duration::ZERO);
        assert_ne!(a, b);
    }
}
