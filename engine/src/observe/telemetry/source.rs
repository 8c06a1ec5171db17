//! A source's telemetry: rows read, rows without event time, inputs skipped by reason, and
//! the connection state. Shared by the source's task (skips, connection) and the dataflow
//! (rows).

use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

use tracing::warn;

use super::{
    Count, Lazy, LogLimit, SOURCE_CONNECTED, SOURCE_ROWS, SOURCE_ROWS_DROPPED, SOURCE_SKIPPED,
};
use crate::sync::lock;

/// Connection state of a source that talks to a device or broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Connection {
    /// The source does not connect to anything (or has not tried yet).
    #[default]
    NotApplicable,
    /// Connected.
    Up,
    /// Not connected; the source is retrying.
    Down,
}

impl Connection {
    /// `up` or `down`, for the system tables; `None` when not applicable.
    pub fn label(self) -> Option<&'static str> {
        match self {
            Connection::NotApplicable => None,
            Connection::Up => Some("up"),
            Connection::Down => Some("down"),
        }
    }
}

/// A source's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SourceCounts {
    /// Rows read (and handed to the pipelines).
    pub rows: u64,
    /// Rows dropped for a null event time.
    pub null_time_rows: u64,
    /// Inputs the source skipped (malformed, oversized, failed reads, ...), by reason.
    #[serde(deserialize_with = "super::by_reason")]
    pub skipped: BTreeMap<&'static str, u64>,
    /// Connection state.
    #[serde(skip)]
    pub connection: Connection,
}

impl SourceCounts {
    /// Skipped inputs of every reason.
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }
}

struct Skip {
    count: u64,
    metric: metrics::Counter,
}

/// The telemetry of one source.
pub struct SourceTelemetry {
    name: String,
    rows: Count,
    null_time_rows: Count,
    null_time_log: LogLimit,
    skipped: Mutex<BTreeMap<&'static str, Skip>>,
    skip_log: LogLimit,
    connection: AtomicU8,
    connected: Lazy<metrics::Gauge>,
    /// Tables of the source's own (`sparkplug_nodes`), served as `system.<name>`.
    tables: Mutex<BTreeMap<&'static str, arrow::record_batch::RecordBatch>>,
}

impl std::fmt::Debug for SourceTelemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceTelemetry")
            .field("name", &self.name)
            .field("counts", &self.counts())
            .finish()
    }
}

impl SourceTelemetry {
    /// Telemetry for source `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            rows: Count::default(),
            null_time_rows: Count::default(),
            null_time_log: LogLimit::default(),
            skipped: Mutex::default(),
            skip_log: LogLimit::default(),
            connection: AtomicU8::new(0),
            connected: Lazy::default(),
            tables: Mutex::default(),
        }
    }

    /// Replaces the source's own table `name` (served by Flight SQL as `system.<name>`, with
    /// the source's name as a first column); every source sets one name to one set of
    /// columns.
    pub fn set_table(&self, name: &'static str, rows: arrow::record_batch::RecordBatch) {
        lock(&self.tables).insert(name, rows);
    }

    /// The source's own tables.
    pub fn tables(&self) -> Vec<(&'static str, arrow::record_batch::RecordBatch)> {
        lock(&self.tables)
            .iter()
            .map(|(n, b)| (*n, b.clone()))
            .collect()
    }

    /// The source's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `rows` rows went on to the pipelines.
    pub fn rows(&self, rows: u64) {
        self.rows
            .add(rows, || SOURCE_ROWS.counter_with(&[&self.name]));
    }

    /// `rows` rows had no event time and were dropped.
    pub fn null_time_rows(&self, rows: u64) {
        self.null_time_rows.add(rows, || {
            SOURCE_ROWS_DROPPED.counter_with(&[&self.name, "null_event_time"])
        });
        if let Some(unlogged) = self.null_time_log.admit() {
            warn!(source = %self.name, rows, not_logged_since_last = unlogged, "rows without event time dropped");
        }
    }

    /// Counts one skipped input (a message, a line, a register read) of `reason`
    /// (`snake_case`, a metric label) and logs it with `context` (e.g. the topic) and
    /// `detail`, at most once every few seconds per source.
    pub fn skip(&self, reason: &'static str, context: &str, detail: impl Display) {
        {
            let mut s = lock(&self.skipped);
            let e = s.entry(reason).or_insert_with(|| Skip {
                count: 0,
                metric: SOURCE_SKIPPED.counter_with(&[&self.name, reason]),
            });
            e.count += 1;
            e.metric.increment(1);
        }
        if let Some(unlogged) = self.skip_log.admit() {
            warn!(
                source = %self.name,
                reason,
                context,
                error = %detail,
                not_logged_since_last = unlogged,
                "input skipped"
            );
        }
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
            self.connected
                .get(|| SOURCE_CONNECTED.gauge_with(&[&self.name]))
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

    /// Carries on from counters a checkpoint kept (on `/metrics` too).
    pub fn restore(&self, c: &SourceCounts) {
        let n = &self.name;
        self.rows.carry(c.rows, || SOURCE_ROWS.counter_with(&[n]));
        self.null_time_rows.carry(c.null_time_rows, || {
            SOURCE_ROWS_DROPPED.counter_with(&[n, "null_event_time"])
        });
        let mut s = lock(&self.skipped);
        for (reason, count) in &c.skipped {
            let e = s.entry(reason).or_insert_with(|| Skip {
                count: 0,
                metric: SOURCE_SKIPPED.counter_with(&[n, reason]),
            });
            e.count += count;
            e.metric.increment(*count);
        }
    }

    /// The counters now.
    pub fn counts(&self) -> SourceCounts {
        SourceCounts {
            rows: self.rows.get(),
            null_time_rows: self.null_time_rows.get(),
            skipped: lock(&self.skipped)
                .iter()
                .map(|(k, v)| (*k, v.count))
                .collect(),
            connection: self.connection(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_are_counted_by_reason_even_when_not_logged() {
        let t = SourceTelemetry::new("s");
        for _ in 0..3 {
            t.skip("malformed_json", "t/1", "expected value");
        }
        t.skip("oversized", "t/2", "2 MiB");
        t.rows(5);
        t.null_time_rows(2);
        t.set_connection(Connection::Down);
        let c = t.counts();
        assert_eq!(c.skipped["malformed_json"], 3);
        assert_eq!(c.skipped["oversized"], 1);
        assert_eq!(c.skipped_total(), 4);
        assert_eq!((c.rows, c.null_time_rows), (5, 2));
        assert_eq!(c.connection, Connection::Down);
        assert_eq!(c.connection.label(), Some("down"));
    }
}
