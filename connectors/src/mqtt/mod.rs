//! MQTT source and sink (rumqttc; MQTT 3.1.1 and 5, TCP or TLS).

pub mod acks;
pub mod client;
pub mod decode;
pub mod guard;
pub mod json_fields;
pub mod link;
pub mod payloads;
pub mod settings;
pub mod sink;
pub mod source;
#[cfg(feature = "sparkplug")]
pub mod sparkplug;
pub mod telemetry;
pub mod topic;

use weir_engine::PipelineError;
use weir_engine::connector::{Sink, SinkFactory, SinkSpec, Source, SourceFactory, SourceSpec};
use weir_engine::observe::telemetry::MetricDef;
use weir_engine::parse::Options;
use weir_engine::parse::options::OptionSpec;

/// Builds MQTT sources.
pub struct MqttSourceFactory;

impl SourceFactory for MqttSourceFactory {
    fn name(&self) -> &'static str {
        "mqtt"
    }

    fn description(&self) -> &'static str {
        "subscribes to MQTT topics (JSON, raw or Sparkplug B payloads; topic levels as columns)"
    }

    fn options(&self) -> &'static [&'static [OptionSpec]] {
        &[settings::CONNECTION_OPTIONS, settings::SOURCE_OPTIONS]
    }

    fn metrics(&self) -> &'static [MetricDef] {
        telemetry::SOURCE_METRICS
    }

    fn build(&self, spec: &SourceSpec, o: &Options) -> Result<Box<dyn Source>, PipelineError> {
        Ok(Box::new(source::MqttSource::build(spec, o)?))
    }
}

/// Builds MQTT sinks.
pub struct MqttSinkFactory;

impl SinkFactory for MqttSinkFactory {
    fn name(&self) -> &'static str {
        "mqtt"
    }

    fn description(&self) -> &'static str {
        "publishes each row as a JSON object to a topic filled from the row, or as Sparkplug B data of an edge node"
    }

    fn options(&self) -> &'static [&'static [OptionSpec]] {
        &[settings::CONNECTION_OPTIONS, settings::SINK_OPTIONS]
    }

    fn metrics(&self) -> &'static [MetricDef] {
        telemetry::SINK_METRICS
    }

    fn build(&self, spec: &SinkSpec, o: &Options) -> Result<Box<dyn Sink>, PipelineError> {
        Ok(Box::new(sink::MqttSink::build(spec, o)?))
    }
}
