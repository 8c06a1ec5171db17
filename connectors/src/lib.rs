//! Weir's connectors: every source and sink, a folder each with the same shape — `mod.rs`
//! registering the factories, `settings.rs` declaring the options (and reading them into a
//! typed settings struct), `source.rs` / `sink.rs` — plus the helpers several of them share
//! (`columns`, `conform`). Each implements the engine's
//! [`weir_engine::connector`] traits; [`all`] is the one list of them.

pub mod columns;
pub mod conform;
pub mod file;
#[cfg(all(
    feature = "mqtt",
    feature = "sparkplug",
    feature = "modbus",
    feature = "opcua",
    feature = "object_store"
))]
pub mod fuzz;
pub mod generator;
#[cfg(feature = "modbus")]
pub mod modbus;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[cfg(feature = "object_store")]
pub mod object_store;
#[cfg(feature = "opcua")]
pub mod opcua;
#[cfg(any(feature = "modbus", feature = "opcua"))]
pub mod owner;
pub mod parquet_footer;
pub mod stdout;
#[cfg(any(feature = "modbus", feature = "opcua"))]
pub mod write_back;

use std::sync::Arc;

use weir_engine::Connectors;

/// The Cargo features of this crate, each with whether this build has it (the connectors,
/// the Sparkplug B format and the object stores).
pub const FEATURES: &[(&str, bool)] = &[
    ("mqtt", cfg!(feature = "mqtt")),
    ("sparkplug", cfg!(feature = "sparkplug")),
    ("modbus", cfg!(feature = "modbus")),
    ("opcua", cfg!(feature = "opcua")),
    ("object_store", cfg!(feature = "object_store")),
    ("s3", cfg!(feature = "s3")),
    ("gcs", cfg!(feature = "gcs")),
    ("azure", cfg!(feature = "azure")),
];

/// Every connector of this build; the ones it was built without are registered as absent,
/// with the feature that brings them.
pub fn all() -> Connectors {
    let mut c = Connectors::default();
    c.add_source(Arc::new(generator::GeneratorFactory));
    c.add_source(Arc::new(file::FileSourceFactory));
    c.add_sink(Arc::new(stdout::StdoutSinkFactory));
    c.add_sink(Arc::new(file::FileSinkFactory));
    c.add_table(Arc::new(file::FileTableFactory));
    #[cfg(feature = "mqtt")]
    {
        c.add_source(Arc::new(mqtt::MqttSourceFactory));
        c.add_sink(Arc::new(mqtt::MqttSinkFactory));
    }
    #[cfg(feature = "modbus")]
    {
        c.add_source(Arc::new(modbus::ModbusSourceFactory));
        c.add_sink(Arc::new(modbus::ModbusSinkFactory));
    }
    #[cfg(feature = "opcua")]
    {
        c.add_source(Arc::new(opcua::OpcUaSourceFactory));
        c.add_sink(Arc::new(opcua::OpcUaSinkFactory));
    }
    #[cfg(feature = "object_store")]
    c.add_sink(Arc::new(object_store::ObjectStoreSinkFactory));
    for (connector, feature) in [
        ("mqtt", "mqtt"),
        ("modbus", "modbus"),
        ("opcua", "opcua"),
        ("object_store", "object_store"),
    ] {
        if !FEATURES.iter().any(|&(f, on)| f == feature && on) {
            c.add_absent(connector, feature);
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connector this crate knows is either in the build or registered as absent,
    /// never unknown.
    #[test]
    fn every_connector_is_built_in_or_absent() {
        let c = all();
        for name in [
            "generator",
            "file",
            "stdout",
            "mqtt",
            "modbus",
            "opcua",
            "object_store",
        ] {
            let present = c.source(name).is_some() || c.sink(name).is_some();
            assert!(
                present != c.absent(name).is_some(),
                "{name}: present {present}, absent {:?}",
                c.absent(name)
            );
        }
    }
}
