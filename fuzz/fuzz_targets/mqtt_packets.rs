//! Fuzz target `mqtt_packets`: see `weir_connectors::fuzz::mqtt_packets`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir_connectors::fuzz::mqtt_packets(data));
