//! The MQTT connector's own metrics (besides the engine's per-source and per-sink ones).

use weir_engine::observe::telemetry::MetricDef;

/// Messages received.
pub const MESSAGES: MetricDef = MetricDef::counter(
    "weir_mqtt_messages_total",
    &["source"],
    "MQTT messages a source received (decoded or skipped)",
);
/// Messages delivered again.
pub const REDELIVERED: MetricDef = MetricDef::counter(
    "weir_mqtt_redelivered_total",
    &["source"],
    "Messages a broker delivered again (after a reconnect or a restart) that Weir had already processed: acknowledged and not processed twice (exactly-once acknowledgements with --state-dir)",
);
/// Early checkpoints asked for.
pub const EARLY_CHECKPOINTS: MetricDef = MetricDef::counter(
    "weir_mqtt_checkpoints_asked_total",
    &["source"],
    "Checkpoints an MQTT source asked for before the interval because its unacknowledged messages neared the broker's limit (max_unacked)",
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
pub const SOURCE_METRICS: &[MetricDef] = &[
    MESSAGES,
    REDELIVERED,
    EARLY_CHECKPOINTS,
    SOURCE_CONNECTION_FAILURES,
    #[cfg(feature = "sparkplug")]
    super::sparkplug::NODES,
    #[cfg(feature = "sparkplug")]
    super::sparkplug::REBIRTHS,
    #[cfg(feature = "sparkplug")]
    super::sparkplug::SEQ_ERRORS,
    #[cfg(feature = "sparkplug")]
    super::sparkplug::STALE_DEATHS,
];
/// What the sink records.
pub const SINK_METRICS: &[MetricDef] = &[SINK_CONNECTION_FAILURES];
