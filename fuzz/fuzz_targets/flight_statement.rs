//! Fuzz target `flight_statement`: see `weir_connectors::fuzz::flight_statement`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir_connectors::fuzz::flight_statement(data));
