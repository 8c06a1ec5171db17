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

/// What the source records.
pub const METRICS: &[MetricDef] = &[POLLS, REQUESTS, CONNECTION_FAILURES];
