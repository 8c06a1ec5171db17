//! The Modbus source's own metrics (besides the engine's per-source ones).

use weir_engine::observe::telemetry::MetricDef;

/// Polls.
pub const POLLS: MetricDef = MetricDef::counter(
    "weir_modbus_polls_total",
    &["source"],
    "Polls of every unit a Modbus source made",
);
/// Requests.
pub const REQUESTS: MetricDef = MetricDef::counter(
    "weir_modbus_requests_total",
    &["source"],
    "Modbus requests (reads) a source sent",
);
/// Connection failures.
pub const CONNECTION_FAILURES: MetricDef = MetricDef::counter(
    "weir_modbus_connection_failures_total",
    &["source"],
    "Failed attempts of a Modbus source to open its TCP connection or serial line",
);

/// Requests of a sink.
pub const SINK_REQUESTS: MetricDef = MetricDef::counter(
    "weir_modbus_sink_requests_total",
    &["sink"],
    "Modbus requests (writes, read-backs) a sink sent",
);
/// Connection failures of a sink.
pub const SINK_CONNECTION_FAILURES: MetricDef = MetricDef::counter(
    "weir_modbus_sink_connection_failures_total",
    &["sink"],
    "Failed attempts of a Modbus sink to open its TCP connection or serial line",
);

/// What the source records.
pub const METRICS: &[MetricDef] = &[POLLS, REQUESTS, CONNECTION_FAILURES];
/// What the sink records (besides `weir_sink_writes_total`).
pub const SINK_METRICS: &[MetricDef] = &[SINK_REQUESTS, SINK_CONNECTION_FAILURES];
