//! Rate limiting of repeating log lines: the first occurrence is logged, later ones at most
//! once per period, each with the number left out since the last line.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sync::lock;

/// How often at most one kind of repeating event is logged.
pub const LOG_EVERY: Duration = Duration::from_secs(5);

/// Decides when a repeating event is logged.
#[derive(Debug)]
pub struct LogLimit {
    every: Duration,
    state: Mutex<LimitState>,
}

#[derive(Debug, Default)]
struct LimitState {
    last: Option<Instant>,
    unlogged: u64,
}

impl Default for LogLimit {
    fn default() -> Self {
        Self::new(LOG_EVERY)
    }
}

impl LogLimit {
    /// At most one line per `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            state: Mutex::default(),
        }
    }

    /// `Some(n)` when this occurrence should be logged, `n` being the occurrences left out
    /// since the last logged one; `None` when it should only be counted.
    pub fn admit(&self) -> Option<u64> {
        let mut s = lock(&self.state);
        let now = Instant::now();
        if s.last.is_some_and(|t| now.duration_since(t) < self.every) {
            s.unlogged += 1;
            return None;
        }
        s.last = Some(now);
        Some(std::mem::take(&mut s.unlogged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_is_logged_then_counted() {
        let l = LogLimit::new(Duration::from_secs(3600));
        assert_eq!(l.admit(), Some(0));
        assert_eq!(l.admit(), None);
        assert_eq!(l.admit(), None);
        let l = LogLimit::new(Duration::ZERO);
        assert_eq!(l.admit(), Some(0));
        assert_eq!(l.admit(), Some(0));
    }
}
