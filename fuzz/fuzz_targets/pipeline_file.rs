//! Fuzz target `pipeline_file`: see `weir_connectors::fuzz::pipeline_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir_connectors::fuzz::pipeline_file(data));
