//! `connector = 'stdout'`: prints rows as a table or as NDJSON.

use std::io::Write;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

use crate::connector::{Sink, SinkFactory, SinkSpec};
use crate::diagnostic::PipelineError;
use crate::parse::Options;

/// Output format of the stdout sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Table,
    Ndjson,
}

/// Builds `stdout` sinks.
pub struct StdoutSinkFactory;

impl SinkFactory for StdoutSinkFactory {
    fn name(&self) -> &'static str {
        "stdout"
    }

    fn description(&self) -> &'static str {
        "prints rows to standard output (format = 'table' or 'ndjson')"
    }

    fn build(&self, spec: &SinkSpec, options: &Options) -> Result<Box<dyn Sink>, PipelineError> {
        let format = match options.choice("format", &["table", "ndjson"])?.as_deref() {
            Some("ndjson") => Format::Ndjson,
            _ => Format::Table,
        };
        Ok(Box::new(StdoutSink {
            name: spec.name.clone(),
            format,
        }))
    }
}

struct StdoutSink {
    name: String,
    format: Format,
}

#[async_trait]
impl Sink for StdoutSink {
    async fn write(&mut self, batch: RecordBatch) -> anyhow::Result<()> {
        let mut text = Vec::new();
        match self.format {
            Format::Table => {
                writeln!(text, "-- {} ({} rows)", self.name, batch.num_rows())?;
                writeln!(
                    text,
                    "{}",
                    arrow::util::pretty::pretty_format_batches(&[batch])?
                )?;
            }
            Format::Ndjson => {
                let mut w = arrow::json::LineDelimitedWriter::new(&mut text);
                w.write(&batch)?;
                w.finish()?;
            }
        }
        let mut out = std::io::stdout().lock();
        out.write_all(&text)?;
        out.flush()?;
        Ok(())
    }

    async fn close(&mut self, _deadline: tokio::time::Instant) -> anyhow::Result<()> {
        std::io::stdout().flush()?;
        Ok(())
    }
}
