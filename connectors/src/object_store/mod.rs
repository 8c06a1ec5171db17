//! `connector = 'object_store'`: Parquet files in S3 (or any S3-compatible store), Google
//! Cloud Storage, Azure Blob Storage or a local directory, under deterministic keys, with a
//! spill-to-disk buffer that holds files while the store is unreachable.
//!
//! [`sink`] writes and rolls files, [`keys`] names them, [`store`] reaches the store, the
//! [`uploader`] task uploads them or writes them to the [`spill`] directory and replays it.

pub mod keys;
mod outbox;
pub mod output;
mod settings;
mod sink;
pub mod spill;
pub mod store;
pub mod uploader;

use weir_engine::PipelineError;
use weir_engine::connector::{Sink, SinkFactory, SinkSpec};
use weir_engine::parse::Options;
use weir_engine::parse::options::OptionSpec;

/// Builds `object_store` sinks.
pub struct ObjectStoreSinkFactory;

impl SinkFactory for ObjectStoreSinkFactory {
    fn name(&self) -> &'static str {
        "object_store"
    }

    fn description(&self) -> &'static str {
        "Parquet files in S3, GCS, Azure or a directory, spilled to local disk while the store is unreachable"
    }

    fn options(&self) -> &'static [&'static [OptionSpec]] {
        &[settings::OPTIONS]
    }

    fn build(&self, spec: &SinkSpec, o: &Options) -> Result<Box<dyn Sink>, PipelineError> {
        let settings = settings::Settings::from_options(o, &spec.name)?;
        Ok(Box::new(sink::ObjectStoreSink::new(
            &spec.name,
            settings,
            spec.telemetry.clone(),
        )))
    }
}
