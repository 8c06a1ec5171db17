//! `connector = 'file'`: replays Parquet, CSV or NDJSON files as a source, and writes
//! Parquet or NDJSON files into a local directory as a sink.

mod pushdown;
mod records;
mod settings;
mod sink;
mod source;
mod times;

use weir_engine::PipelineError;
use weir_engine::connector::{Sink, SinkFactory, SinkSpec, Source, SourceFactory, SourceSpec};
use weir_engine::parse::Options;
use weir_engine::parse::options::OptionSpec;

/// Builds file sources.
pub struct FileSourceFactory;

impl SourceFactory for FileSourceFactory {
    fn name(&self) -> &'static str {
        "file"
    }

    fn description(&self) -> &'static str {
        "replays Parquet, CSV or NDJSON files (a file or a directory of them)"
    }

    fn options(&self) -> &'static [&'static [OptionSpec]] {
        &[settings::SOURCE_OPTIONS]
    }

    fn build(&self, spec: &SourceSpec, o: &Options) -> Result<Box<dyn Source>, PipelineError> {
        let settings = settings::SourceSettings::from_options(o, spec.event_time.is_some())?;
        Ok(Box::new(source::FileSource::new(spec, settings)))
    }
}

/// Builds file sinks.
pub struct FileSinkFactory;

impl SinkFactory for FileSinkFactory {
    fn name(&self) -> &'static str {
        "file"
    }

    fn description(&self) -> &'static str {
        "Parquet or NDJSON files in a local directory, rolled by rows or time"
    }

    fn options(&self) -> &'static [&'static [OptionSpec]] {
        &[settings::SINK_OPTIONS]
    }

    fn build(&self, spec: &SinkSpec, o: &Options) -> Result<Box<dyn Sink>, PipelineError> {
        let settings = settings::SinkSettings::from_options(o)?;
        Ok(Box::new(sink::FileSink::new(&spec.name, settings)))
    }
}
