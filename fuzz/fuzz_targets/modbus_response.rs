//! Fuzz target `modbus_response`: see `weir_connectors::fuzz::modbus_response`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir_connectors::fuzz::modbus_response(data));
