//! Weir's connectors: every source and sink, a folder each with the same shape — `mod.rs`
//! registering the factories, `settings.rs` declaring the options (and reading them into a
//! typed settings struct), `source.rs` / `sink.rs` — plus the helpers several of them share
//! (`columns`, `conform`). Each implements the engine's
//! [`weir_engine::connector`] traits; [`all`] is the one list of them.

pub mod columns;
pub mod conform;
pub mod file;
pub mod fuzz;
pub mod generator;
pub mod modbus;
pub mod mqtt;
pub mod object_store;
pub mod opcua;
pub mod parquet_footer;
pub mod stdout;

use std::sync::Arc;

use weir_engine::Connectors;

/// Every connector.
pub fn all() -> Connectors {
    let mut c = Connectors::default();
    c.add_source(Arc::new(generator::GeneratorFactory));
    c.add_source(Arc::new(file::FileSourceFactory));
    c.add_source(Arc::new(mqtt::MqttSourceFactory));
    c.add_source(Arc::new(modbus::ModbusSourceFactory));
    c.add_source(Arc::new(opcua::OpcUaSourceFactory));
    c.add_sink(Arc::new(stdout::StdoutSinkFactory));
    c.add_sink(Arc::new(file::FileSinkFactory));
    c.add_sink(Arc::new(object_store::ObjectStoreSinkFactory));
    c.add_sink(Arc::new(mqtt::MqttSinkFactory));
    c
}
