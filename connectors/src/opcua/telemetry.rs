//! The OPC UA source's own metrics (besides the engine's per-source ones).

use weir_engine::observe::telemetry::MetricDef;

/// Values received.
pub const VALUES: MetricDef = MetricDef::counter(
    "weir_opcua_values_total",
    &["source"],
    "OPC UA values a source received (notifications and read results)",
);
/// Values left out by the status filter.
pub const VALUES_FILTERED: MetricDef = MetricDef::counter(
    "weir_opcua_values_filtered_total",
    &["source"],
    "OPC UA values left out by the source's status_filter",
);
/// Polls.
pub const POLLS: MetricDef = MetricDef::counter(
    "weir_opcua_polls_total",
    &["source"],
    "Reads of every node an OPC UA source in poll mode made",
);
/// Connection failures.
pub const CONNECTION_FAILURES: MetricDef = MetricDef::counter(
    "weir_opcua_connection_failures_total",
    &["source"],
    "Failed or lost connections of an OPC UA source's session",
);
/// Notifications dropped.
pub const NOTIFICATIONS_DROPPED: MetricDef = MetricDef::counter(
    "weir_opcua_notifications_dropped_total",
    &["source"],
    "OPC UA notifications dropped because the source's queue was full (the pipeline stalled)",
);

/// What the source records.
pub const METRICS: &[MetricDef] = &[
    VALUES,
    VALUES_FILTERED,
    POLLS,
    CONNECTION_FAILURES,
    NOTIFICATIONS_DROPPED,
];
