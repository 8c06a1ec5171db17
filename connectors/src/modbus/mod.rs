//! Modbus source (tokio-modbus): TCP or RTU polling of register maps, one row per unit and
//! poll.

pub mod decode;
pub mod link;
pub mod plan;
pub mod register_map;
pub mod request;
pub mod source;
pub mod transport;

use weir_engine::PipelineError;
use weir_engine::connector::{Source, SourceFactory, SourceSpec};
use weir_engine::parse::Options;

/// Builds Modbus sources.
pub struct ModbusSourceFactory;

impl SourceFactory for ModbusSourceFactory {
    fn name(&self) -> &'static str {
        "modbus"
    }

    fn description(&self) -> &'static str {
        "polls Modbus TCP or RTU devices through a register map (one row per unit and poll)"
    }

    fn build(&self, spec: &SourceSpec, o: &Options) -> Result<Box<dyn Source>, PipelineError> {
        Ok(Box::new(source::ModbusSource::build(spec, o)?))
    }
}
