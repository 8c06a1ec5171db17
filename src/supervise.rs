//! `weir run`: runs the pipeline files until their input ends or a signal stops them
//! (within the grace period), and with `--watch` restarts them on the new files when the
//! files change, keeping the old ones when the new ones do not compile.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info, warn};
use weir_engine::exec::isolate::RowDeadLetters;
use weir_engine::live::LiveHub;
use weir_engine::observe::{RunStatus, telemetry};
use weir_engine::runtime::{RunControl, Summary, run};

/// How `weir run` runs.
pub struct RunOptions {
    /// Pipeline files or directories.
    pub paths: Vec<PathBuf>,
    /// Emit (true) or discard open windows at the end.
    pub emit: bool,
    /// Time from a stop signal until the process must have exited.
    pub grace: Duration,
    /// Check the files for changes this often (None: no reloading).
    pub watch: Option<Duration>,
    /// Readiness, shared with the HTTP endpoints.
    pub status: Arc<RunStatus>,
    /// Where runs publish live tables for Flight SQL (None: Flight SQL is off).
    pub live: Option<Arc<LiveHub>>,
    /// Where rows pipelines cannot evaluate are written.
    pub dead_letter_rows: Option<Arc<RowDeadLetters>>,
}

/// Parses and compiles the files (on the planning thread); errors come back as the
/// diagnostics' text.
pub async fn load(paths: &[PathBuf], emit: bool) -> Result<weir_engine::Project, String> {
    let paths = paths.to_vec();
    weir_engine::compile::on_planning_thread(move || async move {
        let env = |name: &str| std::env::var(name).ok();
        let files = weir_engine::load_files(&paths, &env).map_err(|d| d.to_string())?;
        let connectors = weir_connectors::all();
        weir_engine::compile(files, &connectors, emit)
            .await
            .map_err(|d| format!("{d}\nweir: {} error(s)", d.0.len()))
    })
    .await
    .map_err(|e| format!("weir: {e:#}"))?
}

/// Runs until the input ends or a signal arrives; returns the exit code.
pub async fn run_files(opts: RunOptions) -> ExitCode {
    let mut project = match load(&opts.paths, opts.emit).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let (signal_tx, mut signalled) = watch::channel(false);
    tokio::spawn(stop_signal(signal_tx, opts.grace));
    let mut seen = weir_engine::fingerprint(&opts.paths);
    loop {
        let (stop_tx, stop_rx) = watch::channel(false);
        let control = RunControl {
            stop: stop_rx,
            grace: opts.grace,
            status: Arc::clone(&opts.status),
            live: opts.live.clone(),
            dead_letter_rows: opts.dead_letter_rows.clone(),
        };
        let mut running = tokio::spawn(run(project, control));
        let mut check = tokio::time::interval(opts.watch.unwrap_or(Duration::from_secs(3600)));
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        check.tick().await;
        let next = loop {
            tokio::select! {
                summary = &mut running => return finish(summary),
                _ = signalled.changed() => {
                    let _ = stop_tx.send(true);
                    return finish(running.await);
                }
                _ = check.tick(), if opts.watch.is_some() => {
                    let now = weir_engine::fingerprint(&opts.paths);
                    if now == seen {
                        continue;
                    }
                    seen = now;
                    match load(&opts.paths, opts.emit).await {
                        Ok(p) => break p,
                        Err(e) => {
                            telemetry::reloaded(false);
                            error!("pipeline files changed but do not compile; the running pipelines go on:\n{e}");
                        }
                    }
                }
            }
        };
        info!("pipeline files changed: stopping the running pipelines to start the new ones");
        let _ = stop_tx.send(true);
        match running.await {
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
            if summary.failed_sources.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            error!(error = %e, "the run ended abnormally");
            ExitCode::from(1)
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// On the first signal asks the run to stop; exits at once on a second signal, or when
/// the grace period is over.
async fn stop_signal(tx: watch::Sender<bool>, grace: Duration) {
    signal().await;
    warn!(grace = ?grace, "signal received: stopping (send it again to exit at once)");
    let _ = tx.send(true);
    tokio::select! {
        _ = signal() => {
            error!("second signal: exiting without flushing");
            std::process::exit(130);
        }
        _ = tokio::time::sleep(grace) => {
            error!(grace = ?grace, "still stopping when the grace period ran out: exiting");
            std::process::exit(1);
        }
    }
}
