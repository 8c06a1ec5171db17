//! OPC UA (async-opcua) over None or signed and encrypted channels: a source (subscriptions
//! or polling of a node list or a browsed folder, as long or wide rows) and a sink (writes to
//! nodes and method calls).

pub mod encode;
pub mod instants;
pub mod nodes;
pub mod rows;
pub mod session;
pub mod settings;
pub mod sink;
pub mod source;
pub mod subscribe;
pub mod telemetry;
pub mod values;
pub mod write_plan;

use weir_engine::PipelineError;
use weir_engine::connector::{Sink, SinkFactory, SinkSpec, Source, SourceFactory, SourceSpec};
use weir_engine::observe::telemetry::MetricDef;
use weir_engine::parse::Options;
use weir_engine::parse::options::OptionSpec;

/// Builds OPC UA sources.
pub struct OpcUaSourceFactory;

impl SourceFactory for OpcUaSourceFactory {
    fn name(&self) -> &'static str {
        "opcua"
    }

    fn description(&self) -> &'static str {
        "subscribes to or polls OPC UA servers (nodes by id or browsed folder; long or wide rows)"
    }

    fn options(&self) -> &'static [&'static [OptionSpec]] {
        &[settings::CLIENT_OPTIONS, settings::SOURCE_OPTIONS]
    }

    fn metrics(&self) -> &'static [MetricDef] {
        telemetry::METRICS
    }

    fn build(&self, spec: &SourceSpec, o: &Options) -> Result<Box<dyn Source>, PipelineError> {
        Ok(Box::new(source::OpcUaSource::build(spec, o)?))
    }
}

/// Builds OPC UA sinks (writing to nodes and calling methods).
pub struct OpcUaSinkFactory;

impl SinkFactory for OpcUaSinkFactory {
    fn name(&self) -> &'static str {
        "opcua"
    }

    fn description(&self) -> &'static str {
        "writes each row's columns to OPC UA nodes as their DataType, or calls a method per row (dry run until dry_run = 'false')"
    }

    fn options(&self) -> &'static [&'static [OptionSpec]] {
        &[
            settings::CLIENT_OPTIONS,
            settings::SINK_OPTIONS,
            crate::write_back::OPTIONS,
        ]
    }

    fn metrics(&self) -> &'static [MetricDef] {
        telemetry::SINK_METRICS
    }

    fn build(&self, spec: &SinkSpec, o: &Options) -> Result<Box<dyn Sink>, PipelineError> {
        Ok(Box::new(sink::OpcUaSink::build(spec, o)?))
    }
}
