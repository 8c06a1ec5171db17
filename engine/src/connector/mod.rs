//! What sources and sinks implement, and the registry of connectors by name. The engine
//! names no concrete connector: the `weir` binary registers them (`weir_connectors::all`).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use tokio::sync::{mpsc, watch};

use crate::diagnostic::PipelineError;
use crate::exec::ids::StreamId;
use crate::observe::telemetry::{ENGINE_METRICS, MetricDef, SinkTelemetry, SourceTelemetry};
use crate::parse::Options;
use crate::parse::options::{OptionSpec, OptionType};

pub use crate::observe::telemetry::Connection;

/// `connector`: which connector a source or sink uses.
pub const CONNECTOR: OptionSpec =
    OptionSpec::new("connector", OptionType::Text, "which connector").required();
/// `event_time`: a source's event-time column.
pub const EVENT_TIME: OptionSpec = OptionSpec::new(
    "event_time",
    OptionType::Text,
    "the `TIMESTAMP` column that is the event time (needed for windows)",
);
/// `watermark`: how late a source's rows may arrive.
pub const WATERMARK: OptionSpec = OptionSpec::new(
    "watermark",
    OptionType::Duration,
    "how late a row may arrive (a duration: `500ms`, `2s`, `1m`)",
)
.default("0s");
/// `idle_timeout`: when a silent source stops holding back the watermark.
pub const IDLE_TIMEOUT: OptionSpec = OptionSpec::new(
    "idle_timeout",
    OptionType::Duration,
    "silence after which the source stops holding back the watermark",
)
.default("30s");

/// The options the engine reads on every source, besides the connector's own.
pub const SOURCE_OPTIONS: &[OptionSpec] = &[CONNECTOR, EVENT_TIME, WATERMARK, IDLE_TIMEOUT];
/// The options the engine reads on every sink, besides the connector's own.
pub const SINK_OPTIONS: &[OptionSpec] = &[CONNECTOR];

/// The options in `groups`, one after the other.
pub fn each_option(
    groups: &'static [&'static [OptionSpec]],
) -> impl Iterator<Item = &'static OptionSpec> {
    groups.iter().flat_map(|g| g.iter())
}

/// What a source is told when it is built.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    /// Source name.
    pub name: String,
    /// The declared columns: every batch the source sends has exactly this schema.
    pub schema: SchemaRef,
    /// Index of the event-time column, if declared.
    pub event_time: Option<usize>,
}

/// Where a source stands after one batch, for checkpoints.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// What the source needs to go on right after this batch when it is started again
    /// (its own JSON: a file and row, a row count); `None` when it cannot resume (live
    /// values) or keeps no position (the MQTT broker keeps it).
    pub offset: Option<serde_json::Value>,
    /// Ids of the messages in this batch that may be delivered again after a crash (the
    /// MQTT source: a hash of packet id, topic and payload). The engine keeps them with the
    /// next three checkpoints, so that a source started again can tell redeliveries.
    pub delivered: Vec<u64>,
}

/// Messages from a running source to the engine.
#[derive(Debug)]
pub enum SourceEvent {
    /// Rows.
    Batch {
        /// The source.
        stream: StreamId,
        /// The rows.
        batch: RecordBatch,
        /// The source's batch number, counting from 1.
        number: u64,
        /// Where the source stands after it.
        progress: Progress,
    },
    /// The source asks for a checkpoint now (its unacknowledged messages near the broker's
    /// limit), covering the batches it sent before.
    CheckpointWanted(StreamId),
    /// The source has no more rows (finite input, or it was asked to stop).
    End(StreamId),
    /// The source failed and stopped.
    Failed(StreamId, String),
}

/// A running source's way to the engine.
#[derive(Debug, Clone)]
pub struct SourceOutput {
    id: StreamId,
    tx: mpsc::Sender<SourceEvent>,
    stop: watch::Receiver<bool>,
    telemetry: Arc<SourceTelemetry>,
    numbers: Arc<std::sync::atomic::AtomicU64>,
    committed: watch::Receiver<u64>,
}

/// The engine is shutting down: the source should return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

impl SourceOutput {
    /// An output for source `id`, counting into `telemetry`; `committed` carries the number
    /// of the last of its batches that two complete checkpoints cover.
    pub fn new(
        id: StreamId,
        tx: mpsc::Sender<SourceEvent>,
        stop: watch::Receiver<bool>,
        telemetry: Arc<SourceTelemetry>,
        committed: watch::Receiver<u64>,
    ) -> Self {
        Self {
            id,
            tx,
            stop,
            telemetry,
            numbers: Arc::default(),
            committed,
        }
    }

    /// Where the source counts skipped inputs and reports its connection state.
    pub fn telemetry(&self) -> &Arc<SourceTelemetry> {
        &self.telemetry
    }

    fn batch_event(&self, batch: RecordBatch, progress: Progress) -> (u64, SourceEvent) {
        let number = self
            .numbers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let ev = SourceEvent::Batch {
            stream: self.id,
            batch,
            number,
            progress,
        };
        (number, ev)
    }

    /// Sends a batch, waiting while the engine is busy (backpressure).
    pub async fn send(&self, batch: RecordBatch) -> Result<(), Stopped> {
        self.send_at(batch, Progress::default()).await.map(|_| ())
    }

    /// Sends a batch with where the source stands after it; returns the batch's number
    /// (0 for an empty batch, which is not sent).
    pub async fn send_at(&self, batch: RecordBatch, progress: Progress) -> Result<u64, Stopped> {
        if batch.num_rows() == 0 {
            return Ok(0);
        }
        if self.is_stopped() {
            return Err(Stopped);
        }
        let (number, ev) = self.batch_event(batch, progress);
        self.tx.send(ev).await.map_err(|_| Stopped)?;
        Ok(number)
    }

    /// Sends the last rows a stopping source still holds (sent even after the engine asked
    /// sources to stop; lost only if the engine is already gone); returns the batch number.
    pub async fn send_last(&self, batch: RecordBatch, progress: Progress) -> u64 {
        if batch.num_rows() == 0 {
            return 0;
        }
        let (number, ev) = self.batch_event(batch, progress);
        let _ = self.tx.send(ev).await;
        number
    }

    /// Asks for a checkpoint covering the batches sent so far.
    pub async fn want_checkpoint(&self) {
        let _ = self.tx.send(SourceEvent::CheckpointWanted(self.id)).await;
    }

    /// The number of the last of its batches that the newest complete checkpoint and the
    /// one before both cover, as it changes: input of those batches may be acknowledged
    /// (the run falls back to the one before when the newest is damaged).
    pub fn committed(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }

    /// True once the engine asked sources to stop.
    pub fn is_stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Waits until the engine asks sources to stop.
    pub async fn stopped(&mut self) {
        let _ = self.stop.wait_for(|s| *s).await;
    }
}

/// What a source is told before it starts.
#[derive(Debug, Clone, Default)]
pub struct SourceStart {
    /// The run takes checkpoints (`--state-dir`): a source that acknowledges input (MQTT)
    /// does so only for batches complete checkpoints cover ([`SourceOutput::committed`]).
    pub checkpoints: bool,
    /// Where the restored checkpoint left the source, if one was restored and the source's
    /// statement is unchanged.
    pub resume: Option<Resume>,
    /// A predicate over the source's columns that every pipeline reading it filters its
    /// rows with first: a source may leave out rows for which it is not true (the pipelines
    /// filter again, so results are the same; rows left out are not counted as read).
    pub filter: Option<Arc<dyn datafusion::physical_expr::PhysicalExpr>>,
}

/// A source's position in a restored checkpoint.
#[derive(Debug, Clone, Default)]
pub struct Resume {
    /// The offset of the last batch the checkpoint covers ([`Progress::offset`]).
    pub offset: Option<serde_json::Value>,
    /// Ids of messages the checkpoint covers that a broker may deliver again.
    pub delivered: Vec<u64>,
}

/// A running input.
#[async_trait]
pub trait Source: Send {
    /// True when the input ends by itself (a file, a generator with a limit).
    fn is_bounded(&self) -> bool;
    /// True when the source can go on from a checkpoint's position (files, the generator,
    /// MQTT with a persistent session): its input is replayed from there. Live values
    /// (Modbus, OPC UA) cannot be: their state is restored and the gap is reported.
    fn resumes(&self) -> bool {
        false
    }
    /// Called once before [`Source::run`].
    fn prepare(&mut self, start: SourceStart) -> anyhow::Result<()> {
        let _ = start;
        Ok(())
    }
    /// Produces batches until the input ends or the engine stops.
    async fn run(self: Box<Self>, out: SourceOutput) -> anyhow::Result<()>;
}

/// Builds sources of one connector kind.
pub trait SourceFactory: Send + Sync {
    /// The `connector = '...'` name.
    fn name(&self) -> &'static str;
    /// One line for `--help` texts and docs.
    fn description(&self) -> &'static str;
    /// Every option the connector takes, in groups (the engine's own are in
    /// [`SOURCE_OPTIONS`]).
    fn options(&self) -> &'static [&'static [OptionSpec]];
    /// The metrics the connector records besides the engine's.
    fn metrics(&self) -> &'static [MetricDef] {
        &[]
    }
    /// Checks options against the declared columns and returns a source that has not
    /// connected to anything yet.
    fn build(&self, spec: &SourceSpec, options: &Options)
    -> Result<Box<dyn Source>, PipelineError>;
}

/// What a sink is told when it is built.
#[derive(Debug, Clone)]
pub struct SinkSpec {
    /// Sink name.
    pub name: String,
    /// Where the sink counts uploads, spilled files, published messages and lost rows
    /// (rows handed to it and failed writes are counted by the engine).
    pub telemetry: Arc<SinkTelemetry>,
}

/// What a sink is told before its first row.
#[derive(Debug, Clone, Default)]
pub struct SinkStart {
    /// The pipelines that insert into it: their names and plan fingerprints (hex).
    pub inputs: Vec<(String, String)>,
    /// The columns they insert (one sink takes one set of columns).
    pub schema: Option<SchemaRef>,
    /// With checkpoints (`--state-dir`): what to recover.
    pub checkpoints: Option<SinkCheckpoints>,
    /// `weir run --no-writes`: sinks that write to machines only log what they would write.
    pub no_writes: bool,
}

/// A sink's part of the checkpoints.
#[derive(Debug, Clone)]
pub struct SinkCheckpoints {
    /// The state directory's lineage: sinks tag what they commit with it.
    pub lineage: String,
    /// The checkpoint the run restored: its number and what this sink's pre-commit returned
    /// for it (`None`: the run starts from nothing).
    pub restored: Option<(u64, serde_json::Value)>,
}

/// A running output.
#[async_trait]
pub trait Sink: Send {
    /// Checked when a pipeline's INSERT gives the sink its columns (also by `weir check`):
    /// a sink that needs certain columns (a register map's) says what is wrong.
    fn check_columns(&self, columns: &SchemaRef) -> Result<(), String> {
        let _ = columns;
        Ok(())
    }
    /// Before the first row: the pipelines that insert into the sink and, with checkpoints,
    /// what to recover — what was pending for the restored checkpoint is committed, and what
    /// the sink wrote after it (it comes again) is removed. Without checkpoints the sink
    /// commits what it writes as it goes.
    async fn start(&mut self, start: SinkStart) -> anyhow::Result<()> {
        let _ = start;
        Ok(())
    }
    /// With checkpoints: finishes the rows received since the last pre-commit as pending
    /// output of checkpoint `number` (durable, not yet visible); returns what the sink needs
    /// to find it again, kept in the checkpoint. Sinks that cannot hold output back flush.
    async fn pre_commit(&mut self, number: u64) -> anyhow::Result<serde_json::Value> {
        let _ = number;
        Ok(serde_json::Value::Null)
    }
    /// Checkpoint `number` is complete: what was pending up to it becomes visible. Output
    /// of checkpoints older than `oldest_kept` can no longer be asked back.
    async fn commit(&mut self, number: u64, oldest_kept: u64) -> anyhow::Result<()> {
        let _ = (number, oldest_kept);
        Ok(())
    }
    /// `exactly once` or `at least once`: what a crash does to this sink's output with
    /// checkpoints (for the log).
    fn delivery(&self) -> &'static str {
        "at least once"
    }
    /// Writes rows.
    async fn write(&mut self, batch: RecordBatch) -> anyhow::Result<()>;
    /// Called about once a second, also when no rows come: for time-based work such as
    /// rolling a file after `roll_interval`.
    async fn tick(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
    /// Flushes and closes at the end of the run, by `deadline` where waiting is involved
    /// (the shutdown grace period): what cannot be delivered by then is kept where the sink
    /// has a place for it (the object-store sink's spill buffer) or reported.
    async fn close(&mut self, deadline: tokio::time::Instant) -> anyhow::Result<()>;
}

/// Builds sinks of one connector kind.
pub trait SinkFactory: Send + Sync {
    /// The `connector = '...'` name.
    fn name(&self) -> &'static str;
    /// One line for docs.
    fn description(&self) -> &'static str;
    /// Every option the connector takes, in groups (the engine's own are in
    /// [`SINK_OPTIONS`]).
    fn options(&self) -> &'static [&'static [OptionSpec]];
    /// The metrics the connector records besides the engine's.
    fn metrics(&self) -> &'static [MetricDef] {
        &[]
    }
    /// Checks options and returns a sink that has not opened anything yet.
    fn build(&self, spec: &SinkSpec, options: &Options) -> Result<Box<dyn Sink>, PipelineError>;
}

/// What a reference table's connector is told when it is built.
#[derive(Debug, Clone)]
pub struct TableSpec {
    /// Table name.
    pub name: String,
    /// The declared columns: every load returns exactly these.
    pub schema: SchemaRef,
    /// The directory of the pipeline file that declares the table: relative paths start there.
    pub base_dir: std::path::PathBuf,
    /// The table's `max_bytes`: a loader reads no more than this (a file, decoded batches).
    pub max_bytes: u64,
}

/// Reads a reference table whole, again whenever its data changed.
pub trait TableLoader: Send + Sync {
    /// Something that changes whenever the data may have changed (a file's modification
    /// time, size and inode, read through symbolic links, so that a Kubernetes ConfigMap
    /// swap counts).
    fn stamp(&self) -> std::io::Result<String>;
    /// Every row, in the declared columns. A record that cannot be read fails the whole load
    /// with an error naming its `file:line`.
    fn load(&self) -> anyhow::Result<Vec<RecordBatch>>;
    /// Where the data comes from, for messages.
    fn location(&self) -> String;
}

/// Builds reference-table loaders of one connector kind.
pub trait TableFactory: Send + Sync {
    /// The `connector = '...'` name.
    fn name(&self) -> &'static str;
    /// One line for docs.
    fn description(&self) -> &'static str;
    /// Every option the connector takes, in groups (the engine's own are in
    /// [`TABLE_OPTIONS`](crate::reference::TABLE_OPTIONS)).
    fn options(&self) -> &'static [&'static [OptionSpec]];
    /// Checks options and returns a loader that has not read anything yet.
    fn build(
        &self,
        spec: &TableSpec,
        options: &Options,
    ) -> Result<Box<dyn TableLoader>, PipelineError>;
}

/// Connectors by name.
#[derive(Default, Clone)]
pub struct Connectors {
    sources: BTreeMap<&'static str, Arc<dyn SourceFactory>>,
    sinks: BTreeMap<&'static str, Arc<dyn SinkFactory>>,
    tables: BTreeMap<&'static str, Arc<dyn TableFactory>>,
    /// Connectors Weir has but this build was made without: name → Cargo feature.
    absent: BTreeMap<&'static str, &'static str>,
}

impl Connectors {
    /// Registers a source connector.
    pub fn add_source(&mut self, f: Arc<dyn SourceFactory>) {
        self.sources.insert(f.name(), f);
    }

    /// Registers a sink connector.
    pub fn add_sink(&mut self, f: Arc<dyn SinkFactory>) {
        self.sinks.insert(f.name(), f);
    }

    /// Registers a reference-table connector.
    pub fn add_table(&mut self, f: Arc<dyn TableFactory>) {
        self.tables.insert(f.name(), f);
    }

    /// The reference-table connector called `name`.
    pub fn table(&self, name: &str) -> Option<&Arc<dyn TableFactory>> {
        self.tables.get(name)
    }

    /// Names of the reference-table connectors.
    pub fn table_names(&self) -> Vec<&'static str> {
        self.tables.keys().copied().collect()
    }

    /// Records that the connector `name` exists but is not in this build: it comes with the
    /// Cargo feature `feature`.
    pub fn add_absent(&mut self, name: &'static str, feature: &'static str) {
        self.absent.insert(name, feature);
    }

    /// The Cargo feature that brings the connector `name`, when this build was made without
    /// it.
    pub fn absent(&self, name: &str) -> Option<&'static str> {
        self.absent.get(name).copied()
    }

    /// The connectors this build was made without, each with the feature that brings it.
    pub fn absent_list(&self) -> Vec<(&'static str, &'static str)> {
        self.absent.iter().map(|(n, f)| (*n, *f)).collect()
    }

    /// The source connector called `name`.
    pub fn source(&self, name: &str) -> Option<&Arc<dyn SourceFactory>> {
        self.sources.get(name)
    }

    /// The sink connector called `name`.
    pub fn sink(&self, name: &str) -> Option<&Arc<dyn SinkFactory>> {
        self.sinks.get(name)
    }

    /// Names of the source connectors.
    pub fn source_names(&self) -> Vec<&'static str> {
        self.sources.keys().copied().collect()
    }

    /// Names of the sink connectors.
    pub fn sink_names(&self) -> Vec<&'static str> {
        self.sinks.keys().copied().collect()
    }

    /// Every metric: the engine's, then each connector's (each name and label set once; a
    /// connector's metric may be recorded by its source with one label and by its sink with
    /// another).
    pub fn metrics(&self) -> Vec<MetricDef> {
        let mut all: Vec<MetricDef> = ENGINE_METRICS.to_vec();
        let own = self
            .sources
            .values()
            .flat_map(|f| f.metrics())
            .chain(self.sinks.values().flat_map(|f| f.metrics()));
        for m in own {
            if !all.iter().any(|a| a.name == m.name && a.labels == m.labels) {
                all.push(*m);
            }
        }
        all
    }
}
