//! The MQTT connector's own metrics (besides the engine's per-source and per-sink ones).

use weir_engine::observe::telemetry::MetricDef;

/// Messages received.
pub const MESSAGES: MetricDef = MetricDef::counter(
    "weir_mqtt_messages_total",
    &["source"],
    "MQTT messages a source received (decoded or skipped)",
);
/// Connection failures of a source.
pub const SOURCE_CONNECTION_FAILURES: MetricDef = MetricDef::counter(
    "weir_mqtt_connection_failures_total",
    &["source"],
    "Failed or lost connections of an MQTT source to its broker",
);
/// Connection failures of a sink.
pub const SINK_CONNECTION_FAILURES: MetricDef = MetricDef::counter(
    "weir_mqtt_connection_failures_total",
    &["sink"],
    "Failed or lost connections of an MQTT sink to its broker",
);

/// What the source records.
pub const SOURCE_METRICS: &[MetricDef] = &[MESSAGES, SOURCE_CONNECTION_FAILURES];
/// What the sink records.
pub const SINK_METRICS: &[MetricDef] = &[SINK_CONNECTION_FAILURES];
