//! `connector = 'file'`: replays Parquet, CSV or NDJSON files as a source, writes Parquet
//! or NDJSON files into a local directory as a sink, and reads a reference table whole.

mod pushdown;
mod records;
mod settings;
mod sink;
mod source;
mod table;
mod times;

use weir_engine::PipelineError;
use weir_engine::connector::{
    Sink, SinkFactory, SinkSpec, Source, SourceFactory, SourceSpec, TableFactory, TableLoader,
    TableSpec,
};
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

/// Builds file reference tables.
pub struct FileTableFactory;

impl TableFactory for FileTableFactory {
    fn name(&self) -> &'static str {
        "file"
    }

    fn description(&self) -> &'static str {
        "a CSV, NDJSON, JSON or Parquet file read whole, again when it changes"
    }

    fn options(&self) -> &'static [&'static [OptionSpec]] {
        &[settings::TABLE_OPTIONS]
    }

    fn build(&self, spec: &TableSpec, o: &Options) -> Result<Box<dyn TableLoader>, PipelineError> {
        let s = settings::TableSettings::from_options(o)?;
        Ok(Box::new(table::FileTable::new(
            spec, &s.path, s.format, s.unit,
        )))
    }
}
