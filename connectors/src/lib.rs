//! Weir's connectors (sources, and sinks that talk to devices or brokers). Each implements the engine's [`weir_engine::connector`] traits.

pub mod columns;
pub mod conform;
pub mod dead_letter;
pub mod file;
pub mod generator;
pub mod modbus;
pub mod mqtt;
pub mod opcua;
mod signals;

use std::sync::Arc;

use weir_engine::Connectors;

/// Every connector: the engine's sinks plus the sources of this crate.
pub fn all() -> Connectors {
    let mut c = Connectors::with_builtin_sinks();
    c.add_source(Arc::new(generator::GeneratorFactory));
    c.add_source(Arc::new(file::FileSourceFactory));
    c.add_source(Arc::new(mqtt::MqttSourceFactory));
    c.add_source(Arc::new(modbus::ModbusSourceFactory));
    c.add_source(Arc::new(opcua::OpcUaSourceFactory));
    c.add_sink(Arc::new(mqtt::MqttSinkFactory));
    c
}
