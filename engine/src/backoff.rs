//! Delays between reconnection attempts: exponential with jitter, capped, and reset once a
//! connection succeeds.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// First delay after a failure.
const FIRST: Duration = Duration::from_millis(200);
/// Longest delay between attempts.
const LONGEST: Duration = Duration::from_secs(30);

/// Reconnection delays of one connection.
#[derive(Debug)]
pub struct Reconnect {
    delays: ExponentialBackoff,
}

fn delays() -> ExponentialBackoff {
    ExponentialBuilder::new()
        .with_min_delay(FIRST)
        .with_max_delay(LONGEST)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

impl Default for Reconnect {
    fn default() -> Self {
        Self { delays: delays() }
    }
}

impl Reconnect {
    /// How long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(LONGEST)
    }

    /// Starts over after a successful connection.
    pub fn reset(&mut self) {
        self.delays = delays();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_start_over_after_reset() {
        let mut r = Reconnect::default();
        let first = r.next_delay();
        assert!(first >= FIRST && first <= 2 * FIRST, "{first:?}");
        let later: Vec<Duration> = (0..20).map(|_| r.next_delay()).collect();
        assert!(later.iter().all(|d| *d <= 2 * LONGEST));
        assert!(*later.last().unwrap() >= LONGEST);
        r.reset();
        assert!(r.next_delay() <= 2 * FIRST);
    }
}
