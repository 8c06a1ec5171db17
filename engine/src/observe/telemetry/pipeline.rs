//! A pipeline's telemetry: rows in and out, windows emitted, late rows, failed batches, how
//! late windows leave, how far the watermark lags and how its latest table is bounded. Updated by the dataflow and the window
//! operators, read by the run summary and the live system tables.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::warn;

use crate::sync::lock;

use super::{
    Count, JOIN_UNMATCHED, LATE_ROWS, LIVE_LATEST_DROPPED, LIVE_LATEST_EVICTED, LIVE_LATEST_KEYS,
    Lazy, LogLimit, PIPELINE_EARLY_WINDOWS, PIPELINE_ERRORS, PIPELINE_OPEN_WINDOWS,
    PIPELINE_REFUSED_ROWS, PIPELINE_ROW_ERRORS, PIPELINE_ROWS_IN, PIPELINE_ROWS_OUT,
    PIPELINE_STATE_BYTES, PIPELINE_STATE_GROUPS, PIPELINE_WINDOWS, WATERMARK_LAG,
    WINDOW_EMIT_DELAY,
};

/// A pipeline's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PipelineCounts {
    /// Rows read.
    pub rows_in: u64,
    /// Rows produced.
    pub rows_out: u64,
    /// Rows dropped because their window had been emitted.
    pub late_rows: u64,
    /// Windows emitted (one per window, not per group).
    pub windows_emitted: u64,
    /// Batches that failed as a whole (evaluating them failed where rows cannot be told
    /// apart, such as an aggregate's state).
    pub errors: u64,
    /// Rows dropped because evaluating them failed, by reason.
    #[serde(deserialize_with = "super::by_reason")]
    pub row_errors: BTreeMap<&'static str, u64>,
    /// Group keys in its latest table.
    pub latest_keys: u64,
    /// Group keys evicted from its latest table (count or age bound).
    pub latest_evicted: u64,
    /// Rows its latest table did not take because it was behind.
    pub latest_dropped_rows: u64,
    /// Bytes of window state held, as of the last batch.
    pub state_bytes: u64,
    /// Open windows (panes, sessions), as of the dataflow's last tick.
    pub open_windows: u64,
    /// Partial-state rows (window or pane × group key), as of the dataflow's last tick.
    pub state_groups: u64,
    /// Windows emitted early because the state reached its budget (`emit_early`).
    pub windows_emitted_early: u64,
    /// Rows of new keys refused because the state was at its budget (`drop_new_keys`).
    pub refused_rows: u64,
    /// Stopped because its state reached its budget (`fail`).
    pub state_failed: bool,
    /// Rows an inner join with a reference table dropped for want of a match.
    pub join_unmatched_rows: u64,
}

impl PipelineCounts {
    /// Rows dropped because evaluating them failed, of every reason.
    pub fn row_errors_total(&self) -> u64 {
        self.row_errors.values().sum()
    }
}

struct RowErrors {
    count: u64,
    metric: metrics::Counter,
}

/// The telemetry of one view or insert.
pub struct PipelineTelemetry {
    name: String,
    rows_in: Count,
    rows_out: Count,
    late_rows: Count,
    windows: Count,
    errors: Count,
    error_log: LogLimit,
    row_errors: Mutex<BTreeMap<&'static str, RowErrors>>,
    row_log: LogLimit,
    emit_delay: Lazy<metrics::Histogram>,
    watermark_lag: Lazy<metrics::Gauge>,
    latest_keys: AtomicU64,
    latest_keys_gauge: Lazy<metrics::Gauge>,
    latest_evicted_keys: Count,
    latest_evicted_age: Count,
    latest_dropped: Count,
    latest_log: LogLimit,
    state_bytes: AtomicU64,
    state_gauge: Lazy<metrics::Gauge>,
    open_windows: AtomicU64,
    state_groups: AtomicU64,
    extent_gauges: Lazy<[metrics::Gauge; 2]>,
    early_windows: Count,
    refused_rows: Count,
    join_unmatched: Count,
    budget_log: LogLimit,
    state_failed: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for PipelineTelemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineTelemetry")
            .field("name", &self.name)
            .field("counts", &self.counts())
            .finish()
    }
}

impl PipelineTelemetry {
    /// Telemetry for pipeline `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            rows_in: Count::default(),
            rows_out: Count::default(),
            late_rows: Count::default(),
            windows: Count::default(),
            errors: Count::default(),
            error_log: LogLimit::default(),
            row_errors: Mutex::default(),
            row_log: LogLimit::default(),
            emit_delay: Lazy::default(),
            watermark_lag: Lazy::default(),
            latest_keys: AtomicU64::new(0),
            latest_keys_gauge: Lazy::default(),
            latest_evicted_keys: Count::default(),
            latest_evicted_age: Count::default(),
            latest_dropped: Count::default(),
            latest_log: LogLimit::default(),
            state_bytes: AtomicU64::new(0),
            state_gauge: Lazy::default(),
            open_windows: AtomicU64::new(0),
            state_groups: AtomicU64::new(0),
            extent_gauges: Lazy::default(),
            early_windows: Count::default(),
            refused_rows: Count::default(),
            join_unmatched: Count::default(),
            budget_log: LogLimit::default(),
            state_failed: Default::default(),
        }
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `rows` rows came in.
    pub fn rows_in(&self, rows: u64) {
        self.rows_in
            .add(rows, || PIPELINE_ROWS_IN.counter_with(&[&self.name]));
    }

    /// `rows` rows went out.
    pub fn rows_out(&self, rows: u64) {
        self.rows_out
            .add(rows, || PIPELINE_ROWS_OUT.counter_with(&[&self.name]));
    }

    /// `rows` rows arrived after their window had been emitted and were dropped.
    pub fn late(&self, rows: u64) {
        if rows > 0 {
            self.late_rows
                .add(rows, || LATE_ROWS.counter_with(&[&self.name]));
        }
    }

    /// `windows` more windows were emitted.
    pub fn windows_emitted(&self, windows: u64) {
        if windows > 0 {
            self.windows
                .add(windows, || PIPELINE_WINDOWS.counter_with(&[&self.name]));
        }
    }

    /// A window left `seconds` after its end (wall clock minus event time).
    pub fn emit_delay(&self, seconds: f64) {
        self.emit_delay
            .get(|| WINDOW_EMIT_DELAY.histogram_with(&[&self.name]))
            .record(seconds);
    }

    /// The watermark is `seconds` behind the wall clock.
    pub fn watermark_lag(&self, seconds: f64) {
        self.watermark_lag
            .get(|| WATERMARK_LAG.gauge_with(&[&self.name]))
            .set(seconds);
    }

    /// Evaluating a batch failed; its rows are dropped.
    pub fn failed(&self, error: impl Display) {
        self.errors
            .add(1, || PIPELINE_ERRORS.counter_with(&[&self.name]));
        if let Some(unlogged) = self.error_log.admit() {
            warn!(pipeline = %self.name, error = %error, not_logged_since_last = unlogged,
                "batch dropped: evaluating it failed");
        }
    }

    /// A row could not be evaluated (`reason`, a metric label; `message` names the
    /// expression) and was dropped; the other rows of its batch went on.
    pub fn row_failed(&self, reason: &'static str, message: &str) {
        {
            let mut r = lock(&self.row_errors);
            let e = r.entry(reason).or_insert_with(|| RowErrors {
                count: 0,
                metric: PIPELINE_ROW_ERRORS.counter_with(&[&self.name, reason]),
            });
            e.count += 1;
            e.metric.increment(1);
        }
        if let Some(unlogged) = self.row_log.admit() {
            warn!(pipeline = %self.name, reason, error = %message, not_logged_since_last = unlogged,
                "row dropped: evaluating it failed");
        }
    }

    /// Its latest table holds `keys` keys after evicting `by_count` for the key bound and
    /// `by_age` for the age bound.
    pub fn latest_kept(&self, keys: usize, by_count: u64, by_age: u64) {
        self.latest_keys.store(keys as u64, Ordering::Relaxed);
        self.latest_keys_gauge
            .get(|| LIVE_LATEST_KEYS.gauge_with(&[&self.name]))
            .set(keys as f64);
        if by_count > 0 {
            self.latest_evicted_keys.add(by_count, || {
                LIVE_LATEST_EVICTED.counter_with(&[&self.name, "keys"])
            });
        }
        if by_age > 0 {
            self.latest_evicted_age.add(by_age, || {
                LIVE_LATEST_EVICTED.counter_with(&[&self.name, "age"])
            });
        }
    }

    /// Its latest table was behind and did not take `rows` rows of emitted windows.
    pub fn latest_dropped(&self, rows: u64) {
        self.latest_dropped
            .add(rows, || LIVE_LATEST_DROPPED.counter_with(&[&self.name]));
        if let Some(unlogged) = self.latest_log.admit() {
            warn!(pipeline = %self.name, rows, not_logged_since_last = unlogged,
                "latest table behind: rows of emitted windows not taken into it (the pipeline's output is not affected)");
        }
    }

    /// It holds `bytes` of window state.
    pub fn state_bytes(&self, bytes: usize) {
        self.state_bytes.store(bytes as u64, Ordering::Relaxed);
        self.state_gauge
            .get(|| PIPELINE_STATE_BYTES.gauge_with(&[&self.name]))
            .set(bytes as f64);
    }

    /// It holds `windows` windows open with `groups` partial-state rows.
    pub fn extent(&self, windows: usize, groups: usize) {
        self.open_windows.store(windows as u64, Ordering::Relaxed);
        self.state_groups.store(groups as u64, Ordering::Relaxed);
        let [w, g] = self.extent_gauges.get(|| {
            [
                PIPELINE_OPEN_WINDOWS.gauge_with(&[&self.name]),
                PIPELINE_STATE_GROUPS.gauge_with(&[&self.name]),
            ]
        });
        w.set(windows as f64);
        g.set(groups as f64);
    }

    /// Its state of `bytes` reached `budget` (`limit` bytes): `windows` open windows were
    /// emitted early.
    pub fn emitted_early(&self, windows: u64, bytes: usize, budget: &str, limit: usize) {
        if windows == 0 {
            return;
        }
        self.early_windows.add(windows, || {
            PIPELINE_EARLY_WINDOWS.counter_with(&[&self.name])
        });
        if let Some(unlogged) = self.budget_log.admit() {
            warn!(pipeline = %self.name, state_bytes = bytes, budget, limit, windows, not_logged_since_last = unlogged,
                "window state reached its budget: the oldest open windows were emitted early, as partial results (state_policy emit_early)");
        }
    }

    /// Its state of `bytes` reached `budget` (`limit` bytes): rows of new keys are refused
    /// from now on (`drop_new_keys`).
    pub fn refusing_new_keys(&self, bytes: usize, budget: &str, limit: usize) {
        if let Some(unlogged) = self.budget_log.admit() {
            warn!(pipeline = %self.name, state_bytes = bytes, budget, limit, not_logged_since_last = unlogged,
                "window state reached its budget: rows of keys without state are dropped until it is under 90% again (state_policy drop_new_keys)");
        }
    }

    /// `rows` rows of new keys were refused.
    pub fn refused(&self, rows: u64) {
        if rows > 0 {
            self.refused_rows
                .add(rows, || PIPELINE_REFUSED_ROWS.counter_with(&[&self.name]));
        }
    }

    /// An inner join with a reference table dropped `rows` rows for want of a match.
    pub fn join_unmatched(&self, rows: u64) {
        if rows > 0 {
            self.join_unmatched
                .add(rows, || JOIN_UNMATCHED.counter_with(&[&self.name]));
        }
    }

    /// It stopped because its state reached its budget (`fail`).
    pub fn state_failed(&self) {
        self.state_failed.store(true, Ordering::Relaxed);
    }

    /// Carries on from counters a checkpoint kept: the counters (not the gauges, nor the
    /// live tables' counts, which start anew) grow by them, on `/metrics` too.
    pub fn restore(&self, c: &PipelineCounts) {
        let n = &self.name;
        self.rows_in
            .carry(c.rows_in, || PIPELINE_ROWS_IN.counter_with(&[n]));
        self.rows_out
            .carry(c.rows_out, || PIPELINE_ROWS_OUT.counter_with(&[n]));
        self.late_rows
            .carry(c.late_rows, || LATE_ROWS.counter_with(&[n]));
        self.windows
            .carry(c.windows_emitted, || PIPELINE_WINDOWS.counter_with(&[n]));
        self.errors
            .carry(c.errors, || PIPELINE_ERRORS.counter_with(&[n]));
        self.early_windows.carry(c.windows_emitted_early, || {
            PIPELINE_EARLY_WINDOWS.counter_with(&[n])
        });
        self.refused_rows
            .carry(c.refused_rows, || PIPELINE_REFUSED_ROWS.counter_with(&[n]));
        self.join_unmatched
            .carry(c.join_unmatched_rows, || JOIN_UNMATCHED.counter_with(&[n]));
        let mut r = lock(&self.row_errors);
        for (reason, count) in &c.row_errors {
            let e = r.entry(reason).or_insert_with(|| RowErrors {
                count: 0,
                metric: PIPELINE_ROW_ERRORS.counter_with(&[n, reason]),
            });
            e.count += count;
            e.metric.increment(*count);
        }
        if c.state_failed {
            self.state_failed();
        }
    }

    /// The counters now.
    pub fn counts(&self) -> PipelineCounts {
        PipelineCounts {
            rows_in: self.rows_in.get(),
            rows_out: self.rows_out.get(),
            late_rows: self.late_rows.get(),
            windows_emitted: self.windows.get(),
            errors: self.errors.get(),
            row_errors: lock(&self.row_errors)
                .iter()
                .map(|(k, v)| (*k, v.count))
                .collect(),
            latest_keys: self.latest_keys.load(Ordering::Relaxed),
            latest_evicted: self.latest_evicted_keys.get() + self.latest_evicted_age.get(),
            latest_dropped_rows: self.latest_dropped.get(),
            state_bytes: self.state_bytes.load(Ordering::Relaxed),
            open_windows: self.open_windows.load(Ordering::Relaxed),
            state_groups: self.state_groups.load(Ordering::Relaxed),
            windows_emitted_early: self.early_windows.get(),
            refused_rows: self.refused_rows.get(),
            state_failed: self.state_failed.load(Ordering::Relaxed),
            join_unmatched_rows: self.join_unmatched.get(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up() {
        let t = PipelineTelemetry::new("p");
        t.rows_in(10);
        t.rows_in(5);
        t.rows_out(3);
        t.late(0);
        t.late(2);
        t.windows_emitted(4);
        t.failed("bad state");
        t.row_failed("division_by_zero", "`a / b`: Divide by zero error");
        t.row_failed("division_by_zero", "`a / b`: Divide by zero error");
        t.row_failed("cast", "`CAST(s AS INT)`: cannot parse");
        t.latest_kept(7, 2, 0);
        t.latest_kept(5, 1, 3);
        t.latest_dropped(4);
        t.state_bytes(100);
        t.emitted_early(2, 100, "max_state_bytes", 90);
        t.emitted_early(0, 100, "max_state_bytes", 90);
        t.refused(3);
        t.refused(0);
        let c = t.counts();
        assert_eq!(
            (
                c.state_bytes,
                c.windows_emitted_early,
                c.refused_rows,
                c.state_failed
            ),
            (100, 2, 3, false)
        );
        assert_eq!(
            (
                c.rows_in,
                c.rows_out,
                c.late_rows,
                c.windows_emitted,
                c.errors
            ),
            (15, 3, 2, 4, 1)
        );
        assert_eq!(c.row_errors["division_by_zero"], 2);
        assert_eq!(c.row_errors_total(), 3);
        assert_eq!(
            (c.latest_keys, c.latest_evicted, c.latest_dropped_rows),
            (5, 6, 4)
        );
    }
}
