//! What every sink that writes to machines shares (`modbus`, `opcua`): the safety options,
//! the record of what each target was last sent (write on change, a minimum interval per
//! target, latest value wins), and the log of every write.
//!
//! Delivery is at most once per value, latest wins: a value waits while its target's
//! `min_interval` runs or while the device cannot be reached, and a newer value for the same
//! target replaces it (counted `superseded`), so no stale command reaches a machine after a
//! reconnect.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::info;
use weir_engine::PipelineError;
use weir_engine::observe::telemetry::SinkTelemetry;
use weir_engine::parse::Options;
use weir_engine::parse::options::{OptionSpec, OptionType};

/// `dry_run`.
pub const DRY_RUN: OptionSpec = OptionSpec::new(
    "dry_run",
    OptionType::Bool,
    "log what would be written and write nothing; a write sink writes only once this is set to `false` (and `weir run --no-writes` is not given)",
)
.default("true");
/// `write_on_change`.
pub const WRITE_ON_CHANGE: OptionSpec = OptionSpec::new(
    "write_on_change",
    OptionType::Bool,
    "a value equal to the last one written to its target is not sent again",
)
.default("true");
/// `min_interval`.
pub const MIN_INTERVAL: OptionSpec = OptionSpec::new(
    "min_interval",
    OptionType::Duration,
    "at most one write per target this often; a value coming sooner waits, and a newer one replaces it",
)
.default("0s");
/// `verify`.
pub const VERIFY: OptionSpec = OptionSpec::new(
    "verify",
    OptionType::Bool,
    "read each target back after writing it and count values that differ (`verify_mismatch`)",
)
.default("false");

/// The safety options of every write sink.
pub const OPTIONS: &[OptionSpec] = &[DRY_RUN, WRITE_ON_CHANGE, MIN_INTERVAL, VERIFY];

/// Writes (and refusals) logged per second at most; the line after a pause says how many
/// were left out.
const LOG_PER_SECOND: u32 = 20;

/// Failures after which the value is kept and tried again (the device may come back);
/// any other failure (an exception answer, a refused type) drops the value.
fn is_transient(kind: &str) -> bool {
    matches!(kind, "timeout" | "not_connected" | "connection_lost")
}

/// The safety settings.
#[derive(Debug, Clone)]
pub struct Safety {
    /// Log instead of writing.
    pub dry_run: bool,
    /// Skip values equal to the last one written.
    pub write_on_change: bool,
    /// Least time between two writes to one target.
    pub min_interval: Duration,
    /// Read back after writing.
    pub verify: bool,
}

impl Safety {
    /// Reads the options.
    pub fn from_options(o: &Options) -> Result<Safety, PipelineError> {
        Ok(Safety {
            dry_run: o.value(&DRY_RUN)?,
            write_on_change: o.value(&WRITE_ON_CHANGE)?,
            min_interval: o.value(&MIN_INTERVAL)?,
            verify: o.value(&VERIFY)?,
        })
    }
}

/// What was last sent to a target.
#[derive(Debug)]
struct Sent<V> {
    value: V,
    at: Instant,
}

/// Per target: the value last written and the one waiting to be, latest wins.
#[derive(Debug)]
pub struct Targets<K, V> {
    safety: Safety,
    sent: BTreeMap<K, Sent<V>>,
    waiting: BTreeMap<K, V>,
    telemetry: Arc<SinkTelemetry>,
    log: WriteLog,
}

impl<K: Ord + Clone + Display, V: PartialEq + Clone + Display> Targets<K, V> {
    /// No target written yet.
    pub fn new(safety: Safety, telemetry: Arc<SinkTelemetry>) -> Self {
        Self {
            safety,
            sent: BTreeMap::new(),
            waiting: BTreeMap::new(),
            log: WriteLog::default(),
            telemetry,
        }
    }

    /// The settings.
    pub fn safety(&self) -> &Safety {
        &self.safety
    }

    /// Turns every write into a dry run (`--no-writes`).
    pub fn forbid_writes(&mut self) {
        self.safety.dry_run = true;
    }

    /// The pipelines that insert into the sink, for the write log.
    pub fn set_pipelines(&mut self, pipelines: &[(String, String)]) {
        self.log.pipelines = pipelines
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(",");
    }

    /// A new value for `target`. Equal to the last one written (with `write_on_change`): not
    /// sent again. Otherwise it replaces what waits for the target and waits itself.
    pub fn offer(&mut self, target: K, value: V) {
        if self.waiting.remove(&target).is_some() {
            self.telemetry.values_written("superseded", 1);
        }
        if self.safety.write_on_change && self.sent.get(&target).is_some_and(|s| s.value == value) {
            self.telemetry.values_written("unchanged", 1);
            return;
        }
        self.waiting.insert(target, value);
    }

    /// A value that cannot be written (null, NaN, out of range): counted and logged.
    pub fn refuse(&mut self, target: &K, why: impl Display) {
        self.telemetry.values_written("refused", 1);
        if let Some(left_out) = self.log.admit() {
            tracing::warn!(sink = %self.telemetry.name(), pipelines = %self.log.pipelines,
                target = %target, reason = %why, not_logged = left_out, "value refused, nothing written");
        }
    }

    /// The values whose time has come (their target's `min_interval` is over), taken out of
    /// waiting, in target order; when `now` is before that, they stay.
    pub fn due(&mut self, now: Instant) -> Vec<(K, V)> {
        let min = self.safety.min_interval;
        let ready: Vec<K> = self
            .waiting
            .keys()
            .filter(|k| {
                self.sent
                    .get(*k)
                    .is_none_or(|s| now.duration_since(s.at) >= min)
            })
            .cloned()
            .collect();
        ready
            .into_iter()
            .filter_map(|k| self.waiting.remove(&k).map(|v| (k, v)))
            .collect()
    }

    /// When the next waiting value is due, if one waits.
    pub fn next_due(&self) -> Option<Instant> {
        self.waiting
            .keys()
            .map(|k| {
                self.sent
                    .get(k)
                    .map_or_else(Instant::now, |s| s.at + self.safety.min_interval)
            })
            .min()
    }

    /// `value` went to `target` (or would have: a dry run): remembered, counted, logged.
    pub fn written(&mut self, target: K, value: V, now: Instant) {
        let result = if self.safety.dry_run {
            "dry_run"
        } else {
            "written"
        };
        self.telemetry.values_written(result, 1);
        let old = self.sent.get(&target).map(|s| s.value.to_string());
        if let Some(left_out) = self.log.admit() {
            let old = old.as_deref().unwrap_or("(none since start)");
            if self.safety.dry_run {
                info!(sink = %self.telemetry.name(), pipelines = %self.log.pipelines, target = %target,
                    old = %old, new = %value, not_logged = left_out, "dry run: would write");
            } else {
                info!(sink = %self.telemetry.name(), pipelines = %self.log.pipelines, target = %target,
                    old = %old, new = %value, not_logged = left_out, "wrote");
            }
        }
        self.sent.insert(target, Sent { value, at: now });
    }

    /// Writing `value` to `target` failed with `kind` (a metric label): a transient failure
    /// keeps the value to try again unless a newer one came meanwhile; any other drops it.
    pub fn failed(&mut self, target: K, value: V, kind: &'static str, detail: impl Display) {
        self.telemetry.values_written(kind, 1);
        if let Some(left_out) = self.log.admit() {
            tracing::warn!(sink = %self.telemetry.name(), pipelines = %self.log.pipelines, target = %target,
                value = %value, reason = kind, error = %detail, not_logged = left_out,
                retry = is_transient(kind), "write failed");
        }
        if is_transient(kind) {
            self.waiting.entry(target).or_insert(value);
        }
    }

    /// A read back after writing `target` found `found` instead of what was written.
    pub fn mismatch(&mut self, target: &K, found: impl Display) {
        self.telemetry.values_written("verify_mismatch", 1);
        if let Some(left_out) = self.log.admit() {
            tracing::warn!(sink = %self.telemetry.name(), target = %target, found = %found,
                not_logged = left_out, "read back after writing differs");
        }
    }

    /// Values still waiting (at the end of a run they are not written: counted).
    pub fn abandon_waiting(&mut self) -> usize {
        let n = self.waiting.len();
        if n > 0 {
            self.telemetry.values_written("not_sent", n as u64);
            tracing::warn!(sink = %self.telemetry.name(), values = n,
                "values still waiting at the end of the run were not written");
        }
        self.waiting.clear();
        n
    }
}

/// Where writes are logged: every one, up to [`LOG_PER_SECOND`] a second.
#[derive(Debug, Default)]
struct WriteLog {
    pipelines: String,
    /// The current second and the lines logged in it.
    second: Option<(std::time::Instant, u32)>,
    /// Lines left out since the last one logged.
    unlogged: u64,
}

impl WriteLog {
    /// `Some(n)` when this line is logged, `n` being the lines left out before it.
    fn admit(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        let (start, lines) = self
            .second
            .filter(|(start, _)| now.duration_since(*start) < Duration::from_secs(1))
            .unwrap_or((now, 0));
        if lines >= LOG_PER_SECOND {
            self.unlogged += 1;
            return None;
        }
        self.second = Some((start, lines + 1));
        Some(std::mem::take(&mut self.unlogged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(write_on_change: bool, min_interval: Duration) -> Targets<String, i64> {
        Targets::new(
            Safety {
                dry_run: false,
                write_on_change,
                min_interval,
                verify: false,
            },
            Arc::new(SinkTelemetry::new("t")),
        )
    }

    #[test]
    fn latest_value_wins_and_equal_values_are_not_sent_again() {
        let mut t = targets(true, Duration::from_secs(10));
        let now = Instant::now();
        t.offer("a".into(), 1);
        assert_eq!(t.due(now), vec![("a".to_string(), 1)]);
        t.written("a".into(), 1, now);
        t.offer("a".into(), 1);
        assert!(t.due(now).is_empty(), "equal to the last written");
        t.offer("a".into(), 2);
        t.offer("a".into(), 3);
        assert!(
            t.due(now + Duration::from_secs(9)).is_empty(),
            "min_interval"
        );
        assert_eq!(t.next_due(), Some(now + Duration::from_secs(10)));
        assert_eq!(
            t.due(now + Duration::from_secs(10)),
            vec![("a".to_string(), 3)]
        );
        let c = t.telemetry.counts();
        assert_eq!(
            (
                c.writes["written"],
                c.writes["unchanged"],
                c.writes["superseded"]
            ),
            (1, 1, 1)
        );
    }

    #[test]
    fn a_failed_value_is_retried_only_while_nothing_newer_came() {
        let mut t = targets(false, Duration::ZERO);
        let now = Instant::now();
        t.offer("a".into(), 1);
        let (k, v) = t.due(now).remove(0);
        t.failed(k, v, "timeout", "no answer");
        t.offer("a".into(), 2);
        assert_eq!(t.due(now), vec![("a".to_string(), 2)], "1 is never retried");
        t.failed("a".into(), 2, "illegal_data_address", "exception");
        assert!(t.due(now).is_empty(), "exceptions are not retried");
    }
}
