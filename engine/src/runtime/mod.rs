//! Runs a compiled project: starts sources and sinks as tasks, drives the dataflow, stops
//! on end of input or on request, and reports what happened.

mod checkpoints;
mod sinks;
mod summary;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

pub use checkpoints::RunCheckpoints;
pub use summary::{PipelineSummary, SinkSummary, SourceSummary, Summary};

use crate::compile::{CompiledSource, Project};
use crate::connector::{SinkStart, SourceEvent, SourceOutput, SourceStart};
use crate::exec::dataflow::{Dataflow, SinkBatch};
use crate::exec::ids::{SinkId, StreamId};
use crate::exec::isolate::RowDeadLetters;
use crate::live::{LiveHub, LiveWriter};
use crate::observe::RunStatus;
use crate::observe::telemetry::{SinkTelemetry, SourceTelemetry};
use checkpoints::{Checkpoints, Outcome};
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
    /// Checkpoints (`--state-dir`), if taken.
    pub checkpoints: Option<RunCheckpoints>,
    /// `--no-writes`: every sink that writes to machines is a dry run.
    pub no_writes: bool,
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
            checkpoints: None,
            no_writes: false,
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
    /// `committed[i]` tells source `i` which of its batches a complete checkpoint covers.
    fn start(sources: Vec<CompiledSource>, committed: Vec<watch::Receiver<u64>>) -> Self {
        let (stop, stop_rx) = watch::channel(false);
        let (tx, events) = mpsc::channel::<SourceEvent>(EVENT_QUEUE);
        let names = sources.iter().map(|s| s.name.clone()).collect();
        let running = sources.len();
        for (s, committed) in sources.into_iter().zip(committed) {
            let out = SourceOutput::new(
                s.stream,
                tx.clone(),
                stop_rx.clone(),
                s.telemetry,
                committed,
            );
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
    checkpoints: Option<Checkpoints>,
    /// Stopping with open windows kept: sources that end do not end their streams (the
    /// pipelines would emit their open windows).
    holding_ends: bool,
}

/// What woke the run loop.
enum Wake {
    Event(Option<SourceEvent>),
    Tick,
    Stop(bool),
    CheckpointDue,
    CheckpointDone(Outcome),
}

impl Run {
    /// One event from a source: rows through the pipelines, or the source's end.
    async fn on_event(&mut self, sources: &mut SourceTasks, ev: SourceEvent) {
        let now = Instant::now();
        let outs = match ev {
            SourceEvent::Batch {
                stream: id,
                batch: b,
                number,
                progress,
            } => {
                if let Some(c) = &mut self.checkpoints {
                    c.consumed(id, number, progress);
                }
                if let Some(l) = &mut self.live {
                    l.source_rows(id, &b, now);
                }
                self.dataflow.on_batch(id, b, now)
            }
            SourceEvent::CheckpointWanted(_) => {
                if let Some(c) = &mut self.checkpoints {
                    c.want();
                }
                return;
            }
            SourceEvent::End(id) if self.holding_ends => {
                sources.running -= 1;
                info!(source = %sources.name(id), "source stopped");
                return;
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
                if self.holding_ends {
                    return;
                }
                self.dataflow.on_source_end(id)
            }
        };
        self.deliver(outs, now).await;
    }

    /// Periodic work: idle sources, watermark lag, live tables, checkpoint age.
    async fn on_tick(&mut self) {
        let now = Instant::now();
        if let Some(c) = &self.checkpoints {
            c.refresh_age();
        }
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
    /// (which then end). Checkpoints are taken between batches. Returns when the stop was
    /// asked for, if it was.
    async fn until_sources_end(
        &mut self,
        sources: &mut SourceTasks,
        stop: &mut watch::Receiver<bool>,
        keep_open_windows: bool,
    ) -> Option<tokio::time::Instant> {
        let mut stopped_at = None;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        while sources.running > 0 {
            let wake = {
                let checkpoint = async {
                    match self.checkpoints.as_mut() {
                        Some(c) if c.idle() => {
                            c.due().await;
                            Wake::CheckpointDue
                        }
                        Some(c) => Wake::CheckpointDone(c.done().await),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    ev = sources.events.recv() => Wake::Event(ev),
                    _ = tick.tick() => Wake::Tick,
                    r = stop.changed(), if stopped_at.is_none() => {
                        Wake::Stop(r.is_err() || *stop.borrow())
                    }
                    w = checkpoint => w,
                }
            };
            match wake {
                Wake::Event(Some(ev)) => self.on_event(sources, ev).await,
                Wake::Event(None) => break,
                Wake::Tick => self.on_tick().await,
                Wake::Stop(true) => {
                    stopped_at = Some(tokio::time::Instant::now());
                    self.status.stopping();
                    if keep_open_windows {
                        self.holding_ends = true;
                        info!(
                            "stopping: sources stop, open windows are kept in the final checkpoint, sinks are flushed"
                        );
                    } else {
                        info!(
                            "stopping: sources stop, open windows are handled, sinks are flushed"
                        );
                    }
                    let _ = sources.stop.send(true);
                }
                Wake::Stop(false) => {}
                Wake::CheckpointDue => {
                    if let Some(c) = &mut self.checkpoints {
                        c.start(&mut self.dataflow, &self.sinks).await;
                    }
                }
                Wake::CheckpointDone(outcome) => {
                    if let Some(c) = &mut self.checkpoints {
                        c.finished(outcome, &self.sinks).await;
                    }
                }
            }
        }
        stopped_at
    }

    /// The last checkpoint of a run: after the one being written, one at the end, so that
    /// a restart goes on from exactly here.
    async fn final_checkpoint(&mut self) {
        let Some(c) = &mut self.checkpoints else {
            return;
        };
        c.settle(&self.sinks).await;
        c.start(&mut self.dataflow, &self.sinks).await;
        c.settle(&self.sinks).await;
    }
}

/// Runs `project` until every source has ended (or `control.stop` fires).
pub async fn run(project: Project, control: RunControl) -> Summary {
    let started_at = Instant::now();
    let RunControl {
        mut stop,
        grace,
        status,
        live,
        dead_letter_rows,
        checkpoints,
        no_writes,
    } = control;
    status.starting();
    let Project {
        mut sources,
        sinks,
        mut dataflow,
        tables,
        ..
    } = project;
    if let Some(d) = dead_letter_rows {
        dataflow.set_row_dead_letters(d);
    }
    let live = live.map(|hub| LiveWriter::new(hub, &sources, &sinks, &tables, &mut dataflow));
    let source_telemetry: Vec<Arc<SourceTelemetry>> =
        sources.iter().map(|s| Arc::clone(&s.telemetry)).collect();
    let sink_telemetry: Vec<Arc<SinkTelemetry>> =
        sinks.iter().map(|s| Arc::clone(&s.telemetry)).collect();
    let keep_open_windows = checkpoints.as_ref().is_some_and(|c| c.keep_open_windows);
    let checkpoint_telemetry = checkpoints.as_ref().map(|c| Arc::clone(&c.telemetry));
    let sink_names: Vec<(String, Arc<SinkTelemetry>)> = sinks
        .iter()
        .map(|s| (s.name.clone(), Arc::clone(&s.telemetry)))
        .collect();
    let filters: Vec<_> = sources
        .iter()
        .map(|s| dataflow.source_filter(s.stream))
        .collect();
    let (checkpoints, committed, mut recover) = match checkpoints {
        Some(settings) => {
            let (c, committed, recover) =
                Checkpoints::restore(settings, &mut dataflow, &mut sources, &sink_names, filters)
                    .await;
            (Some(c), committed, recover.into_iter().map(Some).collect())
        }
        None => {
            for (s, filter) in sources.iter_mut().zip(filters) {
                let start = SourceStart {
                    filter,
                    ..Default::default()
                };
                if let Err(e) = s.source.prepare(start) {
                    warn!(source = %s.name, error = %format!("{e:#}"), "the source could not be prepared");
                }
            }
            let committed = sources.iter().map(|_| watch::channel(0).1).collect();
            (None, committed, vec![None; sinks.len()])
        }
    };
    let starts = (0..sinks.len())
        .map(|i| SinkStart {
            inputs: dataflow.pipelines_into(SinkId::new(i)),
            schema: dataflow.sink_schema(SinkId::new(i)),
            checkpoints: recover[i].take(),
            no_writes,
        })
        .collect();
    let (sink_tasks, started) = SinkTasks::start(sinks, starts);
    let mut failed_sinks = Vec::new();
    for (name, answer) in started {
        if let Ok(Err(e)) = answer.await {
            error!(sink = %name, error = %e, "sink cannot start: nothing is started");
            failed_sinks.push((name, e));
        }
    }
    if !failed_sinks.is_empty() {
        status.finished();
        sink_tasks.close(tokio::time::Instant::now() + grace).await;
        return Summary {
            elapsed: started_at.elapsed(),
            failed_sinks,
            ..Summary::default()
        };
    }
    let mut run = Run {
        sinks: sink_tasks,
        dataflow,
        live,
        status: Arc::clone(&status),
        failed: Vec::new(),
        checkpoints,
        holding_ends: false,
    };
    let (tables_stop, tables_stopped) = watch::channel(false);
    let fresh = tokio::spawn(crate::reference::keep_fresh(tables.clone(), tables_stopped));
    let mut source_tasks = SourceTasks::start(sources, committed);
    status.running(run.dataflow.pipeline_count(), source_telemetry.clone());
    let stopped_at = run
        .until_sources_end(&mut source_tasks, &mut stop, keep_open_windows)
        .await;
    if !run.dataflow.is_finished() && !run.holding_ends {
        warn!("not every pipeline finished");
    }
    let _ = tables_stop.send(true);
    let _ = fresh.await;
    run.final_checkpoint().await;
    let processing = started_at.elapsed();
    status.stopping();
    let close_from = stopped_at.unwrap_or_else(tokio::time::Instant::now);
    run.sinks.close(close_from + grace * 4 / 5).await;
    if let Some(l) = &mut run.live {
        l.update(&mut run.dataflow, Instant::now());
    }
    status.finished();
    Summary {
        elapsed: started_at.elapsed(),
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
        checkpoints: checkpoint_telemetry.map(|t| t.counts()),
        failed_sinks: Vec::new(),
        tables: tables
            .iter()
            .map(|t| (t.name().to_string(), t.telemetry().counts()))
            .collect(),
    }
}
