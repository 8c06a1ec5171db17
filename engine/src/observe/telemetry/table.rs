//! A reference table's telemetry: rows of the version in use, its version number, loads
//! that worked and loads that failed (the previous version stays), and the last failure.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::{info, warn};

use crate::sync::lock;

use super::{Count, Lazy, TABLE_LOADS, TABLE_ROWS};

/// A reference table's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TableCounts {
    /// Rows of the version in use.
    pub rows: u64,
    /// Its version number (1 for the first load).
    pub version: u64,
    /// Loads that produced a new version.
    pub loads: u64,
    /// Loads that failed (the version in use stayed).
    pub failed_loads: u64,
    /// Why the last load failed, when it did.
    pub last_error: Option<String>,
}

/// The telemetry of one reference table.
#[derive(Debug)]
pub struct TableTelemetry {
    name: String,
    rows: AtomicU64,
    version: AtomicU64,
    rows_gauge: Lazy<metrics::Gauge>,
    loads: Count,
    failed: Count,
    last_error: Mutex<Option<String>>,
}

impl TableTelemetry {
    /// Telemetry for table `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            rows: AtomicU64::new(0),
            version: AtomicU64::new(0),
            rows_gauge: Lazy::default(),
            loads: Count::default(),
            failed: Count::default(),
            last_error: Mutex::new(None),
        }
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Version `version` of `rows` rows from `location` is in use.
    pub fn loaded(&self, version: u64, rows: u64, location: &str) {
        self.rows.store(rows, Ordering::Relaxed);
        self.version.store(version, Ordering::Relaxed);
        self.rows_gauge
            .get(|| TABLE_ROWS.gauge_with(&[&self.name]))
            .set(rows as f64);
        self.loads
            .add(1, || TABLE_LOADS.counter_with(&[&self.name, "ok"]));
        *lock(&self.last_error) = None;
        if version > 1 {
            info!(table = %self.name, version, rows, from = %location, "reference table reloaded");
        }
    }

    /// Reading a new version failed (`error` says where); the version in use stays.
    pub fn load_failed(&self, error: &str) {
        self.failed
            .add(1, || TABLE_LOADS.counter_with(&[&self.name, "failed"]));
        warn!(table = %self.name, error = %error, version_in_use = self.version.load(Ordering::Relaxed),
            "reference table not reloaded: keeping the version in use");
        *lock(&self.last_error) = Some(error.to_string());
    }

    /// The counters now.
    pub fn counts(&self) -> TableCounts {
        TableCounts {
            rows: self.rows.load(Ordering::Relaxed),
            version: self.version.load(Ordering::Relaxed),
            loads: self.loads.get(),
            failed_loads: self.failed.get(),
            last_error: lock(&self.last_error).clone(),
        }
    }
}
