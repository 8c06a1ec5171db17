//! Feeds the live tables from the dataflow's task and publishes snapshots of them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use tracing::warn;

use super::latest::LatestByKey;
use super::latest_thread::{LatestFeed, LatestTable};
use super::ring::RowRing;
use super::snapshot::{
    Graph, GraphNode, LiveTable, NodeKind, PipelineStatus, SinkStatus, Snapshot, SourceStatus,
};
use super::{HISTORY, LiveHub, SOURCES, TABLES};
use crate::clock::now_nanos;
use crate::compile::{CompiledSink, CompiledSource};
use crate::exec::dataflow::Dataflow;
use crate::exec::ids::{PipelineId, StreamId};
use crate::exec::pipeline::Target;
use crate::observe::telemetry::{SinkTelemetry, SourceTelemetry};
use crate::reference::ReferenceTable;

/// How often at most a snapshot is published when only source rows changed (new output is
/// published at once; the latest tables by their own thread).
const PUBLISH_EVERY: Duration = Duration::from_millis(100);
/// Snapshots with new windows are published at most this often.
const PUBLISH_GAP: Duration = Duration::from_millis(20);

struct SourceFeed {
    name: String,
    connector: String,
    telemetry: Arc<SourceTelemetry>,
    ring: RowRing,
    last_rows_at: Option<i64>,
    failed: bool,
}

struct PipelineFeed {
    /// Table name (the pipeline's name).
    table: String,
    history: RowRing,
    last_emit: Option<i64>,
}

/// Keeps the live tables of one run: called by the run's dataflow task after each event.
pub struct LiveWriter {
    hub: Arc<LiveHub>,
    sources: Vec<SourceFeed>,
    pipelines: Vec<PipelineFeed>,
    latest: LatestFeed,
    sinks: Vec<(String, String, Arc<SinkTelemetry>)>,
    last_publish: Option<Instant>,
    changed: bool,
    graph: Arc<Graph>,
    tables: Vec<Arc<ReferenceTable>>,
}

impl LiveWriter {
    /// Tables for the sources, pipelines, sinks and reference tables of one run, published
    /// into `hub`. Tells `dataflow` to keep its pipelines' outputs.
    pub fn new(
        hub: Arc<LiveHub>,
        sources: &[CompiledSource],
        sinks: &[CompiledSink],
        tables: &[Arc<ReferenceTable>],
        dataflow: &mut Dataflow,
    ) -> Self {
        dataflow.keep_outputs();
        let settings = hub.settings();
        let mut latest = Vec::new();
        let pipelines = dataflow
            .pipelines
            .iter()
            .map(|p| {
                // pipeline names are unique (inserts into one sink are numbered)
                let table = p.name.clone();
                latest.push(p.window.as_ref().and_then(|w| {
                    LatestByKey::new(&p.schema, w.out_keys.clone(), w.out_end, settings.latest)
                        .map_err(|e| warn!(pipeline = %p.name, error = %e, "no latest table: its keys cannot be compared"))
                        .ok()
                        .map(|rows| LatestTable {
                            table: table.clone(),
                            schema: p.schema.clone(),
                            rows,
                            telemetry: Arc::clone(&p.telemetry),
                        })
                }));
                PipelineFeed {
                    table,
                    history: RowRing::new(settings.history_rows, Some(settings.history_age)),
                    last_emit: None,
                }
            })
            .collect();
        let latest = LatestFeed::start(Arc::clone(&hub), latest);
        let mut writer = Self {
            hub,
            sources: sources
                .iter()
                .map(|s| SourceFeed {
                    name: s.name.clone(),
                    connector: s.connector.clone(),
                    telemetry: Arc::clone(&s.telemetry),
                    ring: RowRing::new(settings.source_rows, None),
                    last_rows_at: None,
                    failed: false,
                })
                .collect(),
            pipelines,
            latest,
            sinks: sinks
                .iter()
                .map(|s| {
                    (
                        s.name.clone(),
                        s.connector.clone(),
                        Arc::clone(&s.telemetry),
                    )
                })
                .collect(),
            last_publish: None,
            changed: true,
            graph: Arc::new(graph(sources.len(), sinks, dataflow)),
            tables: tables.to_vec(),
        };
        writer.publish(dataflow, Instant::now());
        writer
    }

    /// Raw rows from source `stream`.
    pub fn source_rows(&mut self, stream: StreamId, batch: &RecordBatch, now: Instant) {
        if let Some(s) = self.sources.get_mut(stream.index()) {
            s.ring.push(batch, now);
            s.last_rows_at = Some(now_nanos());
        }
    }

    /// Source `stream` failed.
    pub fn source_failed(&mut self, stream: StreamId) {
        if let Some(s) = self.sources.get_mut(stream.index()) {
            s.failed = true;
            self.changed = true;
        }
    }

    /// Takes the pipelines' new output from `dataflow` and publishes a snapshot when
    /// windows were emitted (at most every [`PUBLISH_GAP`]) or the last one is older than
    /// [`PUBLISH_EVERY`].
    pub fn update(&mut self, dataflow: &mut Dataflow, now: Instant) {
        let outputs = dataflow.take_outputs();
        if !outputs.is_empty() {
            self.changed = true;
            let t = now_nanos();
            for (p, b) in outputs {
                let feed = &mut self.pipelines[p.index()];
                feed.history.push(&b, now);
                feed.last_emit = Some(t);
                self.latest.rows(p.index(), &b);
            }
        }
        for feed in &mut self.pipelines {
            self.changed |= feed.history.expire(now);
        }
        let since = self.last_publish.map(|t| now.duration_since(t));
        let due = since.is_none_or(|d| d >= PUBLISH_EVERY);
        // emitted windows are published at once, but not more often than every PUBLISH_GAP:
        // with a window per batch, snapshots would cost the dataflow more than its rows
        let fresh = self.changed && since.is_none_or(|d| d >= PUBLISH_GAP);
        if fresh || due {
            self.publish(dataflow, now);
        }
    }

    fn publish(&mut self, dataflow: &Dataflow, now: Instant) {
        self.changed = false;
        self.last_publish = Some(now);
        let mut tables = BTreeMap::new();
        for (s, feed) in self.sources.iter().enumerate() {
            tables.insert(
                (SOURCES, feed.name.clone()),
                LiveTable {
                    schema: dataflow.streams[s].schema.clone(),
                    batches: feed.ring.batches(),
                },
            );
        }
        for t in &self.tables {
            tables.insert(
                (TABLES, t.name().to_string()),
                LiveTable {
                    schema: Arc::clone(t.schema()),
                    batches: vec![t.current().batch.clone()],
                },
            );
        }
        for (p, feed) in self.pipelines.iter().enumerate() {
            let schema = dataflow.pipelines[p].schema.clone();
            tables.insert(
                (HISTORY, feed.table.clone()),
                LiveTable {
                    schema,
                    batches: feed.history.batches(),
                },
            );
        }
        let snapshot = Snapshot {
            taken: now_nanos(),
            tables,
            pipelines: self.pipeline_status(dataflow),
            sources: self.source_status(dataflow),
            sinks: self
                .sinks
                .iter()
                .map(|(name, connector, telemetry)| SinkStatus {
                    name: name.clone(),
                    connector: connector.clone(),
                    counts: telemetry.counts(),
                    telemetry: Some(Arc::clone(telemetry)),
                })
                .collect(),
            graph: Arc::clone(&self.graph),
        };
        self.hub.publish(snapshot);
    }

    fn pipeline_status(&self, dataflow: &Dataflow) -> Vec<PipelineStatus> {
        dataflow
            .pipelines
            .iter()
            .zip(&self.pipelines)
            .enumerate()
            .map(|(i, (p, feed))| {
                let id = PipelineId::new(i);
                PipelineStatus {
                    name: feed.table.clone(),
                    target: match p.target {
                        Target::Stream(_) => "view",
                        Target::Sink(_) => "sink",
                    },
                    state: if p.budget.failed {
                        "failed"
                    } else if dataflow.is_pipeline_finished(id) {
                        "finished"
                    } else {
                        "running"
                    },
                    counts: p.telemetry.counts(),
                    last_emit: feed.last_emit,
                    watermark: dataflow.watermark(id),
                    telemetry: Some(Arc::clone(&p.telemetry)),
                }
            })
            .collect()
    }

    fn source_status(&self, dataflow: &Dataflow) -> Vec<SourceStatus> {
        self.sources
            .iter()
            .zip(&dataflow.streams)
            .map(|(feed, stream)| SourceStatus {
                name: feed.name.clone(),
                connector: feed.connector.clone(),
                state: if feed.failed {
                    "failed"
                } else {
                    stream.status.label()
                },
                counts: feed.telemetry.counts(),
                max_event_time: stream.clock.as_ref().and_then(|c| c.max_time),
                watermark: stream.event_time_watermark(),
                last_rows_at: feed.last_rows_at,
                telemetry: Some(Arc::clone(&feed.telemetry)),
            })
            .collect()
    }
}

/// The pipeline graph of a run with `sources` sources (the first streams) and `sinks`.
fn graph(sources: usize, sinks: &[CompiledSink], dataflow: &Dataflow) -> Graph {
    let pipelines = &dataflow.pipelines;
    let node = |kind, name: &str| GraphNode {
        kind,
        name: name.to_string(),
    };
    let mut nodes: Vec<GraphNode> = dataflow.streams[..sources]
        .iter()
        .map(|s| node(NodeKind::Source, &s.name))
        .collect();
    // the node that produces each view's stream
    let mut producer = std::collections::HashMap::new();
    for (i, p) in pipelines.iter().enumerate() {
        let kind = match p.target {
            Target::Stream(s) => {
                producer.insert(s.index(), sources + i);
                NodeKind::View
            }
            Target::Sink(_) => NodeKind::Insert,
        };
        nodes.push(node(kind, &p.name));
    }
    let first_sink = nodes.len();
    nodes.extend(sinks.iter().map(|s| node(NodeKind::Sink, &s.name)));
    let mut edges = Vec::new();
    for (i, p) in pipelines.iter().enumerate() {
        for b in &p.branches {
            let s = b.stream.index();
            let from = if s < sources {
                Some(s)
            } else {
                producer.get(&s).copied()
            };
            if let Some(from) = from
                && !edges.contains(&(from, sources + i))
            {
                edges.push((from, sources + i));
            }
        }
        if let Target::Sink(k) = p.target {
            edges.push((sources + i, first_sink + k.index()));
        }
    }
    Graph { nodes, edges }
}
