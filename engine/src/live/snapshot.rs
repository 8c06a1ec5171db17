//! One published state of the live tables.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use super::SYSTEM;
use crate::observe::telemetry::{
    PipelineCounts, PipelineTelemetry, SinkCounts, SinkTelemetry, SourceCounts, SourceTelemetry,
};

/// The rows of one data table.
#[derive(Debug, Clone)]
pub struct LiveTable {
    /// Columns.
    pub schema: SchemaRef,
    /// Rows, oldest first.
    pub batches: Vec<RecordBatch>,
}

/// A pipeline's state and counters.
#[derive(Debug, Clone, Default)]
pub struct PipelineStatus {
    /// View or sink name.
    pub name: String,
    /// `view` or `sink`.
    pub target: &'static str,
    /// `running` or `finished`.
    pub state: &'static str,
    /// Rows in and out, late rows, windows, failed batches.
    pub counts: PipelineCounts,
    /// When it last produced rows (ns since the epoch).
    pub last_emit: Option<i64>,
    /// Its windows' watermark (ns since the epoch).
    pub watermark: Option<i64>,
    /// Where `counts` came from, to read them again later.
    pub telemetry: Option<Arc<PipelineTelemetry>>,
}

/// A source's state and counters.
#[derive(Debug, Clone, Default)]
pub struct SourceStatus {
    /// Name.
    pub name: String,
    /// Connector.
    pub connector: String,
    /// `active`, `idle`, `finished` or `failed`.
    pub state: &'static str,
    /// Rows read, rows without event time, skipped inputs, connection.
    pub counts: SourceCounts,
    /// Largest event time seen (ns since the epoch).
    pub max_event_time: Option<i64>,
    /// Watermark of its event-time column (ns since the epoch).
    pub watermark: Option<i64>,
    /// When its last rows arrived (ns since the epoch).
    pub last_rows_at: Option<i64>,
    /// Where `counts` came from, to read them again later.
    pub telemetry: Option<Arc<SourceTelemetry>>,
}

/// A sink's counters.
#[derive(Debug, Clone, Default)]
pub struct SinkStatus {
    /// Name.
    pub name: String,
    /// Connector.
    pub connector: String,
    /// Counters.
    pub counts: SinkCounts,
    /// Where `counts` came from, to read them again later.
    pub telemetry: Option<Arc<SinkTelemetry>>,
}

impl SinkStatus {
    /// The counters now (as taken, for a sink without telemetry to read again).
    pub fn counts_now(&self) -> SinkCounts {
        self.telemetry
            .as_ref()
            .map_or_else(|| self.counts.clone(), |t| t.counts())
    }
}

/// What a box of the pipeline graph is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// A source.
    Source,
    /// A view (a pipeline whose rows other pipelines read).
    View,
    /// An insert (a pipeline writing into a sink).
    Insert,
    /// A sink.
    Sink,
}

/// A box of the pipeline graph.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GraphNode {
    /// What it is.
    pub kind: NodeKind,
    /// Its name (a pipeline's as in the `pipeline` label of the metrics).
    pub name: String,
}

/// The pipeline graph of a run, from its compiled plan: sources, pipelines (views and
/// inserts, in dependency order) and sinks, and which reads or writes which.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Graph {
    /// Sources first, then pipelines in dependency order, then sinks.
    pub nodes: Vec<GraphNode>,
    /// `(from, to)` indices into `nodes`: a source or view read by a pipeline, a pipeline
    /// writing into a sink.
    pub edges: Vec<(usize, usize)>,
}

/// The live state at one moment: what one query sees.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// When it was taken (ns since the epoch).
    pub taken: i64,
    /// Data tables by (schema, name).
    pub tables: BTreeMap<(&'static str, String), LiveTable>,
    /// Pipelines.
    pub pipelines: Vec<PipelineStatus>,
    /// Sources.
    pub sources: Vec<SourceStatus>,
    /// Sinks.
    pub sinks: Vec<SinkStatus>,
    /// The run's pipeline graph.
    pub graph: Arc<Graph>,
}

/// A table as clients list it.
#[derive(Debug, Clone)]
pub struct TableEntry {
    /// `latest`, `history`, `sources` or `system`.
    pub schema: &'static str,
    /// Table name.
    pub name: String,
    /// `TABLE` or `SYSTEM TABLE`.
    pub table_type: &'static str,
    /// Columns.
    pub arrow_schema: SchemaRef,
    /// Rows.
    pub batches: Vec<RecordBatch>,
}

impl TableEntry {
    /// `schema.name`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }
}

impl Snapshot {
    /// Every table, data tables first, in schema and name order.
    pub fn entries(&self) -> Vec<TableEntry> {
        let mut out: Vec<TableEntry> = self
            .tables
            .iter()
            .map(|((schema, name), t)| TableEntry {
                schema,
                name: name.clone(),
                table_type: "TABLE",
                arrow_schema: t.schema.clone(),
                batches: t.batches.clone(),
            })
            .collect();
        out.sort_by_key(|e| {
            (
                super::SCHEMAS.iter().position(|s| *s == e.schema),
                e.name.clone(),
            )
        });
        out.extend(
            super::system::tables(self)
                .into_iter()
                .map(|(name, batch)| TableEntry {
                    schema: SYSTEM,
                    name: name.to_string(),
                    table_type: "SYSTEM TABLE",
                    arrow_schema: batch.schema(),
                    batches: vec![batch],
                }),
        );
        out
    }

    /// The table `schema.name` (`name` alone looks in `latest`).
    pub fn entry(&self, qualified: &str) -> Option<TableEntry> {
        let (schema, name) = qualified
            .split_once('.')
            .unwrap_or((super::LATEST, qualified));
        self.entries()
            .into_iter()
            .find(|e| e.schema == schema && e.name == name)
    }
}
