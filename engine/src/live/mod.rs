//! Live state for Flight SQL: each pipeline's latest closed window per group key and recent
//! windows, each source's most recent raw rows, and system tables, published as immutable
//! snapshots that queries read without holding up the dataflow.

mod latest;
mod latest_thread;
pub(crate) mod query;
mod ring;
pub mod snapshot;
mod system;
mod writer;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::record_batch::RecordBatch;

pub use latest::LatestBounds;
#[cfg(feature = "flight")]
pub(crate) use query::QueryError;
pub use query::QueryLimits;
pub(crate) use query::run_sql;
pub use snapshot::{Snapshot, TableEntry};
pub(crate) use writer::LiveWriter;

use crate::sync::lock;

/// The catalog every live table is in.
pub const CATALOG: &str = "weir";
/// Schema of the latest closed window per group key of each windowed pipeline (the default
/// schema of queries).
pub const LATEST: &str = "latest";
/// Schema of each pipeline's recent output rows.
pub const HISTORY: &str = "history";
/// Schema of each source's most recent raw rows.
pub const SOURCES: &str = "sources";
/// Schema of the reference tables (the version in use of each).
pub const TABLES: &str = "tables";
/// Schema of the system tables.
pub const SYSTEM: &str = "system";
/// Every schema, in listing order.
pub const SCHEMAS: [&str; 5] = [LATEST, HISTORY, SOURCES, TABLES, SYSTEM];

/// A query on a fixed snapshot (a latest table, a history table, a source ring and the
/// system tables), for fuzzing the Flight SQL statement path: parse, bounds, plan, run.
pub async fn fuzz_query(sql: &str) -> Result<usize, String> {
    use arrow::array::{Float64Array, Int64Array, StringArray, TimestampNanosecondArray};
    let batch = RecordBatch::try_from_iter([
        (
            "machine",
            Arc::new(StringArray::from(vec!["M1", "M2", "M1"])) as _,
        ),
        (
            "window_end",
            Arc::new(TimestampNanosecondArray::from(vec![1_000, 2_000, 3_000])) as _,
        ),
        ("n", Arc::new(Int64Array::from(vec![1, 2, 3])) as _),
        (
            "mean",
            Arc::new(Float64Array::from(vec![0.5, f64::NAN, -1.0])) as _,
        ),
    ])
    .map_err(|e| e.to_string())?;
    let mut snap = Snapshot::default();
    for schema in [LATEST, HISTORY, SOURCES] {
        snap.tables.insert(
            (schema, "t".to_string()),
            snapshot::LiveTable {
                schema: batch.schema(),
                batches: vec![batch.clone()],
            },
        );
    }
    run_sql(&snap, sql, &QueryLimits::default().pool())
        .await
        .map(|out| out.batches.iter().map(|b| b.num_rows()).sum())
        .map_err(|e| e.to_string())
}

/// How much live state is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveSettings {
    /// Rows of recent output kept per pipeline.
    pub history_rows: usize,
    /// Age after which recent output is dropped.
    pub history_age: Duration,
    /// Raw rows kept per source.
    pub source_rows: usize,
    /// Group keys kept per latest table, and for how long without an update.
    pub latest: LatestBounds,
}

impl Default for LiveSettings {
    fn default() -> Self {
        Self {
            history_rows: 10_000,
            history_age: Duration::from_secs(3600),
            source_rows: 1_000,
            latest: LatestBounds {
                max_keys: 10_000,
                max_age: Some(Duration::from_secs(24 * 3600)),
            },
        }
    }
}

/// Data tables of one schema, by (schema, name).
type Tables = BTreeMap<(&'static str, String), snapshot::LiveTable>;

/// The latest tables as their thread last published them, and which run they belong to.
#[derive(Debug, Default)]
struct LatestTables {
    generation: u64,
    tables: Arc<Tables>,
}

/// Where the running project publishes its live state and queries pick it up. Outlives a
/// single run: a reload publishes the new project's tables into the same hub.
#[derive(Debug)]
pub struct LiveHub {
    settings: LiveSettings,
    current: Mutex<Arc<Snapshot>>,
    latest: Mutex<LatestTables>,
}

impl LiveHub {
    /// An empty hub keeping as much as `settings` says.
    pub fn new(settings: LiveSettings) -> Arc<Self> {
        Arc::new(Self {
            settings,
            current: Mutex::new(Arc::new(Snapshot::default())),
            latest: Mutex::default(),
        })
    }

    /// The bounds of the live state.
    pub fn settings(&self) -> LiveSettings {
        self.settings
    }

    /// The state as last published: the run's tables with the latest tables as their
    /// thread last published them.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        let current = Arc::clone(&lock(&self.current));
        let latest = Arc::clone(&lock(&self.latest).tables);
        if latest.is_empty() {
            return current;
        }
        let mut merged = (*current).clone();
        merged
            .tables
            .extend(latest.iter().map(|(k, t)| (k.clone(), t.clone())));
        Arc::new(merged)
    }

    fn publish(&self, snapshot: Snapshot) {
        *lock(&self.current) = Arc::new(snapshot);
    }

    /// A new run's latest tables replace the last run's; returns the run's generation, which
    /// its later publications carry.
    fn begin_latest(&self, tables: Tables) -> u64 {
        let mut l = lock(&self.latest);
        l.generation += 1;
        l.tables = Arc::new(tables);
        l.generation
    }

    /// The latest tables of run `generation` (ignored once a newer run began).
    fn publish_latest(&self, generation: u64, tables: Tables) {
        let mut l = lock(&self.latest);
        if l.generation == generation {
            l.tables = Arc::new(tables);
        }
    }
}
