//! `connector = 'stdout'`: prints rows to standard output, as a table or as NDJSON (for
//! development and demos).

mod settings;
mod sink;

use weir_engine::PipelineError;
use weir_engine::connector::{Sink, SinkFactory, SinkSpec};
use weir_engine::parse::Options;
use weir_engine::parse::options::OptionSpec;

/// Builds `stdout` sinks.
pub struct StdoutSinkFactory;

impl SinkFactory for StdoutSinkFactory {
    fn name(&self) -> &'static str {
        "stdout"
    }

    fn description(&self) -> &'static str {
        "prints rows to standard output (format = 'table' or 'ndjson')"
    }

    fn options(&self) -> &'static [&'static [OptionSpec]] {
        &[settings::OPTIONS]
    }

    fn build(&self, spec: &SinkSpec, options: &Options) -> Result<Box<dyn Sink>, PipelineError> {
        let settings = settings::Settings::from_options(options)?;
        Ok(Box::new(sink::StdoutSink::new(&spec.name, settings)))
    }
}
