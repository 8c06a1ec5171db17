//! Fuzz target `mqtt_json`: see `weir_connectors::fuzz::mqtt_json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir_connectors::fuzz::mqtt_json(data));
