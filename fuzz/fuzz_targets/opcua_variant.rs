//! Fuzz target `opcua_variant`: see `weir_connectors::fuzz::opcua_variant`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir_connectors::fuzz::opcua_variant(data));
