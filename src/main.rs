//! The `weir` command: run and check pipeline files.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tokio::sync::watch;
use tracing::{error, warn};
use weir_engine::runtime::{RunControl, run};

/// Weir: an edge stream-processing and local analytics engine. Pipelines are SQL files of
/// CREATE SOURCE, CREATE SINK, CREATE VIEW and INSERT INTO statements.
#[derive(Parser, Debug)]
#[command(name = "weir", version, about, long_about = None)]
struct Cli {
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info", env = "WEIR_LOG_LEVEL")]
    log_level: String,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// What to do with windows still open when the input ends or the engine is stopped.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum OpenWindows {
    /// Emit them with the rows they have.
    Emit,
    /// Drop them.
    Discard,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run pipeline files (a directory means every .sql file in it) until their sources end
    /// or the process gets SIGINT/SIGTERM.
    Run {
        /// Pipeline files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// What to do with open windows at the end of input or on shutdown.
        #[arg(long, value_enum, default_value_t = OpenWindows::Emit)]
        open_windows: OpenWindows,
    },
    /// Parse and plan pipeline files without connecting to anything; errors are printed as
    /// file:line:column: message.
    Check {
        /// Pipeline files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Also print each pipeline's streaming operator and DataFusion plan.
        #[arg(long)]
        explain: bool,
    },
    /// List the SQL functions Weir adds to DataFusion's.
    Functions,
    /// List the source and sink connectors.
    Connectors,
}

fn init_logs(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn load(paths: &[PathBuf], emit: bool) -> Result<weir_engine::Project, ExitCode> {
    let env = |name: &str| std::env::var(name).ok();
    let files = weir_engine::load_files(paths, &env).map_err(|d| {
        eprintln!("{d}");
        ExitCode::from(2)
    })?;
    let connectors = weir_connectors::all();
    weir_engine::compile(files, &connectors, emit)
        .await
        .map_err(|d| {
            eprintln!("{d}");
            eprintln!("weir: {} error(s)", d.0.len());
            ExitCode::from(2)
        })
}

/// Resolves on the first SIGINT or SIGTERM; a second one exits at once.
async fn stop_signal(tx: watch::Sender<bool>) {
    let wait = || async {
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
    };
    wait().await;
    warn!("signal received: stopping (send it again to exit at once)");
    let _ = tx.send(true);
    wait().await;
    error!("second signal: exiting without flushing");
    std::process::exit(130);
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(&cli.log_level, cli.log_format);
    match cli.command {
        Command::Check { paths, explain } => match load(&paths, true).await {
            Ok(project) => {
                if explain {
                    for e in &project.explain {
                        println!("{e}\n");
                    }
                }
                println!(
                    "ok: {} source(s), {} sink(s), {} pipeline(s)",
                    project.sources.len(),
                    project.sinks.len(),
                    project.dataflow.pipelines.len()
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Run {
            paths,
            open_windows,
        } => {
            let project = match load(&paths, open_windows == OpenWindows::Emit).await {
                Ok(p) => p,
                Err(code) => return code,
            };
            let (tx, rx) = watch::channel(false);
            tokio::spawn(stop_signal(tx));
            let summary = run(project, RunControl { stop: rx }).await;
            eprint!("{summary}");
            if summary.failed_sources.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Command::Functions => {
            for f in weir_udf::functions() {
                println!("{:<24} {}", f.name, f.description);
            }
            ExitCode::SUCCESS
        }
        Command::Connectors => {
            let c = weir_connectors::all();
            println!("sources: {}", c.source_names().join(", "));
            println!("sinks:   {}", c.sink_names().join(", "));
            ExitCode::SUCCESS
        }
    }
}
