//! Every metric Weir exports, declared once with its help text, unit and labels, and the
//! per-component telemetry that updates them.
//!
//! A component owns one telemetry struct ([`SourceTelemetry`], [`PipelineTelemetry`],
//! [`SinkTelemetry`], [`FlightTelemetry`]) holding its metric handles (created once) and the
//! counters the run summary and the live system tables read. The code that counts calls one
//! method: it updates the metric and the counter and, for failures, logs (rate-limited).
//!
//! The engine's metrics are listed in [`ENGINE_METRICS`]; each connector declares its own in
//! its folder and hands them to the registry ([`crate::connector::SourceFactory::metrics`]),
//! so `Connectors::metrics` is the one list `/metrics` describes and the README documents.

mod checkpoint;
mod flight;
mod limit;
mod pipeline;
mod sink;
mod source;
mod table;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

pub use checkpoint::{CheckpointCounts, CheckpointTelemetry, RestoredCheckpoint};
pub use flight::{FlightTelemetry, QueryResult};
pub use limit::LogLimit;
pub use pipeline::{PipelineCounts, PipelineTelemetry};
pub use sink::{SinkCounts, SinkTelemetry};
pub use source::{Connection, SourceCounts, SourceTelemetry};
pub use table::{TableCounts, TableTelemetry};

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A count that only grows.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// A distribution of observations.
    Histogram,
}

impl MetricKind {
    /// The Prometheus type name.
    pub fn name(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// One metric: name, kind, labels, unit and help text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDef {
    /// Prometheus name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// Label names, in the order they are given.
    pub labels: &'static [&'static str],
    /// Unit, for gauges and histograms of seconds or bytes.
    pub unit: Option<metrics::Unit>,
    /// One line for `# HELP` and the README.
    pub help: &'static str,
}

impl MetricDef {
    /// A counter.
    pub const fn counter(
        name: &'static str,
        labels: &'static [&'static str],
        help: &'static str,
    ) -> Self {
        Self {
            name,
            kind: MetricKind::Counter,
            labels,
            unit: None,
            help,
        }
    }

    /// A gauge.
    pub const fn gauge(
        name: &'static str,
        labels: &'static [&'static str],
        help: &'static str,
    ) -> Self {
        Self {
            name,
            kind: MetricKind::Gauge,
            labels,
            unit: None,
            help,
        }
    }

    /// A histogram.
    pub const fn histogram(
        name: &'static str,
        labels: &'static [&'static str],
        help: &'static str,
    ) -> Self {
        Self {
            name,
            kind: MetricKind::Histogram,
            labels,
            unit: None,
            help,
        }
    }

    /// The same metric with a unit.
    pub const fn in_unit(mut self, unit: metrics::Unit) -> Self {
        self.unit = Some(unit);
        self
    }

    fn labels(&self, values: &[&str]) -> Vec<metrics::Label> {
        debug_assert_eq!(
            values.len(),
            self.labels.len(),
            "label values for {}",
            self.name
        );
        self.labels
            .iter()
            .zip(values)
            .map(|(k, v)| metrics::Label::new(*k, v.to_string()))
            .collect()
    }

    /// The counter with these label values (in the order of [`MetricDef::labels`]).
    pub fn counter_with(&self, values: &[&str]) -> metrics::Counter {
        debug_assert_eq!(self.kind, MetricKind::Counter, "{} is a counter", self.name);
        metrics::counter!(self.name, self.labels(values))
    }

    /// The gauge with these label values.
    pub fn gauge_with(&self, values: &[&str]) -> metrics::Gauge {
        debug_assert_eq!(self.kind, MetricKind::Gauge, "{} is a gauge", self.name);
        metrics::gauge!(self.name, self.labels(values))
    }

    /// The histogram with these label values.
    pub fn histogram_with(&self, values: &[&str]) -> metrics::Histogram {
        debug_assert_eq!(
            self.kind,
            MetricKind::Histogram,
            "{} is a histogram",
            self.name
        );
        metrics::histogram!(self.name, self.labels(values))
    }

    /// Registers the help text and unit with the installed recorder.
    pub fn describe(&self) {
        let (name, help) = (self.name, self.help);
        match (self.kind, self.unit) {
            (MetricKind::Counter, None) => metrics::describe_counter!(name, help),
            (MetricKind::Counter, Some(u)) => metrics::describe_counter!(name, u, help),
            (MetricKind::Gauge, None) => metrics::describe_gauge!(name, help),
            (MetricKind::Gauge, Some(u)) => metrics::describe_gauge!(name, u, help),
            (MetricKind::Histogram, None) => metrics::describe_histogram!(name, help),
            (MetricKind::Histogram, Some(u)) => metrics::describe_histogram!(name, u, help),
        }
    }
}

/// A label value read back (from a checkpoint) as the `&'static str` that counters are
/// keyed by. Reasons are a small vocabulary: each distinct value is kept once.
pub(crate) fn intern(s: &str) -> &'static str {
    static KNOWN: OnceLock<std::sync::Mutex<std::collections::HashSet<&'static str>>> =
        OnceLock::new();
    let mut known = crate::sync::lock(KNOWN.get_or_init(Default::default));
    if let Some(k) = known.get(s) {
        return k;
    }
    let leaked: &'static str = Box::leak(s.to_string().into_boxed_str());
    known.insert(leaked);
    leaked
}

/// Deserializes a map of counts by reason, interning the reasons.
pub(crate) fn by_reason<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<std::collections::BTreeMap<&'static str, u64>, D::Error> {
    let m: std::collections::BTreeMap<String, u64> = serde::Deserialize::deserialize(d)?;
    Ok(m.into_iter().map(|(k, v)| (intern(&k), v)).collect())
}

/// A handle created on first use: series appear on `/metrics` only once something happened.
#[derive(Debug)]
pub(crate) struct Lazy<T>(OnceLock<T>);

impl<T> Default for Lazy<T> {
    fn default() -> Self {
        Self(OnceLock::new())
    }
}

impl<T> Lazy<T> {
    pub(crate) fn get(&self, make: impl FnOnce() -> T) -> &T {
        self.0.get_or_init(make)
    }
}

/// One counter: the value for the summary and the tables, the metric (created on first
/// use) for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct Count {
    value: AtomicU64,
    metric: Lazy<metrics::Counter>,
}

impl Count {
    pub(crate) fn add(&self, n: u64, make: impl FnOnce() -> metrics::Counter) {
        self.value.fetch_add(n, Ordering::Relaxed);
        self.metric.get(make).increment(n);
    }

    /// Adds a count carried over from a checkpoint (nothing when zero: the series appears
    /// only once something happened).
    pub(crate) fn carry(&self, n: u64, make: impl FnOnce() -> metrics::Counter) {
        if n > 0 {
            self.add(n, make);
        }
    }

    pub(crate) fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// Rows read by a source.
pub const SOURCE_ROWS: MetricDef = MetricDef::counter(
    "weir_source_rows_total",
    &["source"],
    "Rows read by a source",
);
/// Rows dropped before any pipeline.
pub const SOURCE_ROWS_DROPPED: MetricDef = MetricDef::counter(
    "weir_source_rows_dropped_total",
    &["source", "reason"],
    "Source rows dropped before any pipeline, by reason (null_event_time)",
);
/// Inputs a source could not use.
pub const SOURCE_SKIPPED: MetricDef = MetricDef::counter(
    "weir_source_skipped_total",
    &["source", "reason"],
    "Inputs a source could not use (malformed payloads, failed reads, Modbus exceptions, OPC UA conversions), by reason",
);
/// Connection state of a source.
pub const SOURCE_CONNECTED: MetricDef = MetricDef::gauge(
    "weir_source_connected",
    &["source"],
    "1 while a source is connected to its device, server or broker (MQTT, Modbus, OPC UA), 0 while it reconnects",
);
/// Rows into a pipeline.
pub const PIPELINE_ROWS_IN: MetricDef = MetricDef::counter(
    "weir_pipeline_rows_in_total",
    &["pipeline"],
    "Rows a pipeline (view or insert) read",
);
/// Rows out of a pipeline.
pub const PIPELINE_ROWS_OUT: MetricDef = MetricDef::counter(
    "weir_pipeline_rows_out_total",
    &["pipeline"],
    "Rows a pipeline (view or insert) produced",
);
/// Windows emitted.
pub const PIPELINE_WINDOWS: MetricDef = MetricDef::counter(
    "weir_pipeline_windows_total",
    &["pipeline"],
    "Windows a pipeline closed and emitted (each with a row per group key)",
);
/// Late rows.
pub const LATE_ROWS: MetricDef = MetricDef::counter(
    "weir_late_rows_total",
    &["pipeline"],
    "Rows dropped because their window had already been emitted (late rows)",
);
/// Failed batches.
pub const PIPELINE_ERRORS: MetricDef = MetricDef::counter(
    "weir_pipeline_errors_total",
    &["pipeline"],
    "Batches a pipeline dropped as a whole because evaluating them failed where rows cannot be told apart (an aggregate's state)",
);
/// Rows dropped because evaluating them failed.
pub const PIPELINE_ROW_ERRORS: MetricDef = MetricDef::counter(
    "weir_pipeline_row_errors_total",
    &["pipeline", "reason"],
    "Rows a pipeline dropped because evaluating them failed (division_by_zero, cast, overflow, regex, value_too_large, evaluation); the other rows of their batch went on",
);
/// Window state a pipeline holds.
pub const PIPELINE_STATE_BYTES: MetricDef = MetricDef::gauge(
    "weir_pipeline_state_bytes",
    &["pipeline"],
    "Bytes of window state (open windows' partial aggregates and group keys) a windowed pipeline holds, by the accumulators' own accounting",
)
.in_unit(metrics::Unit::Bytes);
/// Windows a pipeline holds open.
pub const PIPELINE_OPEN_WINDOWS: MetricDef = MetricDef::gauge(
    "weir_pipeline_open_windows",
    &["pipeline"],
    "Windows a windowed pipeline holds open (panes of tumbling and hopping windows, sessions), as of the dataflow's last tick",
);
/// Partial-state rows a pipeline holds.
pub const PIPELINE_STATE_GROUPS: MetricDef = MetricDef::gauge(
    "weir_pipeline_state_groups",
    &["pipeline"],
    "Partial-state rows a windowed pipeline holds: one per (open window or pane, group key), as of the dataflow's last tick",
);
/// The process-wide state budget.
pub const STATE_LIMIT: MetricDef = MetricDef::gauge(
    "weir_state_limit_bytes",
    &[],
    "The window state all pipelines together may hold (--max-state-bytes; absent when there is no budget)",
)
.in_unit(metrics::Unit::Bytes);
/// Windows emitted early by the `emit_early` state policy.
pub const PIPELINE_EARLY_WINDOWS: MetricDef = MetricDef::counter(
    "weir_pipeline_windows_emitted_early_total",
    &["pipeline"],
    "Open windows a pipeline emitted before they closed, as partial results, because its state reached its budget (state_policy emit_early)",
);
/// Rows refused by the `drop_new_keys` state policy.
pub const PIPELINE_REFUSED_ROWS: MetricDef = MetricDef::counter(
    "weir_pipeline_refused_rows_total",
    &["pipeline"],
    "Rows a pipeline dropped because its state was at its budget and their group key had no state yet (state_policy drop_new_keys)",
);
/// Rows an inner join with a reference table dropped.
pub const JOIN_UNMATCHED: MetricDef = MetricDef::counter(
    "weir_join_unmatched_rows_total",
    &["pipeline"],
    "Rows an inner join with a reference table dropped because no table row matched (a LEFT JOIN keeps them with nulls)",
);
/// Rows of a reference table.
pub const TABLE_ROWS: MetricDef = MetricDef::gauge(
    "weir_table_rows",
    &["table"],
    "Rows of the reference table version in use",
);
/// Loads of a reference table.
pub const TABLE_LOADS: MetricDef = MetricDef::counter(
    "weir_table_loads_total",
    &["table", "result"],
    "Loads of a reference table: `ok` (a new version in use) or `failed` (the previous version stays)",
);
/// Keys in a latest table.
pub const LIVE_LATEST_KEYS: MetricDef = MetricDef::gauge(
    "weir_live_latest_keys",
    &["pipeline"],
    "Group keys kept in a windowed pipeline's latest.NAME table (bounded by --live-latest-keys)",
);
/// Keys evicted from a latest table.
pub const LIVE_LATEST_EVICTED: MetricDef = MetricDef::counter(
    "weir_live_latest_evicted_total",
    &["pipeline", "reason"],
    "Group keys evicted from a latest.NAME table, by reason (keys: --live-latest-keys reached, the key updated longest ago goes; age: not updated for --live-latest-age)",
);
/// Rows a latest table did not take.
pub const LIVE_LATEST_DROPPED: MetricDef = MetricDef::counter(
    "weir_live_latest_dropped_rows_total",
    &["pipeline"],
    "Rows of emitted windows a latest.NAME table did not take because its thread was behind (the dataflow never waits for live tables)",
);
/// Emission delay of windows.
pub const WINDOW_EMIT_DELAY: MetricDef = MetricDef::histogram(
    "weir_window_emit_delay_seconds",
    &["pipeline"],
    "Wall-clock time from a window's end (event time) to its emission: watermark delay, waiting and work (meaningful when event time is the wall clock, as with live data)",
)
.in_unit(metrics::Unit::Seconds);
/// Watermark lag.
pub const WATERMARK_LAG: MetricDef = MetricDef::gauge(
    "weir_watermark_lag_seconds",
    &["pipeline"],
    "Wall-clock time minus a windowed pipeline's watermark (meaningful when event time is the wall clock)",
)
.in_unit(metrics::Unit::Seconds);
/// Rows handed to a sink.
pub const SINK_ROWS: MetricDef = MetricDef::counter(
    "weir_sink_rows_total",
    &["sink"],
    "Rows handed to a sink by the pipelines that insert into it",
);
/// Sink write failures.
pub const SINK_ERRORS: MetricDef = MetricDef::counter(
    "weir_sink_errors_total",
    &["sink"],
    "Sink writes (or closes) that failed",
);
/// Object uploads.
pub const SINK_UPLOADS: MetricDef = MetricDef::counter(
    "weir_sink_uploads_total",
    &["sink", "result"],
    "Object uploads by result (ok, failed)",
);
/// Bytes uploaded.
pub const SINK_UPLOADED_BYTES: MetricDef = MetricDef::counter(
    "weir_sink_uploaded_bytes_total",
    &["sink"],
    "Bytes uploaded to the object store",
)
.in_unit(metrics::Unit::Bytes);
/// Spilled files.
pub const SINK_SPILL_FILES: MetricDef = MetricDef::gauge(
    "weir_sink_spill_files",
    &["sink"],
    "Files waiting in the spill buffer",
);
/// Spilled bytes.
pub const SINK_SPILL_BYTES: MetricDef = MetricDef::gauge(
    "weir_sink_spill_bytes",
    &["sink"],
    "Bytes waiting in the spill buffer",
)
.in_unit(metrics::Unit::Bytes);
/// Age of the oldest spilled file.
pub const SINK_SPILL_OLDEST_AGE: MetricDef = MetricDef::gauge(
    "weir_sink_spill_oldest_age_seconds",
    &["sink"],
    "Age of the oldest file in the spill buffer",
)
.in_unit(metrics::Unit::Seconds);
/// Files dropped.
pub const SINK_DROPPED_FILES: MetricDef = MetricDef::counter(
    "weir_sink_dropped_files_total",
    &["sink"],
    "Files a sink dropped (spill budget reached, or larger than the budget)",
);
/// Rows dropped.
pub const SINK_DROPPED_ROWS: MetricDef = MetricDef::counter(
    "weir_sink_dropped_rows_total",
    &["sink"],
    "Rows a sink lost (dropped files, files that could not be spilled)",
);
/// Quarantined spill files.
pub const SINK_SPILL_QUARANTINED: MetricDef = MetricDef::counter(
    "weir_sink_spill_quarantined_total",
    &["sink"],
    "Torn or corrupt spill files moved to quarantine",
);
/// Quarantined spill files deleted.
pub const SINK_QUARANTINE_DELETED: MetricDef = MetricDef::counter(
    "weir_sink_spill_quarantine_deleted_total",
    &["sink"],
    "Quarantined spill files deleted, oldest first, to keep the quarantine within a tenth of spill_max_bytes or to make room in the budget",
);
/// Messages published.
pub const SINK_PUBLISHED: MetricDef = MetricDef::counter(
    "weir_sink_published_total",
    &["sink"],
    "Messages the MQTT sink published",
);
/// Values a write-back sink handled, by result.
pub const SINK_WRITES: MetricDef = MetricDef::counter(
    "weir_sink_writes_total",
    &["sink", "result"],
    "Values a sink that writes to machines (modbus, opcua) handled, by result: written, unchanged (write_on_change), dry_run, refused (null, NaN, out of range), superseded (a newer value for the target came first), verify_mismatch, or why the write failed (timeout, not_connected, illegal_data_address, ...)",
);
/// Connection state of a sink.
pub const SINK_CONNECTED: MetricDef = MetricDef::gauge(
    "weir_sink_connected",
    &["sink"],
    "1 while the MQTT sink is connected to its broker, 0 while it reconnects",
);
/// Checkpoints.
pub const CHECKPOINTS: MetricDef = MetricDef::counter(
    "weir_checkpoints_total",
    &["result"],
    "Checkpoints by result (ok: complete and durable; failed: the previous one stays), with --state-dir",
);
/// Checkpoint duration.
pub const CHECKPOINT_DURATION: MetricDef = MetricDef::histogram(
    "weir_checkpoint_duration_seconds",
    &[],
    "Time from a checkpoint's cut until it is durable (state taken, sinks pre-committed, files written and fsynced); the dataflow pauses only while the state is taken",
)
.in_unit(metrics::Unit::Seconds);
/// Checkpoint size.
pub const CHECKPOINT_BYTES: MetricDef = MetricDef::gauge(
    "weir_checkpoint_bytes",
    &[],
    "Size of the newest complete checkpoint on disk",
)
.in_unit(metrics::Unit::Bytes);
/// Checkpoint age.
pub const CHECKPOINT_AGE: MetricDef = MetricDef::gauge(
    "weir_checkpoint_age_seconds",
    &[],
    "Time since the cut of the newest complete checkpoint (what a crash now would replay)",
)
.in_unit(metrics::Unit::Seconds);
/// The gap of a live source after a restore.
pub const SOURCE_GAP: MetricDef = MetricDef::gauge(
    "weir_source_gap_seconds",
    &["source"],
    "For sources that cannot replay (Modbus, OPC UA): time between the last batch the restored checkpoint covers and the restart, the values missed",
)
.in_unit(metrics::Unit::Seconds);
/// Readiness.
pub const READY: MetricDef = MetricDef::gauge(
    "weir_ready",
    &[],
    "1 while /readyz answers 200: every pipeline runs, no source or listener has failed, and not every source has been failing to connect for --unready-after",
);
/// Reloads.
pub const RELOADS: MetricDef = MetricDef::counter(
    "weir_reloads_total",
    &["result"],
    "--watch reloads after a pipeline file changed, by result (applied, rejected)",
);
/// Flight SQL queries.
pub const FLIGHT_QUERIES: MetricDef = MetricDef::counter(
    "weir_flight_queries_total",
    &["result"],
    "Flight SQL queries by result (ok, invalid, not_found, failed; too_large, timed_out, busy: refused by --flight-query-memory, --flight-query-timeout, --flight-query-concurrency)",
);
/// Flight SQL query time.
pub const FLIGHT_QUERY_SECONDS: MetricDef = MetricDef::histogram(
    "weir_flight_query_seconds",
    &[],
    "Time to answer a Flight SQL query (planning and execution on a snapshot)",
)
.in_unit(metrics::Unit::Seconds);
/// Flight SQL authentication failures.
pub const FLIGHT_AUTH_FAILURES: MetricDef = MetricDef::counter(
    "weir_flight_auth_failures_total",
    &[],
    "Flight SQL calls refused for missing or wrong credentials",
);
/// Flight SQL calls refused by the per-address backoff.
pub const FLIGHT_AUTH_THROTTLED: MetricDef = MetricDef::counter(
    "weir_flight_auth_throttled_total",
    &[],
    "Flight SQL calls refused without checking their credentials because their address failed authentication too often (per-address backoff)",
);
/// HTTP connections closed at once for the connection limit.
pub const HTTP_CONNECTIONS_REFUSED: MetricDef = MetricDef::counter(
    "weir_http_connections_refused_total",
    &[],
    "HTTP connections closed as soon as they were accepted because 64 were already open (the endpoints never hold more descriptors)",
);
/// Resident memory.
pub const PROCESS_RESIDENT_MEMORY: MetricDef = MetricDef::gauge(
    "process_resident_memory_bytes",
    &[],
    "Resident memory of the process (Linux)",
)
.in_unit(metrics::Unit::Bytes);
/// Virtual memory.
pub const PROCESS_VIRTUAL_MEMORY: MetricDef = MetricDef::gauge(
    "process_virtual_memory_bytes",
    &[],
    "Virtual memory of the process (Linux)",
)
.in_unit(metrics::Unit::Bytes);
/// Start time.
pub const PROCESS_START_TIME: MetricDef = MetricDef::gauge(
    "process_start_time_seconds",
    &[],
    "When the process started, in seconds since the Unix epoch",
)
.in_unit(metrics::Unit::Seconds);

/// The engine's own metrics (connectors add theirs through the registry).
pub const ENGINE_METRICS: &[MetricDef] = &[
    SOURCE_ROWS,
    SOURCE_ROWS_DROPPED,
    SOURCE_SKIPPED,
    SOURCE_CONNECTED,
    PIPELINE_ROWS_IN,
    PIPELINE_ROWS_OUT,
    PIPELINE_WINDOWS,
    LATE_ROWS,
    PIPELINE_ERRORS,
    PIPELINE_ROW_ERRORS,
    PIPELINE_STATE_BYTES,
    PIPELINE_OPEN_WINDOWS,
    PIPELINE_STATE_GROUPS,
    STATE_LIMIT,
    PIPELINE_EARLY_WINDOWS,
    PIPELINE_REFUSED_ROWS,
    JOIN_UNMATCHED,
    TABLE_ROWS,
    TABLE_LOADS,
    LIVE_LATEST_KEYS,
    LIVE_LATEST_EVICTED,
    LIVE_LATEST_DROPPED,
    WINDOW_EMIT_DELAY,
    WATERMARK_LAG,
    SINK_ROWS,
    SINK_ERRORS,
    SINK_UPLOADS,
    SINK_UPLOADED_BYTES,
    SINK_SPILL_FILES,
    SINK_SPILL_BYTES,
    SINK_SPILL_OLDEST_AGE,
    SINK_DROPPED_FILES,
    SINK_DROPPED_ROWS,
    SINK_SPILL_QUARANTINED,
    SINK_QUARANTINE_DELETED,
    SINK_PUBLISHED,
    SINK_WRITES,
    SINK_CONNECTED,
    CHECKPOINTS,
    CHECKPOINT_DURATION,
    CHECKPOINT_BYTES,
    CHECKPOINT_AGE,
    SOURCE_GAP,
    READY,
    RELOADS,
    FLIGHT_QUERIES,
    FLIGHT_QUERY_SECONDS,
    FLIGHT_AUTH_FAILURES,
    FLIGHT_AUTH_THROTTLED,
    HTTP_CONNECTIONS_REFUSED,
    PROCESS_RESIDENT_MEMORY,
    PROCESS_VIRTUAL_MEMORY,
    PROCESS_START_TIME,
];

/// Counts a `--watch` reload: applied or rejected.
pub fn reloaded(applied: bool) {
    RELOADS
        .counter_with(&[if applied { "applied" } else { "rejected" }])
        .increment(1);
}

/// The metrics as a Markdown table (name, type, labels, meaning), one row each: the README's
/// metric table is this text.
pub fn markdown_table<'a>(defs: impl IntoIterator<Item = &'a MetricDef>) -> String {
    let mut out = String::from("| metric | type | labels | meaning |\n|---|---|---|---|\n");
    for d in defs {
        let labels: Vec<String> = d.labels.iter().map(|l| format!("`{l}`")).collect();
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            d.name,
            d.kind.name(),
            labels.join(", "),
            d.help
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_labels_declared() {
        let mut names: Vec<&str> = ENGINE_METRICS.iter().map(|d| d.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "a metric is declared twice");
        for d in ENGINE_METRICS {
            assert!(d.name.starts_with("weir_") || d.name.starts_with("process_"));
            assert!(!d.help.is_empty(), "{} has no help text", d.name);
            if d.kind == MetricKind::Counter {
                assert!(d.name.ends_with("_total"), "{}", d.name);
            }
        }
    }

    #[test]
    fn table_has_a_row_per_metric() {
        let t = markdown_table(ENGINE_METRICS);
        assert_eq!(t.lines().count(), ENGINE_METRICS.len() + 2);
        assert!(t.contains("| `weir_sink_uploads_total` | counter | `sink`, `result` |"));
    }
}
