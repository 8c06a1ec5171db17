//! A sink's telemetry: rows and batches handed to it, failed writes, uploads and the spill
//! buffer (object-store sink), messages published and the connection (MQTT sink), rows lost.
//! Updated by the engine's sink task and by the sink itself, read by the run summary and
//! the live system tables.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use tracing::{error, warn};

use super::{
    Count, Lazy, LogLimit, SINK_CONNECTED, SINK_DROPPED_FILES, SINK_DROPPED_ROWS, SINK_ERRORS,
    SINK_PUBLISHED, SINK_QUARANTINE_DELETED, SINK_ROWS, SINK_SPILL_BYTES, SINK_SPILL_FILES,
    SINK_SPILL_OLDEST_AGE, SINK_SPILL_QUARANTINED, SINK_UPLOADED_BYTES, SINK_UPLOADS, SINK_WRITES,
};
use crate::sync::lock;

/// A sink's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SinkCounts {
    /// Rows handed to the sink.
    pub rows: u64,
    /// Batches handed to the sink.
    pub batches: u64,
    /// Failed writes or closes.
    pub failures: u64,
    /// Successful uploads.
    pub uploads_ok: u64,
    /// Failed uploads.
    pub uploads_failed: u64,
    /// Bytes uploaded.
    pub uploaded_bytes: u64,
    /// Files in the spill buffer.
    pub spill_files: u64,
    /// Bytes in the spill buffer.
    pub spill_bytes: u64,
    /// Age of the oldest file in the spill buffer, in milliseconds (0: empty).
    #[serde(skip)]
    pub spill_oldest_age_ms: u64,
    /// Whether the sink is connected (MQTT sink); `None` for sinks without a connection.
    #[serde(skip)]
    pub connected: Option<bool>,
    /// Files dropped.
    pub dropped_files: u64,
    /// Rows lost.
    pub dropped_rows: u64,
    /// Messages published.
    pub published: u64,
    /// Torn or corrupt spill files moved to quarantine.
    pub quarantined: u64,
    /// Quarantined files deleted (its cap, or room for the spill budget).
    pub quarantine_deleted: u64,
    /// Values a write-back sink handled, by result (`written`, `unchanged`, `refused`, ...).
    #[serde(deserialize_with = "super::by_reason")]
    pub writes: BTreeMap<&'static str, u64>,
}

/// The telemetry of one sink.
pub struct SinkTelemetry {
    name: String,
    rows: Count,
    batches: AtomicU64,
    failures: Count,
    failure_log: LogLimit,
    uploads_ok: Count,
    uploads_failed: Count,
    uploaded_bytes: Count,
    spill_files: AtomicU64,
    spill_bytes: AtomicU64,
    spill_oldest_age_ms: AtomicU64,
    spill_gauges: Lazy<[metrics::Gauge; 3]>,
    dropped_files: Count,
    dropped_rows: Count,
    loss_log: LogLimit,
    quarantined: Count,
    quarantine_deleted: Count,
    published: Count,
    connected: Lazy<metrics::Gauge>,
    /// 0: no connection, 1: up, 2: down.
    connection: AtomicU8,
    /// Values written to machines, by result.
    writes: Mutex<BTreeMap<&'static str, (u64, metrics::Counter)>>,
}

impl std::fmt::Debug for SinkTelemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkTelemetry")
            .field("name", &self.name)
            .field("counts", &self.counts())
            .finish()
    }
}

impl SinkTelemetry {
    /// Telemetry for sink `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            rows: Count::default(),
            batches: AtomicU64::new(0),
            failures: Count::default(),
            failure_log: LogLimit::default(),
            uploads_ok: Count::default(),
            uploads_failed: Count::default(),
            uploaded_bytes: Count::default(),
            spill_files: AtomicU64::new(0),
            spill_bytes: AtomicU64::new(0),
            spill_oldest_age_ms: AtomicU64::new(0),
            spill_gauges: Lazy::default(),
            dropped_files: Count::default(),
            dropped_rows: Count::default(),
            loss_log: LogLimit::default(),
            quarantined: Count::default(),
            quarantine_deleted: Count::default(),
            published: Count::default(),
            connected: Lazy::default(),
            connection: AtomicU8::new(0),
            writes: Mutex::default(),
        }
    }

    /// `n` values a write-back sink handled with `result` (a metric label).
    pub fn values_written(&self, result: &'static str, n: u64) {
        let mut w = lock(&self.writes);
        let e = w
            .entry(result)
            .or_insert_with(|| (0, SINK_WRITES.counter_with(&[&self.name, result])));
        e.0 += n;
        e.1.increment(n);
    }

    /// The sink's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A batch of `rows` rows was handed to the sink.
    pub fn wrote(&self, rows: u64) {
        self.rows
            .add(rows, || SINK_ROWS.counter_with(&[&self.name]));
        self.batches.fetch_add(1, Ordering::Relaxed);
    }

    /// A write (or the close, `what`) failed: counted and logged (rate-limited).
    pub fn failed(&self, what: &str, error: impl Display) {
        self.failures
            .add(1, || SINK_ERRORS.counter_with(&[&self.name]));
        if let Some(unlogged) = self.failure_log.admit() {
            error!(sink = %self.name, error = %error, not_logged_since_last = unlogged, "sink {what} failed");
        }
    }

    /// An upload of `bytes` bytes finished, successfully or not.
    pub fn uploaded(&self, ok: bool, bytes: u64) {
        if ok {
            self.uploads_ok
                .add(1, || SINK_UPLOADS.counter_with(&[&self.name, "ok"]));
            self.uploaded_bytes
                .add(bytes, || SINK_UPLOADED_BYTES.counter_with(&[&self.name]));
        } else {
            self.uploads_failed
                .add(1, || SINK_UPLOADS.counter_with(&[&self.name, "failed"]));
        }
    }

    /// The spill buffer now holds `files` files of `bytes` bytes, the oldest
    /// `oldest_age_seconds` old.
    pub fn spill(&self, files: u64, bytes: u64, oldest_age_seconds: f64) {
        self.spill_files.store(files, Ordering::Relaxed);
        self.spill_bytes.store(bytes, Ordering::Relaxed);
        self.spill_oldest_age_ms
            .store((oldest_age_seconds * 1e3) as u64, Ordering::Relaxed);
        let [f, b, age] = self.spill_gauges.get(|| {
            [
                SINK_SPILL_FILES.gauge_with(&[&self.name]),
                SINK_SPILL_BYTES.gauge_with(&[&self.name]),
                SINK_SPILL_OLDEST_AGE.gauge_with(&[&self.name]),
            ]
        });
        f.set(files as f64);
        b.set(bytes as f64);
        age.set(oldest_age_seconds);
    }

    /// A file of `rows` rows was dropped (`why`, e.g. the spill budget): counted and
    /// logged (rate-limited, as every loss).
    pub fn dropped_file(&self, rows: u64, why: impl Display) {
        self.dropped_files
            .add(1, || SINK_DROPPED_FILES.counter_with(&[&self.name]));
        self.lost_rows(rows, why);
    }

    /// `rows` rows were lost (`why`: outside of a dropped file, e.g. a failed spill write):
    /// counted and logged, at most one line per 5 s with the number not logged since.
    pub fn lost_rows(&self, rows: u64, why: impl Display) {
        self.dropped_rows
            .add(rows, || SINK_DROPPED_ROWS.counter_with(&[&self.name]));
        if let Some(unlogged) = self.loss_log.admit() {
            error!(sink = %self.name, rows, not_logged_since_last = unlogged, "{why}");
        }
    }

    /// A torn or corrupt spill file was moved to quarantine.
    pub fn quarantined(&self) {
        self.quarantined
            .add(1, || SINK_SPILL_QUARANTINED.counter_with(&[&self.name]));
    }

    /// A quarantined file (`path`, `bytes`) was deleted (`why`).
    pub fn quarantine_deleted(&self, path: &std::path::Path, bytes: u64, why: &str) {
        self.quarantine_deleted
            .add(1, || SINK_QUARANTINE_DELETED.counter_with(&[&self.name]));
        warn!(sink = %self.name, file = %path.display(), bytes, "quarantined spill file deleted: {why}");
    }

    /// `messages` more messages were published and acknowledged.
    pub fn published(&self, messages: u64) {
        self.published
            .add(messages, || SINK_PUBLISHED.counter_with(&[&self.name]));
    }

    /// The sink's broker connection went up or down.
    pub fn set_connected(&self, up: bool) {
        self.connection
            .store(if up { 1 } else { 2 }, Ordering::Relaxed);
        self.connected
            .get(|| SINK_CONNECTED.gauge_with(&[&self.name]))
            .set(if up { 1.0 } else { 0.0 });
    }

    /// Carries on from counters a checkpoint kept (not the spill gauges: the spill
    /// directory is read again).
    pub fn restore(&self, c: &SinkCounts) {
        let n = &self.name;
        self.rows.carry(c.rows, || SINK_ROWS.counter_with(&[n]));
        self.batches.fetch_add(c.batches, Ordering::Relaxed);
        self.failures
            .carry(c.failures, || SINK_ERRORS.counter_with(&[n]));
        self.uploads_ok
            .carry(c.uploads_ok, || SINK_UPLOADS.counter_with(&[n, "ok"]));
        self.uploads_failed.carry(c.uploads_failed, || {
            SINK_UPLOADS.counter_with(&[n, "failed"])
        });
        self.uploaded_bytes
            .carry(c.uploaded_bytes, || SINK_UPLOADED_BYTES.counter_with(&[n]));
        self.dropped_files
            .carry(c.dropped_files, || SINK_DROPPED_FILES.counter_with(&[n]));
        self.dropped_rows
            .carry(c.dropped_rows, || SINK_DROPPED_ROWS.counter_with(&[n]));
        self.quarantined
            .carry(c.quarantined, || SINK_SPILL_QUARANTINED.counter_with(&[n]));
        self.quarantine_deleted.carry(c.quarantine_deleted, || {
            SINK_QUARANTINE_DELETED.counter_with(&[n])
        });
        self.published
            .carry(c.published, || SINK_PUBLISHED.counter_with(&[n]));
        for (result, count) in &c.writes {
            self.values_written(result, *count);
        }
    }

    /// The counters now.
    pub fn counts(&self) -> SinkCounts {
        SinkCounts {
            rows: self.rows.get(),
            batches: self.batches.load(Ordering::Relaxed),
            failures: self.failures.get(),
            uploads_ok: self.uploads_ok.get(),
            uploads_failed: self.uploads_failed.get(),
            uploaded_bytes: self.uploaded_bytes.get(),
            spill_files: self.spill_files.load(Ordering::Relaxed),
            spill_bytes: self.spill_bytes.load(Ordering::Relaxed),
            spill_oldest_age_ms: self.spill_oldest_age_ms.load(Ordering::Relaxed),
            connected: match self.connection.load(Ordering::Relaxed) {
                0 => None,
                v => Some(v == 1),
            },
            dropped_files: self.dropped_files.get(),
            dropped_rows: self.dropped_rows.get(),
            published: self.published.get(),
            quarantined: self.quarantined.get(),
            quarantine_deleted: self.quarantine_deleted.get(),
            writes: lock(&self.writes).iter().map(|(k, v)| (*k, v.0)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_the_calls() {
        let t = SinkTelemetry::new("cloud");
        t.wrote(10);
        t.wrote(5);
        t.uploaded(true, 100);
        t.uploaded(false, 50);
        t.spill(2, 300, 1.5);
        t.dropped_file(7, "budget");
        t.lost_rows(3, "disk full");
        t.failed("write", "disk full");
        t.published(4);
        t.quarantined();
        t.quarantine_deleted(std::path::Path::new("q/a.parquet"), 10, "cap");
        let c = t.counts();
        assert_eq!((c.quarantined, c.quarantine_deleted), (1, 1));
        assert_eq!((c.rows, c.batches, c.failures), (15, 2, 1));
        assert_eq!(
            (c.uploads_ok, c.uploads_failed, c.uploaded_bytes),
            (1, 1, 100)
        );
        assert_eq!(
            (c.spill_files, c.spill_bytes, c.spill_oldest_age_ms),
            (2, 300, 1500)
        );
        assert_eq!(c.connected, None);
        t.set_connected(false);
        assert_eq!(t.counts().connected, Some(false));
        assert_eq!((c.dropped_files, c.dropped_rows, c.published), (1, 10, 4));
    }
}
