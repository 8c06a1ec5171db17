//! Modbus (tokio-modbus) over TCP or RTU: a source polling register maps (one row per unit
//! and poll) and a sink writing rows back through a register map.

pub mod decode;
pub mod encode;
pub mod link;
pub mod plan;
pub mod register_map;
pub mod request;
mod settings;
pub mod sink;
pub mod source;
pub mod telemetry;
pub mod transport;

use weir_engine::PipelineError;
use weir_engine::connector::{Sink, SinkFactory, SinkSpec, Source, SourceFactory, SourceSpec};
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

/// Builds Modbus sinks (writing to PLCs).
pub struct ModbusSinkFactory;

impl SinkFactory for ModbusSinkFactory {
    fn name(&self) -> &'static str {
        "modbus"
    }

    fn description(&self) -> &'static str {
        "writes each row's mapped columns to coils and holding registers of Modbus TCP or RTU devices (dry run until dry_run = 'false')"
    }

    fn options(&self) -> &'static [&'static [OptionSpec]] {
        &[settings::SINK_OPTIONS, crate::write_back::OPTIONS]
    }

    fn metrics(&self) -> &'static [MetricDef] {
        telemetry::SINK_METRICS
    }

    fn build(&self, spec: &SinkSpec, o: &Options) -> Result<Box<dyn Sink>, PipelineError> {
        Ok(Box::new(sink::ModbusSink::build(spec, o)?))
    }
}
