//! Fuzz target `modbus_registers`: see `weir_connectors::fuzz::modbus_registers`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir_connectors::fuzz::modbus_registers(data));
