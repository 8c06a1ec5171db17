//! `weir run`: runs the pipeline files until their input ends or a signal stops them
//! (within the grace period), and restarts them on the new files when the files change
//! (`--watch`) or on SIGHUP, keeping the old ones when the new ones do not compile.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info, warn};
use weir_engine::exec::budget::StateLimits;
use weir_engine::exec::isolate::RowDeadLetters;
use weir_engine::live::LiveHub;
use weir_engine::observe::{RunStatus, telemetry};
use weir_engine::runtime::{RunCheckpoints, RunControl, Summary, run};

use crate::signals::{ReloadSignal, StopSignals};

/// The exit code of a run in which a sink lost output (and no source failed).
pub const SINK_LOST_OUTPUT: u8 = 3;

/// How `weir run` runs.
pub struct RunOptions {
    /// Pipeline files or directories.
    pub paths: Vec<PathBuf>,
    /// Emit (true) or discard open windows at the end.
    pub emit: bool,
    /// Checkpoints (`--state-dir`): also how a reload keeps open windows.
    pub checkpoints: Option<RunCheckpoints>,
    /// Time from a stop signal until the process must have exited.
    pub grace: Duration,
    /// `--no-writes`: sinks that write to machines are dry runs.
    pub no_writes: bool,
    /// Check the files for changes this often (None: no reloading).
    pub watch: Option<Duration>,
    /// Readiness, shared with the HTTP endpoints.
    pub status: Arc<RunStatus>,
    /// Where runs publish live tables for Flight SQL (None: Flight SQL is off).
    pub live: Option<Arc<LiveHub>>,
    /// Where rows pipelines cannot evaluate are written.
    pub dead_letter_rows: Option<Arc<RowDeadLetters>>,
    /// The process-wide window state budget and default state policy.
    pub state: StateLimits,
}

/// Parses and compiles the files (on the planning thread); errors come back as the
/// diagnostics' text.
pub async fn load(
    paths: &[PathBuf],
    emit: bool,
    state: StateLimits,
) -> Result<weir_engine::Project, String> {
    let paths = paths.to_vec();
    weir_engine::compile::on_planning_thread(move || async move {
        let env = |name: &str| std::env::var(name).ok();
        let files = weir_engine::load_files(&paths, &env).map_err(|d| d.to_string())?;
        let connectors = weir_connectors::all();
        let mut project = weir_engine::compile(files, &connectors, emit)
            .await
            .map_err(|d| format!("{d}\nweir: {} error(s)", d.0.len()))?;
        project.dataflow.set_state_limits(state);
        Ok(project)
    })
    .await
    .map_err(|e| format!("weir: {e:#}"))?
}

/// Runs until the input ends or a stop signal arrives; returns the exit code. `stop`
/// and `reload` were installed first thing.
pub async fn run_files(opts: RunOptions, stop: StopSignals, mut reload: ReloadSignal) -> ExitCode {
    let (signal_tx, mut signalled) = watch::channel(false);
    tokio::spawn(stop_signal(stop, signal_tx, opts.grace));
    let mut project = tokio::select! {
        loaded = load(&opts.paths, opts.emit, opts.state) => match loaded {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        },
        _ = signalled.changed() => {
            info!("stopped before any pipeline started");
            return ExitCode::SUCCESS;
        }
    };
    let mut seen = weir_engine::fingerprint(&opts.paths);
    loop {
        let (stop_tx, stop_rx) = watch::channel(false);
        let control = RunControl {
            stop: stop_rx,
            grace: opts.grace,
            status: Arc::clone(&opts.status),
            live: opts.live.clone(),
            dead_letter_rows: opts.dead_letter_rows.clone(),
            checkpoints: opts.checkpoints.clone(),
            no_writes: opts.no_writes,
        };
        let mut running = tokio::spawn(run(project, control));
        let mut check = tokio::time::interval(opts.watch.unwrap_or(Duration::from_secs(3600)));
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        check.tick().await;
        let next = loop {
            let hangup = tokio::select! {
                summary = &mut running => return finish(summary),
                _ = signalled.changed() => {
                    let _ = stop_tx.send(true);
                    return finish(running.await);
                }
                _ = reload.recv() => true,
                _ = check.tick(), if opts.watch.is_some() => false,
            };
            let now = weir_engine::fingerprint(&opts.paths);
            if !hangup && now == seen {
                continue;
            }
            if hangup {
                info!("SIGHUP received: reloading the pipeline files");
            }
            seen = now;
            match load(&opts.paths, opts.emit, opts.state).await {
                Ok(p) => break p,
                Err(e) => {
                    telemetry::reloaded(false);
                    error!(
                        "pipeline files changed but do not compile; the running pipelines go on:\n{e}"
                    );
                }
            }
        };
        info!("pipeline files changed: stopping the running pipelines to start the new ones");
        let _ = stop_tx.send(true);
        let summary = running.await;
        if *signalled.borrow() {
            info!("stop signal during the reload: the new pipelines are not started");
            return finish(summary);
        }
        match summary {
            Ok(summary) => eprint!("{summary}"),
            Err(e) => error!(error = %e, "the run ended abnormally"),
        }
        telemetry::reloaded(true);
        info!("reloaded: starting the new pipelines");
        project = next;
    }
}

fn finish(summary: Result<Summary, tokio::task::JoinError>) -> ExitCode {
    match summary {
        Ok(summary) => {
            eprint!("{summary}");
            if !summary.failed_sinks.is_empty() {
                ExitCode::from(2)
            } else if !summary.failed_sources.is_empty() {
                ExitCode::from(1)
            } else if summary.sinks_lost_output() {
                error!(
                    write_failures = summary.sink_errors(),
                    rows_lost = summary.sink_rows_lost(),
                    "a sink lost output: exiting {SINK_LOST_OUTPUT}"
                );
                ExitCode::from(SINK_LOST_OUTPUT)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            error!(error = %e, "the run ended abnormally");
            ExitCode::from(1)
        }
    }
}

/// On the first stop signal asks the run to stop; exits at once on a second one, or when
/// the grace period is over.
async fn stop_signal(mut stop: StopSignals, tx: watch::Sender<bool>, grace: Duration) {
    stop.recv().await;
    warn!(grace = ?grace, "signal received: stopping (send it again to exit at once)");
    let _ = tx.send(true);
    tokio::select! {
        _ = stop.recv() => {
            error!("second signal: exiting without flushing");
            std::process::exit(130);
        }
        _ = tokio::time::sleep(grace) => {
            error!(grace = ?grace, "still stopping when the grace period ran out: exiting");
            std::process::exit(1);
        }
    }
}
