//! Fuzz target `pipeline_mutation`: see `weir_connectors::fuzz::pipeline_mutation`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir_connectors::fuzz::pipeline_mutation(data));
