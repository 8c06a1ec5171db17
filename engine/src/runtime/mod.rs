//! Runs a compiled project: starts sources and sinks as tasks, drives the dataflow, stops
//! on end of input or on request, and reports what happened.

mod sinks;
mod summary;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

pub use summary::{PipelineSummary, SinkSummary, SourceSummary, Summary};

use crate::compile::{CompiledSource, Project};
use crate::connector::{SourceEvent, SourceOutput};
use crate::exec::dataflow::{Dataflow, SinkBatch};
use crate::exec::ids::StreamId;
use crate::exec::isolate::RowDeadLetters;
use crate::live::{LiveHub, LiveWriter};
use crate::observe::RunStatus;
use crate::observe::telemetry::{SinkTelemetry, SourceTelemetry};
use sinks::SinkTasks;

/// How a run ends besides its input running out, and what it reports while it runs.
#[derive(Debug, Clone)]
pub struct RunControl {
    /// Set to true to stop: sources stop, open windows are handled, sinks are flushed.
    pub stop: watch::Receiver<bool>,
    /// Time allowed from the stop (or the end of input) until the sinks have closed:
    /// uploads still running at four fifths of it are abandoned and their files spilled.
    pub grace: Duration,
    /// Phase and failed sources, for readiness.
    pub status: Arc<RunStatus>,
    /// Where live tables are published for Flight SQL (None: not kept).
    pub live: Option<Arc<LiveHub>>,
    /// Where rows that pipelines cannot evaluate are written (None: only counted).
    pub dead_letter_rows: Option<Arc<RowDeadLetters>>,
}

/// The grace period when none is given: Kubernetes' default 30 s termination grace minus
/// a margin.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(25);

impl RunControl {
    /// Stopped by `stop`, with the default grace period and a status of its own.
    pub fn new(stop: watch::Receiver<bool>) -> Self {
        Self {
            stop,
            grace: DEFAULT_GRACE,
            status: RunStatus::new(),
            live: None,
            dead_letter_rows: None,
        }
    }
}

/// Events from the running sources.
const EVENT_QUEUE: usize = 16;

/// The running sources, as the run loop sees them.
struct SourceTasks {
    events: mpsc::Receiver<SourceEvent>,
    stop: watch::Sender<bool>,
    names: Vec<String>,
    running: usize,
}

impl SourceTasks {
    /// Starts a task per source; each sends its batches and, at its end, `End` or `Failed`.
    fn start(sources: Vec<CompiledSource>) -> Self {
        let (stop, stop_rx) = watch::channel(false);
        let (tx, events) = mpsc::channel::<SourceEvent>(EVENT_QUEUE);
        let names = sources.iter().map(|s| s.name.clone()).collect();
        let running = sources.len();
        for s in sources {
            let out = SourceOutput::new(s.stream, tx.clone(), stop_rx.clone(), s.telemetry);
            let done = tx.clone();
            let id = s.stream;
            info!(source = %s.name, connector = %s.connector, "source starting");
            tokio::spawn(async move {
                let ev = match s.source.run(out).await {
                    Ok(()) => SourceEvent::End(id),
                    Err(e) => SourceEvent::Failed(id, format!("{e:#}")),
                };
                let _ = done.send(ev).await;
            });
        }
        Self {
            events,
            stop,
            names,
            running,
        }
    }

    fn name(&self, id: StreamId) -> &str {
        &self.names[id.index()]
    }
}

/// The parts a run drives, between the sources and the sinks.
struct Run {
    dataflow: Dataflow,
    live: Option<LiveWriter>,
    sinks: SinkTasks,
    status: Arc<RunStatus>,
    failed: Vec<(String, String)>,
}

impl Run {
    /// One event from a source: rows through the pipelines, or the source's end.
    async fn on_event(&mut self, sources: &mut SourceTasks, ev: SourceEvent) {
        let now = Instant::now();
        let outs = match ev {
            SourceEvent::Batch(id, b) => {
                if let Some(l) = &mut self.live {
                    l.source_rows(id, &b, now);
                }
                self.dataflow.on_batch(id, b, now)
            }
            SourceEvent::End(id) => {
                sources.running -= 1;
                info!(source = %sources.name(id), "source ended");
                self.dataflow.on_source_end(id)
            }
            SourceEvent::Failed(id, e) => {
                sources.running -= 1;
                let name = sources.name(id).to_string();
                error!(source = %name, error = %e, "source failed");
                self.status.source_failed(&name, &e);
                if let Some(l) = &mut self.live {
                    l.source_failed(id);
                }
                self.failed.push((name, e));
                self.dataflow.on_source_end(id)
            }
        };
        self.deliver(outs, now).await;
    }

    /// Periodic work: idle sources, watermark lag, live tables.
    async fn on_tick(&mut self) {
        let now = Instant::now();
        let outs = self.dataflow.on_tick(now);
        self.deliver(outs, now).await;
    }

    async fn deliver(&mut self, outs: Vec<SinkBatch>, now: Instant) {
        if let Some(l) = &mut self.live {
            l.update(&mut self.dataflow, now);
        }
        self.sinks.send(outs).await;
    }

    /// Feeds the dataflow until every source has ended; a stop request stops the sources
    /// (which then end). Returns when the stop was asked for, if it was.
    async fn until_sources_end(
        &mut self,
        sources: &mut SourceTasks,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<tokio::time::Instant> {
        let mut stopped_at = None;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        while sources.running > 0 {
            tokio::select! {
                ev = sources.events.recv() => match ev {
                    Some(ev) => self.on_event(sources, ev).await,
                    None => break,
                },
                _ = tick.tick() => self.on_tick().await,
                r = stop.changed(), if stopped_at.is_none() => {
                    if r.is_err() || *stop.borrow() {
                        stopped_at = Some(tokio::time::Instant::now());
                        self.status.stopping();
                        info!("stopping: sources stop, open windows are handled, sinks are flushed");
                        let _ = sources.stop.send(true);
                    }
                }
            }
        }
        stopped_at
    }
}

/// Runs `project` until every source has ended (or `control.stop` fires).
pub async fn run(project: Project, control: RunControl) -> Summary {
    let started = Instant::now();
    let RunControl {
        mut stop,
        grace,
        status,
        live,
        dead_letter_rows,
    } = control;
    status.starting();
    let Project {
        sources,
        sinks,
        mut dataflow,
        ..
    } = project;
    if let Some(d) = dead_letter_rows {
        dataflow.set_row_dead_letters(d);
    }
    let live = live.map(|hub| LiveWriter::new(hub, &sources, &sinks, &mut dataflow));
    let source_telemetry: Vec<Arc<SourceTelemetry>> =
        sources.iter().map(|s| Arc::clone(&s.telemetry)).collect();
    let sink_telemetry: Vec<Arc<SinkTelemetry>> =
        sinks.iter().map(|s| Arc::clone(&s.telemetry)).collect();
    let mut run = Run {
        sinks: SinkTasks::start(sinks),
        dataflow,
        live,
        status: Arc::clone(&status),
        failed: Vec::new(),
    };
    let mut source_tasks = SourceTasks::start(sources);
    status.running(run.dataflow.pipeline_count(), source_telemetry.clone());
    let stopped_at = run.until_sources_end(&mut source_tasks, &mut stop).await;
    if !run.dataflow.is_finished() {
        warn!("not every pipeline finished");
    }
    let processing = started.elapsed();
    status.stopping();
    let close_from = stopped_at.unwrap_or_else(tokio::time::Instant::now);
    run.sinks.close(close_from + grace * 4 / 5).await;
    if let Some(l) = &mut run.live {
        l.update(&mut run.dataflow, Instant::now());
    }
    status.finished();
    Summary {
        elapsed: started.elapsed(),
        processing,
        sources: source_telemetry
            .iter()
            .map(|t| SourceSummary {
                name: t.name().to_string(),
                counts: t.counts(),
            })
            .collect(),
        pipelines: run
            .dataflow
            .pipelines
            .iter()
            .map(|p| PipelineSummary {
                name: p.name.clone(),
                counts: p.telemetry.counts(),
            })
            .collect(),
        sinks: sink_telemetry
            .iter()
            .map(|t| SinkSummary {
                name: t.name().to_string(),
                counts: t.counts(),
            })
            .collect(),
        failed_sources: run.failed,
    }
}
