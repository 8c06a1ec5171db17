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

/// Messages from a running source to the engine.
#[derive(Debug)]
pub enum SourceEvent {
    /// Rows.
    Batch(StreamId, RecordBatch),
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
}

/// The engine is shutting down: the source should return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

impl SourceOutput {
    /// An output for source `id`, counting into `telemetry`.
    pub fn new(
        id: StreamId,
        tx: mpsc::Sender<SourceEvent>,
        stop: watch::Receiver<bool>,
        telemetry: Arc<SourceTelemetry>,
    ) -> Self {
        Self {
            id,
            tx,
            stop,
            telemetry,
        }
    }

    /// Where the source counts skipped inputs and reports its connection state.
    pub fn telemetry(&self) -> &Arc<SourceTelemetry> {
        &self.telemetry
    }

    /// Sends a batch, waiting while the engine is busy (backpressure).
    pub async fn send(&self, batch: RecordBatch) -> Result<(), Stopped> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.is_stopped() {
            return Err(Stopped);
        }
        self.tx
            .send(SourceEvent::Batch(self.id, batch))
            .await
            .map_err(|_| Stopped)
    }

    /// Sends the last rows a stopping source still holds (sent even after the engine asked
    /// sources to stop; lost only if the engine is already gone).
    pub async fn send_last(&self, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            let _ = self.tx.send(SourceEvent::Batch(self.id, batch)).await;
        }
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

/// A running input.
#[async_trait]
pub trait Source: Send {
    /// True when the input ends by itself (a file, a generator with a limit).
    fn is_bounded(&self) -> bool;
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

/// A running output.
#[async_trait]
pub trait Sink: Send {
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

/// Connectors by name.
#[derive(Default, Clone)]
pub struct Connectors {
    sources: BTreeMap<&'static str, Arc<dyn SourceFactory>>,
    sinks: BTreeMap<&'static str, Arc<dyn SinkFactory>>,
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
