//! What a source reports about its input besides rows: inputs it skipped (by reason) and its
//! connection state. Shared between the source's task and the engine's summary, and mirrored
//! to metrics.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use tracing::warn;

/// How often at most a source logs one skipped input (the rest are counted).
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Connection state of a source that talks to a device or broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    /// The source does not connect to anything (or has not tried yet).
    NotApplicable,
    /// Connected.
    Up,
    /// Not connected; the source is retrying.
    Down,
}

/// Counters of one source.
#[derive(Debug)]
pub struct SourceHealth {
    name: String,
    skipped: Mutex<Skipped>,
    connection: AtomicU8,
}

#[derive(Debug, Default)]
struct Skipped {
    by_reason: BTreeMap<&'static str, u64>,
    last_log: Option<Instant>,
    unlogged: u64,
}

impl SourceHealth {
    /// Counters for source `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            skipped: Mutex::default(),
            connection: AtomicU8::new(0),
        }
    }

    /// Counts one skipped input (a message, a line, a register read) of `reason`
    /// (`snake_case`, a metric label) and logs it with `context` (e.g. the topic) and
    /// `detail`, at most once every few seconds per source.
    pub fn skip(&self, reason: &'static str, context: &str, detail: impl Display) {
        metrics::counter!("weir_source_skipped_total", "source" => self.name.clone(), "reason" => reason)
            .increment(1);
        let mut s = self.skipped.lock().unwrap_or_else(|e| e.into_inner());
        *s.by_reason.entry(reason).or_default() += 1;
        let now = Instant::now();
        if s.last_log
            .is_some_and(|t| now.duration_since(t) < LOG_EVERY)
        {
            s.unlogged += 1;
            return;
        }
        let unlogged = std::mem::take(&mut s.unlogged);
        s.last_log = Some(now);
        drop(s);
        warn!(
            source = %self.name,
            reason,
            context,
            error = %detail,
            not_logged_since_last = unlogged,
            "input skipped"
        );
    }

    /// Skipped inputs by reason so far.
    pub fn skipped(&self) -> BTreeMap<&'static str, u64> {
        let s = self.skipped.lock().unwrap_or_else(|e| e.into_inner());
        s.by_reason.clone()
    }

    /// Records the connection state (metric `weir_source_connected`: 1 up, 0 down).
    pub fn set_connection(&self, c: Connection) {
        let v = match c {
            Connection::NotApplicable => 0,
            Connection::Up => 1,
            Connection::Down => 2,
        };
        self.connection.store(v, Ordering::Relaxed);
        if c != Connection::NotApplicable {
            metrics::gauge!("weir_source_connected", "source" => self.name.clone())
                .set(if c == Connection::Up { 1.0 } else { 0.0 });
        }
    }

    /// The last recorded connection state.
    pub fn connection(&self) -> Connection {
        match self.connection.load(Ordering::Relaxed) {
            1 => Connection::Up,
            2 => Connection::Down,
            _ => Connection::NotApplicable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_are_counted_by_reason_even_when_not_logged() {
        let h = SourceHealth::new("s");
        for _ in 0..3 {
            h.skip("malformed_json", "t/1", "expected value");
        }
        h.skip("oversized", "t/2", "2 MiB");
        let s = h.skipped();
        assert_eq!(s["malformed_json"], 3);
        assert_eq!(s["oversized"], 1);
        h.set_connection(Connection::Down);
        assert_eq!(h.connection(), Connection::Down);
    }
}
