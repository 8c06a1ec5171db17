//! Runs a compiled project: starts sources and sinks as tasks, drives the dataflow, stops
//! on end of input or on request, and reports what happened.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::compile::Project;
use crate::connector::{SourceEvent, SourceHealth, SourceOutput};
use crate::exec::dataflow::SinkBatch;
use crate::live::{LiveHub, LiveWriter};
use crate::observe::RunStatus;

/// What happened during a run.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Wall-clock duration.
    pub elapsed: Duration,
    /// Until every source had ended and its rows had gone through the pipelines (the rest
    /// of `elapsed` is the sinks flushing and closing).
    pub processing: Duration,
    /// Per source.
    pub sources: Vec<SourceSummary>,
    /// Per pipeline.
    pub pipelines: Vec<PipelineSummary>,
    /// Sources that failed, with their error.
    pub failed_sources: Vec<(String, String)>,
    /// Sink write failures.
    pub sink_errors: u64,
}

/// One source's counters.
#[derive(Debug, Clone, Default)]
pub struct SourceSummary {
    /// Source name.
    pub name: String,
    /// Rows read.
    pub rows: u64,
    /// Rows dropped for a null event time.
    pub null_time_rows: u64,
    /// Inputs the source skipped (malformed, oversized, ...), by reason.
    pub skipped: BTreeMap<&'static str, u64>,
}

/// One pipeline's counters.
#[derive(Debug, Clone, Default)]
pub struct PipelineSummary {
    /// View or sink name.
    pub name: String,
    /// Rows read.
    pub rows_in: u64,
    /// Rows produced.
    pub rows_out: u64,
    /// Late rows dropped.
    pub late_rows: u64,
    /// Windows emitted.
    pub windows: u64,
    /// Batches that failed to evaluate.
    pub errors: u64,
}

impl Summary {
    /// Rows read by all sources.
    pub fn rows_in(&self) -> u64 {
        self.sources.iter().map(|s| s.rows).sum()
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        writeln!(
            f,
            "weir: finished in {:.2}s — {} rows in ({:.0} rows/s)",
            secs,
            self.rows_in(),
            self.rows_in() as f64 / secs
        )?;
        for s in &self.sources {
            write!(f, "  source {}: {} rows", s.name, s.rows)?;
            if s.null_time_rows > 0 {
                write!(f, ", {} dropped (no event time)", s.null_time_rows)?;
            }
            if !s.skipped.is_empty() {
                let total: u64 = s.skipped.values().sum();
                let reasons: Vec<String> =
                    s.skipped.iter().map(|(r, n)| format!("{r} {n}")).collect();
                write!(f, ", {total} inputs skipped ({})", reasons.join(", "))?;
            }
            writeln!(f)?;
        }
        for p in &self.pipelines {
            writeln!(
                f,
                "  pipeline {}: {} rows in, {} rows out, {} windows emitted, {} late rows dropped{}",
                p.name,
                p.rows_in,
                p.rows_out,
                p.windows,
                p.late_rows,
                if p.errors > 0 {
                    format!(", {} failed batches", p.errors)
                } else {
                    String::new()
                }
            )?;
        }
        for (name, e) in &self.failed_sources {
            writeln!(f, "  source {name} FAILED: {e}")?;
        }
        if self.sink_errors > 0 {
            writeln!(f, "  sink write failures: {}", self.sink_errors)?;
        }
        Ok(())
    }
}

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
        }
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
    } = control;
    status.starting();
    let Project {
        sources,
        sinks,
        mut dataflow,
        ..
    } = project;
    let health: Vec<Arc<SourceHealth>> = sources
        .iter()
        .map(|s| Arc::new(SourceHealth::new(&s.name)))
        .collect();
    let mut live =
        live.map(|hub| LiveWriter::new(hub, &sources, &sinks, &mut dataflow, health.clone()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (tx, mut rx) = mpsc::channel::<SourceEvent>(16);
    // Sinks: one task each behind a bounded channel.
    let mut sink_txs = Vec::new();
    let mut sink_tasks = Vec::new();
    let (close_by_tx, close_by) = watch::channel(None::<tokio::time::Instant>);
    for s in sinks {
        let (stx, mut srx) = mpsc::channel::<arrow::record_batch::RecordBatch>(16);
        sink_txs.push(stx);
        let mut sink = s.sink;
        let stats = s.stats;
        let name = s.name.clone();
        let close_by = close_by.clone();
        sink_tasks.push(tokio::spawn(async move {
            let mut failures = 0u64;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                let result = tokio::select! {
                    b = srx.recv() => match b {
                        Some(b) => {
                            stats.wrote(b.num_rows() as u64);
                            sink.write(b).await
                        }
                        None => break,
                    },
                    _ = tick.tick() => sink.tick().await,
                };
                if let Err(e) = result {
                    failures += 1;
                    stats.failed();
                    metrics::counter!("weir_sink_errors_total", "sink" => name.clone())
                        .increment(1);
                    error!(sink = %name, error = %format!("{e:#}"), "sink write failed");
                }
            }
            let deadline = close_by
                .borrow()
                .unwrap_or_else(|| tokio::time::Instant::now() + DEFAULT_GRACE);
            if let Err(e) = sink.close(deadline).await {
                failures += 1;
                stats.failed();
                error!(sink = %name, error = %format!("{e:#}"), "sink close failed");
            }
            failures
        }));
    }
    let source_names: Vec<String> = sources.iter().map(|s| s.name.clone()).collect();
    let mut running = sources.len();
    for s in sources {
        let out = SourceOutput::new(
            s.stream,
            tx.clone(),
            stop_rx.clone(),
            Arc::clone(&health[s.stream]),
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
    drop(tx);
    status.running(dataflow.pipelines.len());
    let mut failed = Vec::new();
    let mut stopped_at = None;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let send = |outs: Vec<SinkBatch>, txs: &Vec<mpsc::Sender<_>>| {
        let txs = txs.clone();
        async move {
            for (k, b) in outs {
                let _ = txs[k].send(b).await;
            }
        }
    };
    let mut stopping = false;
    while running > 0 {
        tokio::select! {
            ev = rx.recv() => {
                let Some(ev) = ev else { break };
                let now = Instant::now();
                let outs = match ev {
                    SourceEvent::Batch(id, b) => {
                        if let Some(l) = &mut live {
                            l.source_rows(id, &b, now);
                        }
                        dataflow.on_batch(id, b, now)
                    }
                    SourceEvent::End(id) => {
                        running -= 1;
                        info!(source = %source_names[id], "source ended");
                        dataflow.on_source_end(id)
                    }
                    SourceEvent::Failed(id, e) => {
                        running -= 1;
                        error!(source = %source_names[id], error = %e, "source failed");
                        status.source_failed(&source_names[id], &e);
                        if let Some(l) = &mut live {
                            l.source_failed(id);
                        }
                        failed.push((source_names[id].clone(), e));
                        dataflow.on_source_end(id)
                    }
                };
                if let Some(l) = &mut live {
                    l.update(&mut dataflow, now);
                }
                send(outs, &sink_txs).await;
            }
            _ = tick.tick() => {
                let now = Instant::now();
                let outs = dataflow.on_tick(now);
                if let Some(l) = &mut live {
                    l.update(&mut dataflow, now);
                }
                send(outs, &sink_txs).await;
            }
            r = stop.changed(), if !stopping => {
                if r.is_err() || *stop.borrow() {
                    stopping = true;
                    stopped_at = Some(tokio::time::Instant::now());
                    status.stopping();
                    info!("stopping: sources stop, open windows are handled, sinks are flushed");
                    let _ = stop_tx.send(true);
                }
            }
        }
    }
    if !dataflow.is_finished() {
        warn!("not every pipeline finished");
    }
    let processing = started.elapsed();
    status.stopping();
    let close_from = stopped_at.unwrap_or_else(tokio::time::Instant::now);
    close_by_tx.send_replace(Some(close_from + grace * 4 / 5));
    drop(sink_txs);
    let mut sink_errors = 0;
    for t in sink_tasks {
        sink_errors += t.await.unwrap_or(1);
    }
    if let Some(l) = &mut live {
        l.update(&mut dataflow, Instant::now());
    }
    status.finished();
    Summary {
        elapsed: started.elapsed(),
        processing,
        // sources are the first streams
        sources: dataflow
            .streams
            .iter()
            .zip(&health)
            .map(|(s, h)| SourceSummary {
                name: s.name.clone(),
                rows: s.rows_in,
                null_time_rows: s.null_time_rows,
                skipped: h.skipped(),
            })
            .collect(),
        pipelines: dataflow
            .pipelines
            .iter()
            .map(|p| {
                let w = p.window_stats();
                PipelineSummary {
                    name: p.name.clone(),
                    rows_in: p.rows_in,
                    rows_out: p.rows_out,
                    late_rows: w.late_rows,
                    windows: w.windows_emitted,
                    errors: p.errors,
                }
            })
            .collect(),
        failed_sources: failed,
        sink_errors,
    }
}
