//! `connector = 'generator'`: synthetic plant telemetry — machines × sensors sampled at a
//! fixed event-time interval, deterministic for a seed, with injectable faults.

mod settings;
mod signals;
mod source;

use weir_engine::PipelineError;
use weir_engine::connector::{Source, SourceFactory, SourceSpec};
use weir_engine::parse::Options;
use weir_engine::parse::options::OptionSpec;

/// Builds generator sources.
pub struct GeneratorFactory;

impl SourceFactory for GeneratorFactory {
    fn name(&self) -> &'static str {
        "generator"
    }

    fn description(&self) -> &'static str {
        "synthetic plant telemetry (machines × sensors, faults, deterministic seed)"
    }

    fn options(&self) -> &'static [&'static [OptionSpec]] {
        &[settings::OPTIONS]
    }

    fn build(&self, spec: &SourceSpec, o: &Options) -> Result<Box<dyn Source>, PipelineError> {
        source::check_columns(spec, o)?;
        let settings = settings::Settings::from_options(o)?;
        Ok(Box::new(source::Generator::new(spec, settings)))
    }
}
