//! Modbus source (tokio-modbus): TCP or RTU polling of register maps, one row per unit and
//! poll.

pub mod decode;
pub mod link;
pub mod plan;
pub mod register_map;
pub mod request;
mod settings;
pub mod source;
pub mod telemetry;
pub mod transport;

use weir_engine::PipelineError;
use weir_engine::connector::{Source, SourceFactory, SourceSpec};
use weir_engine::observe::telemetry::MetricDef;
use weir_engine::parse::Options;
use weir_engine::parse::options::OptionSpec;

/// Builds Modbus sources.
pub struct ModbusSourceFactory;

impl SourceFactory for ModbusSourceFactory {
    fn name(&self) -> &'static str {
        "modbus"
    }

    fn description(&self) -> &'static str {
        "polls Modbus TCP or RTU devices through a register map (one row per unit and poll)"
    }

    fn options(&self) -> &'static [&'static [OptionSpec]] {
        &[settings::OPTIONS]
    }

    fn metrics(&self) -> &'static [MetricDef] {
        telemetry::METRICS
    }

    fn build(&self, spec: &SourceSpec, o: &Options) -> Result<Box<dyn Source>, PipelineError> {
        Ok(Box::new(source::ModbusSource::build(spec, o)?))
    }
}
