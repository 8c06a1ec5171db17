//! A pipeline's telemetry: rows in and out, windows emitted, late rows, failed batches, how
//! late windows leave and how far the watermark lags. Updated by the dataflow and the window
//! operators, read by the run summary and the live system tables.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::Mutex;
use tracing::warn;

use crate::sync::lock;

use super::{
    Count, LATE_ROWS, Lazy, LogLimit, PIPELINE_ERRORS, PIPELINE_ROW_ERRORS, PIPELINE_ROWS_IN,
    PIPELINE_ROWS_OUT, PIPELINE_WINDOWS, WATERMARK_LAG, WINDOW_EMIT_DELAY,
};

/// A pipeline's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    pub row_errors: BTreeMap<&'static str, u64>,
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
        let c = t.counts();
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
    }
}
