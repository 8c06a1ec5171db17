//! The `weir` command: run and check pipeline files.

mod logs;
#[cfg(feature = "flight")]
mod query;
mod serve_options;
mod signals;
mod supervise;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use weir_engine::exec::budget::{self, MaxStateBytes, StateLimits, StatePolicy};
use weir_engine::exec::isolate::RowDeadLetters;
#[cfg(feature = "flight")]
use weir_engine::flight;
use weir_engine::live::LiveHub;
use weir_engine::observe::{Endpoints, RunStatus};
#[cfg(feature = "page")]
use weir_engine::observe::{Page, PageInfo};

/// The Cargo features this binary was built with: its connectors, formats and object stores,
/// Flight SQL and the operator page.
fn features() -> Vec<&'static str> {
    let mut f: Vec<&'static str> = weir_connectors::FEATURES
        .iter()
        .filter(|(_, on)| *on)
        .map(|(name, _)| *name)
        .collect();
    if cfg!(feature = "flight") {
        f.push("flight");
    }
    if cfg!(feature = "page") {
        f.push("page");
    }
    f
}

/// `weir --version`: the version and the features built in.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    let features = features();
    format!(
        "{} (features: {})",
        env!("CARGO_PKG_VERSION"),
        if features.is_empty() {
            "none".to_string()
        } else {
            features.join(", ")
        }
    )
});

/// Weir: an edge stream-processing and local analytics engine. Pipelines are SQL files of
/// CREATE SOURCE, CREATE SINK, CREATE TABLE, CREATE VIEW and INSERT INTO statements.
#[derive(Parser, Debug)]
#[command(name = "weir", version = VERSION.as_str(), about, long_about = None)]
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
    /// On a stop or reload, keep them open in the final checkpoint: the next start goes on
    /// with them (needs --state-dir; windows still open when the input ends are emitted).
    Keep,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once, at start
enum Command {
    /// Run pipeline files (a directory means every .sql file in it) until their sources end
    /// or the process gets SIGINT/SIGTERM.
    Run {
        /// Pipeline files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// What to do with open windows at the end of input or on shutdown (default: keep
        /// with --state-dir, else emit).
        #[arg(long, value_enum)]
        open_windows: Option<OpenWindows>,
        /// Take checkpoints into this directory and restore the newest one at start: a crash
        /// or power cut loses and doubles nothing (see the README's Crash safety).
        #[arg(long, env = "WEIR_STATE_DIR", value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Time between checkpoints (with --state-dir).
        #[arg(long, env = "WEIR_CHECKPOINT_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
        checkpoint_interval: Duration,
        /// Discard the state directory's checkpoints at start (a new beginning on purpose).
        #[arg(long, requires = "state_dir")]
        state_reset: bool,
        /// This node's id in a fleet: the object-store sink puts it into every key (default:
        /// WEIR_NODE_NAME, the Kubernetes node name, else the host name).
        #[arg(long, env = "WEIR_NODE_ID", value_name = "ID")]
        node_id: Option<String>,
        /// Serve the operator page (/ and /api/status), /metrics (Prometheus), /healthz and
        /// /readyz on this address, e.g. 0.0.0.0:9464 (off when not given).
        #[arg(long, env = "WEIR_HTTP_ADDR")]
        http_addr: Option<SocketAddr>,
        /// Token the operator page (/) and /api/* require (as 'Authorization: Bearer' or
        /// the cookie /?token= sets); default: the Flight SQL token. /metrics, /healthz and
        /// /readyz stay open.
        #[arg(long, env = "WEIR_HTTP_TOKEN", hide_env_values = true)]
        http_token: Option<String>,
        /// Serve only /metrics, /healthz and /readyz on --http-addr: no operator page (and no
        /// live state kept for it unless Flight SQL is on).
        #[arg(long, env = "WEIR_NO_OPERATOR_PAGE")]
        no_operator_page: bool,
        /// After SIGTERM/SIGINT: time to stop sources, handle open windows and flush or
        /// spill pending uploads before the process exits anyway.
        #[arg(long, env = "WEIR_SHUTDOWN_GRACE", default_value = "25s", value_parser = humantime::parse_duration)]
        shutdown_grace: Duration,
        /// Commissioning: every sink that writes to machines (modbus, opcua) is a dry run —
        /// it logs what it would write and writes nothing, whatever its dry_run option says.
        #[arg(long, env = "WEIR_NO_WRITES")]
        no_writes: bool,
        /// Reload when the pipeline files change (checked every --watch-interval): the
        /// running pipelines stop as on a signal and the new ones start; files that do not
        /// compile are reported and the running pipelines go on.
        #[arg(long, env = "WEIR_WATCH")]
        watch: bool,
        /// How often --watch looks at the files.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        watch_interval: Duration,
        /// Append rows that a pipeline cannot evaluate (division by zero, failed cast, ...)
        /// to this NDJSON file, with the pipeline, the reason and the error (they are counted
        /// and logged either way).
        #[arg(long, env = "WEIR_DEAD_LETTER_ROWS", value_name = "FILE")]
        dead_letter_rows: Option<PathBuf>,
        /// Window state all pipelines together may hold, such as 64MiB; past it the
        /// pipelines holding the most apply their state policy. Default: half the
        /// container's (cgroup) memory limit when there is one; "none": no budget.
        #[arg(long, env = "WEIR_MAX_STATE_BYTES", value_name = "SIZE", value_parser = MaxStateBytes::parse)]
        max_state_bytes: Option<MaxStateBytes>,
        /// What a pipeline does when its window state reaches a budget (unless its view
        /// declares state_policy): emit_early, drop_new_keys or fail.
        #[arg(long, env = "WEIR_STATE_POLICY", default_value = "emit_early", value_parser = StatePolicy::parse)]
        state_policy: StatePolicy,
        /// /readyz answers 503 once every source has failed to connect for this long without
        /// delivering a row (a wrong address or password retried forever).
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        unready_after: Duration,
        #[command(flatten)]
        serve: serve_options::ServeOptions,
    },
    /// Run SQL on a running Weir's live tables over Flight SQL and print the result.
    #[cfg(feature = "flight")]
    Query(query::QueryArgs),
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
    /// List the source and sink connectors, or with --options the options of one.
    Connectors {
        /// Print the option table of this connector (its source and its sink).
        #[arg(long, value_name = "NAME")]
        options: Option<String>,
        /// Print tables in Markdown (as the README has them).
        #[arg(long, requires = "options")]
        markdown: bool,
    },
    /// List every metric /metrics serves, with its type, labels and meaning.
    Metrics,
}

/// The run's state budget, logged once.
fn state_limits(given: Option<MaxStateBytes>, policy: StatePolicy) -> StateLimits {
    let limits = StateLimits::resolve(given, policy);
    match (limits.max_bytes, given) {
        (Some(b), Some(_)) => tracing::info!(
            max_state_bytes = b,
            policy = policy.label(),
            "window state budget"
        ),
        (Some(b), None) => tracing::info!(
            max_state_bytes = b,
            policy = policy.label(),
            "window state budget: half the container's memory limit"
        ),
        (None, _) => tracing::info!(
            "no window state budget for the process (--max-state-bytes); views may have their own"
        ),
    }
    limits
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    logs::init(&cli.log_level, cli.log_format);
    match cli.command {
        Command::Check { paths, explain } => {
            match supervise::load(&paths, true, StateLimits::default()).await {
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
                        project.dataflow.pipeline_count()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Run {
            paths,
            open_windows,
            state_dir,
            checkpoint_interval,
            state_reset,
            node_id,
            http_addr,
            http_token,
            no_operator_page,
            shutdown_grace,
            no_writes,
            watch,
            watch_interval,
            dead_letter_rows,
            max_state_bytes,
            state_policy,
            unready_after,
            serve,
        } => {
            let (stop, reload) = match signals::install() {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("weir: cannot install signal handlers: {e}");
                    return ExitCode::from(2);
                }
            };
            match weir_engine::observe::process::raise_open_files_limit() {
                Ok(Some((from, to))) => {
                    let show = |l: Option<u64>| l.map_or("unlimited".into(), |l| l.to_string());
                    tracing::info!(from = %show(from), to = %show(to), "raised the open-files limit to its hard limit");
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit"),
            }
            let dead_letter_rows = match dead_letter_rows.as_deref().map(RowDeadLetters::open) {
                None => None,
                Some(Ok(d)) => Some(Arc::new(d)),
                Some(Err(e)) => {
                    eprintln!("weir: {e:#}");
                    return ExitCode::from(2);
                }
            };
            if let Some(id) = &node_id {
                weir_engine::node::set(id);
            }
            tracing::info!(node = weir_engine::node::id(), "node id");
            let open_windows = match (open_windows, &state_dir) {
                (Some(OpenWindows::Keep), None) => {
                    eprintln!(
                        "weir: --open-windows keep needs --state-dir (windows are kept in checkpoints)"
                    );
                    return ExitCode::from(2);
                }
                (Some(o), _) => o,
                (None, Some(_)) => OpenWindows::Keep,
                (None, None) => OpenWindows::Emit,
            };
            let checkpoints = match state_dir {
                None => None,
                Some(dir) => {
                    if checkpoint_interval.is_zero() {
                        eprintln!("weir: --checkpoint-interval must be more than 0s");
                        return ExitCode::from(2);
                    }
                    match weir_engine::checkpoint::CheckpointStore::open(&dir, state_reset) {
                        Ok(store) => {
                            tracing::info!(state_dir = %dir.display(), interval = ?checkpoint_interval,
                                reset = state_reset, lineage = %store.lineage(), "checkpoints on");
                            Some(weir_engine::runtime::RunCheckpoints {
                                store: Arc::new(store),
                                interval: checkpoint_interval,
                                keep_open_windows: open_windows == OpenWindows::Keep,
                                telemetry: Arc::default(),
                            })
                        }
                        Err(e) => {
                            eprintln!("weir: {e:#}");
                            return ExitCode::from(2);
                        }
                    }
                }
            };
            #[cfg(not(feature = "page"))]
            if http_token.is_some() {
                tracing::warn!(
                    "--http-token is ignored: the operator page is not in this build (built without feature \"page\")"
                );
            }
            let status = RunStatus::with_unready_after(unready_after);
            let page = cfg!(feature = "page") && http_addr.is_some() && !no_operator_page;
            #[cfg(not(feature = "flight"))]
            if serve.flight().is_some() {
                eprintln!(
                    "weir: Flight SQL is not in this build (built without feature \"flight\"): leave out --flight-token and --flight-no-auth"
                );
                return ExitCode::from(2);
            }
            // the live state feeds Flight SQL and the operator page
            let hub = (page || serve.flight().is_some()).then(|| LiveHub::new(serve.live()));
            #[cfg(feature = "flight")]
            let flight_server = match (serve.flight(), &hub) {
                (Some(settings), Some(hub)) => {
                    match flight::start(settings, Arc::clone(hub), Arc::clone(&status)) {
                        Ok(server) => Some(server),
                        Err(e) => {
                            eprintln!("weir: {e:#}");
                            return ExitCode::from(2);
                        }
                    }
                }
                _ => {
                    tracing::info!(
                        "Flight SQL off: set a token (--flight-token or WEIR_FLIGHT_TOKEN) or pass --flight-no-auth to serve live tables"
                    );
                    None
                }
            };
            if let Some(addr) = http_addr {
                let connectors = weir_connectors::all();
                let metrics = connectors.metrics();
                let served = match Endpoints::install(status.clone(), &metrics) {
                    Ok(e) => {
                        #[cfg(feature = "page")]
                        let e = match hub.as_ref().filter(|_| page) {
                            Some(hub) => e.with_page(Page::new(
                                PageInfo {
                                    version: env!("CARGO_PKG_VERSION").to_string(),
                                    features: features().iter().map(|f| f.to_string()).collect(),
                                    sources: connectors
                                        .source_names()
                                        .iter()
                                        .map(|s| s.to_string())
                                        .collect(),
                                    sinks: connectors
                                        .sink_names()
                                        .iter()
                                        .map(|s| s.to_string())
                                        .collect(),
                                    checkpoints: checkpoints
                                        .as_ref()
                                        .map(|c| Arc::clone(&c.telemetry)),
                                    started: std::time::Instant::now(),
                                },
                                Arc::clone(hub),
                                http_token.or_else(|| serve.flight_token.clone()),
                            )),
                            None => e,
                        };
                        weir_engine::observe::serve(addr, e).await
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = served {
                    eprintln!("weir: {e:#}");
                    return ExitCode::from(2);
                }
            }
            #[cfg(feature = "flight")]
            let _flight = flight_server;
            let live = hub;
            supervise::run_files(
                supervise::RunOptions {
                    paths,
                    emit: open_windows != OpenWindows::Discard,
                    checkpoints,
                    grace: shutdown_grace,
                    no_writes,
                    watch: watch.then_some(watch_interval),
                    status,
                    live,
                    dead_letter_rows,
                    state: state_limits(max_state_bytes, state_policy),
                },
                stop,
                reload,
            )
            .await
        }
        #[cfg(feature = "flight")]
        Command::Query(args) => query::run(args).await,
        Command::Functions => {
            for f in weir_udf::functions() {
                println!("{:<24} {}", f.name, f.description);
            }
            let (name, description) = budget::WINDOW_PARTIAL_DOC;
            println!("{name:<24} {description}");
            ExitCode::SUCCESS
        }
        Command::Connectors { options, markdown } => match options {
            None => {
                let c = weir_connectors::all();
                println!("sources: {}", c.source_names().join(", "));
                println!("sinks:   {}", c.sink_names().join(", "));
                println!("tables:  {}", c.table_names().join(", "));
                let absent: Vec<String> = c
                    .absent_list()
                    .iter()
                    .map(|(name, feature)| format!("{name} (feature \"{feature}\")"))
                    .collect();
                if !absent.is_empty() {
                    println!("not in this build: {}", absent.join(", "));
                }
                ExitCode::SUCCESS
            }
            Some(name) => connector_options(&name, markdown),
        },
        Command::Metrics => {
            let metrics = weir_connectors::all().metrics();
            print!(
                "{}",
                weir_engine::observe::telemetry::markdown_table(&metrics)
            );
            ExitCode::SUCCESS
        }
    }
}

/// `weir connectors --options NAME`: the option tables of the source and the sink called
/// `name`, from the connectors' own declarations.
fn connector_options(name: &str, markdown: bool) -> ExitCode {
    let c = weir_connectors::all();
    let mut tables = Vec::new();
    if let Some(f) = c.source(name) {
        tables.push(("source", f.description(), f.options()));
    }
    if let Some(f) = c.sink(name) {
        tables.push(("sink", f.description(), f.options()));
    }
    if let Some(f) = c.table(name) {
        tables.push(("table", f.description(), f.options()));
    }
    if let Some(feature) = c.absent(name) {
        eprintln!(
            "weir: connector '{name}' is not in this build (built without feature \"{feature}\")"
        );
        return ExitCode::from(2);
    }
    if tables.is_empty() {
        eprintln!(
            "weir: no connector '{name}' (sources: {}; sinks: {})",
            c.source_names().join(", "),
            c.sink_names().join(", ")
        );
        return ExitCode::from(2);
    }
    for (i, (kind, description, groups)) in tables.into_iter().enumerate() {
        if i > 0 {
            println!();
        }
        let options = weir_engine::connector::each_option(groups);
        if markdown {
            println!("{kind} `{name}`: {description}\n");
            print!("{}", weir_engine::parse::options::markdown_table(options));
        } else {
            println!("{kind} {name}: {description}");
            print!("{}", weir_engine::parse::options::text_table(options));
        }
    }
    ExitCode::SUCCESS
}
