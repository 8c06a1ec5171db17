//! Live state for Flight SQL: each pipeline's latest closed window per group key and recent
//! windows, each source's most recent raw rows, and system tables, published as immutable
//! snapshots that queries read without holding up the dataflow.

pub mod latest;
pub mod query;
pub mod ring;
pub mod snapshot;
pub mod system;
pub mod writer;

use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use query::{QueryError, run_sql};
pub use snapshot::{Snapshot, TableEntry};
pub use writer::LiveWriter;

/// The catalog every live table is in.
pub const CATALOG: &str = "weir";
/// Schema of the latest closed window per group key of each windowed pipeline (the default
/// schema of queries).
pub const LATEST: &str = "latest";
/// Schema of each pipeline's recent output rows.
pub const HISTORY: &str = "history";
/// Schema of each source's most recent raw rows.
pub const SOURCES: &str = "sources";
/// Schema of the system tables.
pub const SYSTEM: &str = "system";
/// Every schema, in listing order.
pub const SCHEMAS: [&str; 4] = [LATEST, HISTORY, SOURCES, SYSTEM];

/// How much live state is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveSettings {
    /// Rows of recent output kept per pipeline.
    pub history_rows: usize,
    /// Age after which recent output is dropped.
    pub history_age: Duration,
    /// Raw rows kept per source.
    pub source_rows: usize,
}

impl Default for LiveSettings {
    fn default() -> Self {
        Self {
            history_rows: 10_000,
            history_age: Duration::from_secs(3600),
            source_rows: 1_000,
        }
    }
}

/// Where the running project publishes its live state and queries pick it up. Outlives a
/// single run: a reload publishes the new project's tables into the same hub.
#[derive(Debug)]
pub struct LiveHub {
    settings: LiveSettings,
    current: Mutex<Arc<Snapshot>>,
}

impl LiveHub {
    /// An empty hub keeping as much as `settings` says.
    pub fn new(settings: LiveSettings) -> Arc<Self> {
        Arc::new(Self {
            settings,
            current: Mutex::new(Arc::new(Snapshot::default())),
        })
    }

    /// The bounds of the live state.
    pub fn settings(&self) -> LiveSettings {
        self.settings
    }

    /// The state as last published.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.current.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn publish(&self, snapshot: Snapshot) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
    }
}
