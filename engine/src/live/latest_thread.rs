//! The latest tables of one run, kept by a thread of their own: the dataflow hands each
//! windowed pipeline's new rows over without waiting, and this thread updates the tables,
//! evicts keys past their bounds and publishes the tables into the hub.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use tracing::warn;

use super::latest::{Evicted, LatestByKey};
use super::snapshot::LiveTable;
use super::{LATEST, LiveHub};
use crate::observe::telemetry::PipelineTelemetry;

/// How often at most the latest tables are published.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);
/// How often keys past the age bound are looked for.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);
/// Batches handed over and not yet taken; past it new rows are dropped (and counted).
const QUEUE: usize = 1024;

/// One windowed pipeline's latest table.
pub(crate) struct LatestTable {
    /// Table name in the `latest` schema.
    pub table: String,
    /// Its columns.
    pub schema: SchemaRef,
    /// Its rows.
    pub rows: LatestByKey,
    /// Where its bounds are counted.
    pub telemetry: Arc<PipelineTelemetry>,
}

/// The dataflow's end of the latest tables: hands rows to the thread, never waits.
pub(crate) struct LatestFeed {
    to_thread: Option<SyncSender<(usize, RecordBatch)>>,
    telemetry: Vec<Option<Arc<PipelineTelemetry>>>,
    thread: Option<JoinHandle<()>>,
}

impl LatestFeed {
    /// Starts the thread keeping `tables` (indexed by pipeline; None for a pipeline without
    /// one), publishing them into `hub` as this run's latest tables.
    pub fn start(hub: Arc<LiveHub>, tables: Vec<Option<LatestTable>>) -> Self {
        let telemetry = tables
            .iter()
            .map(|t| t.as_ref().map(|t| Arc::clone(&t.telemetry)))
            .collect();
        let generation = hub.begin_latest(published(&tables));
        let (to_thread, from_feed) = mpsc::sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("weir-live-latest".into())
            .spawn(move || {
                crate::observe::process::lower_thread_priority("latest tables");
                keep(&hub, generation, tables, &from_feed)
            })
            .map_err(|e| warn!(error = %e, "cannot start the latest tables' thread: latest.* stays empty"))
            .ok();
        Self {
            to_thread: thread.as_ref().map(|_| to_thread),
            telemetry,
            thread,
        }
    }

    /// New output `batch` of pipeline `pipeline`.
    pub fn rows(&self, pipeline: usize, batch: &RecordBatch) {
        let (Some(tx), Some(Some(telemetry))) = (&self.to_thread, self.telemetry.get(pipeline))
        else {
            return;
        };
        match tx.try_send((pipeline, batch.clone())) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                telemetry.latest_dropped(batch.num_rows() as u64);
            }
        }
    }
}

impl Drop for LatestFeed {
    /// Lets the thread take what was handed over, publish and end.
    fn drop(&mut self) {
        self.to_thread = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn published(tables: &[Option<LatestTable>]) -> BTreeMap<(&'static str, String), LiveTable> {
    tables
        .iter()
        .flatten()
        .map(|t| {
            let batches = match t.rows.batch() {
                Ok(b) => b.into_iter().collect(),
                Err(e) => {
                    warn!(pipeline = %t.table, error = %e, "latest table not published");
                    vec![]
                }
            };
            (
                (LATEST, t.table.clone()),
                LiveTable {
                    schema: t.schema.clone(),
                    batches,
                },
            )
        })
        .collect()
}

/// The thread: takes rows, evicts, publishes at most every [`PUBLISH_EVERY`]; publishes a
/// last time once the feed is dropped.
fn keep(
    hub: &LiveHub,
    generation: u64,
    mut tables: Vec<Option<LatestTable>>,
    from_feed: &Receiver<(usize, RecordBatch)>,
) {
    let mut last_publish = Instant::now();
    let mut last_expire = Instant::now();
    let mut changed = false;
    loop {
        let wait = if changed {
            PUBLISH_EVERY.saturating_sub(last_publish.elapsed())
        } else {
            EXPIRE_EVERY.saturating_sub(last_expire.elapsed())
        };
        let open = match from_feed.recv_timeout(wait) {
            Ok((p, batch)) => {
                if let Some(Some(t)) = tables.get_mut(p) {
                    let evicted = t.rows.update(&batch, Instant::now());
                    account(t, evicted);
                    changed = true;
                }
                true
            }
            Err(RecvTimeoutError::Timeout) => true,
            Err(RecvTimeoutError::Disconnected) => false,
        };
        let now = Instant::now();
        if now.duration_since(last_expire) >= EXPIRE_EVERY {
            last_expire = now;
            for t in tables.iter_mut().flatten() {
                let before = t.rows.len();
                let evicted = t.rows.expire(now);
                changed |= t.rows.len() != before;
                account(t, evicted);
            }
        }
        if changed && (!open || now.duration_since(last_publish) >= PUBLISH_EVERY) {
            hub.publish_latest(generation, published(&tables));
            last_publish = now;
            changed = false;
        }
        if !open {
            return;
        }
    }
}

fn account(t: &LatestTable, evicted: Result<Evicted, arrow::error::ArrowError>) {
    match evicted {
        Ok(e) => t.telemetry.latest_kept(t.rows.len(), e.keys, e.age),
        Err(e) => warn!(pipeline = %t.table, error = %e, "latest table not updated"),
    }
}
