//! The OPC UA source's and sink's own metrics (besides the engine's per-source and per-sink
//! ones).

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

/// Requests of a sink.
pub const SINK_REQUESTS: MetricDef = MetricDef::counter(
    "weir_opcua_sink_requests_total",
    &["sink", "service"],
    "OPC UA requests a sink sent, by service: Write, Call, and Read and Browse (data types when connecting, verify read-backs)",
);
/// Connection failures of a sink.
pub const SINK_CONNECTION_FAILURES: MetricDef = MetricDef::counter(
    "weir_opcua_sink_connection_failures_total",
    &["sink"],
    "Failed or lost connections of an OPC UA sink's session",
);

/// What the sink records (besides `weir_sink_writes_total`, whose `result` is `written` or
/// the OPC UA status code a refused write or call got, e.g. `BadNotWritable`).
pub const SINK_METRICS: &[MetricDef] = &[SINK_REQUESTS, SINK_CONNECTION_FAILURES];

/// Counts a request of `service` (`Write`, `Call`, `Read`, `Browse`) by sink `sink`.
pub fn count_sink_request(sink: &str, service: &str) {
    SINK_REQUESTS.counter_with(&[sink, service]).increment(1);
}

/// What the source records.
pub const METRICS: &[MetricDef] = &[
    VALUES,
    VALUES_FILTERED,
    POLLS,
    CONNECTION_FAILURES,
    NOTIFICATIONS_DROPPED,
];
