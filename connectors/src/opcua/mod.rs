//! OPC UA source (async-opcua): subscriptions or polling of a node list or a browsed folder,
//! over None or signed and encrypted channels, as long or wide rows.

pub mod instants;
pub mod nodes;
pub mod rows;
pub mod session;
pub mod settings;
pub mod source;
pub mod subscribe;
pub mod telemetry;
pub mod values;

use weir_engine::PipelineError;
use weir_engine::connector::{Source, SourceFactory, SourceSpec};
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
        &[settings::OPTIONS]
    }

    fn metrics(&self) -> &'static [MetricDef] {
        telemetry::METRICS
    }

    fn build(&self, spec: &SourceSpec, o: &Options) -> Result<Box<dyn Source>, PipelineError> {
        Ok(Box::new(source::OpcUaSource::build(spec, o)?))
    }
}
