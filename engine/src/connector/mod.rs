//! What sources and sinks implement, and the registry of connectors by name.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use tokio::sync::{mpsc, watch};

use crate::diagnostic::PipelineError;
use crate::parse::Options;

pub mod health;
pub mod sink_stats;

pub use health::{Connection, SourceHealth};
pub use sink_stats::{SinkCounts, SinkStats};

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
    Batch(usize, RecordBatch),
    /// The source has no more rows (finite input, or it was asked to stop).
    End(usize),
    /// The source failed and stopped.
    Failed(usize, String),
}

/// A running source's way to the engine.
#[derive(Debug, Clone)]
pub struct SourceOutput {
    id: usize,
    tx: mpsc::Sender<SourceEvent>,
    stop: watch::Receiver<bool>,
    health: Arc<SourceHealth>,
}

/// The engine is shutting down: the source should return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

impl SourceOutput {
    /// An output for source `id`, reporting its health to `health`.
    pub fn new(
        id: usize,
        tx: mpsc::Sender<SourceEvent>,
        stop: watch::Receiver<bool>,
        health: Arc<SourceHealth>,
    ) -> Self {
        Self {
            id,
            tx,
            stop,
            health,
        }
    }

    /// Where the source counts skipped inputs and reports its connection state.
    pub fn health(&self) -> &Arc<SourceHealth> {
        &self.health
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
    /// Where the sink counts uploads and spilled files (rows and failures are counted by
    /// the engine).
    pub stats: Arc<SinkStats>,
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
    /// The engine's own sinks (`stdout`, `file`, `object_store`) and no sources.
    pub fn with_builtin_sinks() -> Self {
        let mut c = Self::default();
        c.add_sink(Arc::new(crate::sinks::stdout::StdoutSinkFactory));
        c.add_sink(Arc::new(crate::sinks::file::FileSinkFactory));
        c.add_sink(Arc::new(crate::sinks::object_sink::ObjectStoreSinkFactory));
        c
    }

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
}
