//! The `stdout` sink: each batch printed as a table or as NDJSON lines.

use std::io::Write;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

use weir_engine::connector::Sink;

use super::settings::{Format, Settings};

/// A running `stdout` sink.
pub struct StdoutSink {
    name: String,
    format: Format,
}

impl StdoutSink {
    /// A sink printing the rows of sink `name`.
    pub fn new(name: &str, settings: Settings) -> Self {
        Self {
            name: name.to_string(),
            format: settings.format,
        }
    }
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
                let mut w: arrow::json::LineDelimitedWriter<_> =
                    weir_engine::json::writer(&mut text);
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
