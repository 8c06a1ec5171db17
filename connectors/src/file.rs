//! `connector = 'file'`: replays Parquet, CSV or NDJSON files with their event time, as fast
//! as possible or at the original pace.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use arrow::array::AsArray;
use arrow::datatypes::{SchemaRef, TimestampNanosecondType};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use weir_engine::PipelineError;
use weir_engine::connector::{Source, SourceFactory, SourceOutput, SourceSpec};
use weir_engine::parse::Options;

use crate::conform::conform;

/// File formats the file source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Apache Parquet.
    Parquet,
    /// Comma-separated values with a header line.
    Csv,
    /// One JSON object per line.
    Ndjson,
}

impl Format {
    fn from_extension(p: &Path) -> Option<Format> {
        match p.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "parquet" => Some(Format::Parquet),
            "csv" => Some(Format::Csv),
            "ndjson" | "jsonl" | "json" => Some(Format::Ndjson),
            _ => None,
        }
    }
}

/// Replay speed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pace {
    Max,
    /// Original pace sped up by this factor.
    Original(f64),
}

/// Builds file sources.
pub struct FileSourceFactory;

impl SourceFactory for FileSourceFactory {
    fn name(&self) -> &'static str {
        "file"
    }

    fn description(&self) -> &'static str {
        "replays Parquet, CSV or NDJSON files (a file or a directory of them)"
    }

    fn build(&self, spec: &SourceSpec, o: &Options) -> Result<Box<dyn Source>, PipelineError> {
        let path_entry = o.entry("path").ok_or_else(|| {
            o.error("missing required option 'path' (a file, or a directory of files)")
        })?;
        let path = PathBuf::from(&path_entry.value);
        let files: Vec<PathBuf> = if path.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(&path)
                .map_err(|e| o.value_error(path_entry, &format!("cannot read directory: {e}")))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && !p
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .collect();
            v.sort();
            v
        } else if path.is_file() {
            vec![path.clone()]
        } else {
            return Err(o.value_error(path_entry, "no such file or directory"));
        };
        let format = o.choice("format", &["parquet", "csv", "ndjson"])?;
        let format = match format.as_deref() {
            Some("parquet") => Format::Parquet,
            Some("csv") => Format::Csv,
            Some("ndjson") => Format::Ndjson,
            _ => match files.first().and_then(|f| Format::from_extension(f)) {
                Some(f) => f,
                None => return Err(o.error("cannot tell the file format from the name: add format = 'parquet', 'csv' or 'ndjson'")),
            },
        };
        let pace = match o.choice("pace", &["max", "original"])?.as_deref() {
            Some("original") => Pace::Original(o.f64("speed")?.unwrap_or(1.0).max(1e-6)),
            _ => Pace::Max,
        };
        if matches!(pace, Pace::Original(_)) && spec.event_time.is_none() {
            return Err(o.error(
                "pace = 'original' needs an event-time column: add event_time = '<column>'",
            ));
        }
        let batch_rows = o.u64("batch_rows")?.unwrap_or(8192).clamp(1, 1 << 20) as usize;
        Ok(Box::new(FileSource {
            files,
            format,
            pace,
            batch_rows,
            schema: spec.schema.clone(),
            event_time: spec.event_time,
        }))
    }
}

/// A running file source.
pub struct FileSource {
    files: Vec<PathBuf>,
    format: Format,
    pace: Pace,
    batch_rows: usize,
    schema: SchemaRef,
    event_time: Option<usize>,
}

type Batches = Box<dyn Iterator<Item = Result<RecordBatch, arrow::error::ArrowError>> + Send>;

impl FileSource {
    fn open(&self, path: &Path) -> anyhow::Result<Batches> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        Ok(match self.format {
            Format::Parquet => Box::new(
                ParquetRecordBatchReaderBuilder::try_new(file)
                    .with_context(|| format!("reading Parquet {}", path.display()))?
                    .with_batch_size(self.batch_rows)
                    .build()?,
            ),
            Format::Csv => Box::new(
                arrow::csv::ReaderBuilder::new(self.schema.clone())
                    .with_header(true)
                    .with_batch_size(self.batch_rows)
                    .build(BufReader::new(file))?,
            ),
            Format::Ndjson => Box::new(
                arrow::json::ReaderBuilder::new(self.schema.clone())
                    .with_batch_size(self.batch_rows)
                    .build(BufReader::new(file))?,
            ),
        })
    }
}

#[async_trait]
impl Source for FileSource {
    fn is_bounded(&self) -> bool {
        true
    }

    async fn run(self: Box<Self>, out: SourceOutput) -> anyhow::Result<()> {
        let mut origin: Option<(i64, tokio::time::Instant)> = None;
        for path in &self.files {
            let batches = self.open(path)?;
            for batch in batches {
                let batch = batch.with_context(|| format!("reading {}", path.display()))?;
                let batch = conform(&batch, &self.schema)?;
                if let (Pace::Original(speed), Some(col)) = (self.pace, self.event_time)
                    && let Some(first) = batch
                        .column(col)
                        .as_primitive::<TimestampNanosecondType>()
                        .iter()
                        .flatten()
                        .next()
                {
                    let (t0, w0) = *origin.get_or_insert((first, tokio::time::Instant::now()));
                    let ahead = ((first - t0).max(0) as f64 / speed) as u64;
                    tokio::time::sleep_until(w0 + Duration::from_nanos(ahead)).await;
                }
                if out.send(batch).await.is_err() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}
