//! Fuzz target `spill_file`: see `weir_connectors::fuzz::spill_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir_connectors::fuzz::spill_file(data));
