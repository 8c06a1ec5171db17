//! Fuzz target `sparkplug_payload`: see `weir_connectors::fuzz::sparkplug_payload`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir_connectors::fuzz::sparkplug_payload(data));
