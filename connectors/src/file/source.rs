//! The file source: replays Parquet, CSV or NDJSON files with their event time, as fast as
//! possible or at the original pace. A CSV or NDJSON record that does not decode is skipped,
//! counted and reported with its line; the rest of the file is replayed.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arrow::array::AsArray;
use arrow::datatypes::{SchemaRef, TimestampNanosecondType};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use weir_engine::connector::{Source, SourceOutput, SourceSpec};
use weir_engine::observe::telemetry::SourceTelemetry;

use super::records::{BadRecord, Records, decode_isolating};
use super::settings::{InputFormat, Pace, SourceSettings};
use super::times::{implausible, scale_epochs};
use crate::columns::EpochUnit;
use crate::conform::conform;
use weir_engine::dead_letter::{DeadLetterFile, DeadLetters};

/// A running file source.
pub struct FileSource {
    name: String,
    files: Vec<PathBuf>,
    format: InputFormat,
    pace: Pace,
    batch_rows: usize,
    max_bad_rows: Option<u64>,
    dead_letter: Option<DeadLetterFile>,
    schema: SchemaRef,
    event_time: Option<usize>,
    unit: EpochUnit,
}

impl FileSource {
    /// A source replaying what `settings` names into the columns of `spec`.
    pub fn new(spec: &SourceSpec, settings: SourceSettings) -> Self {
        Self {
            name: spec.name.clone(),
            files: settings.files,
            format: settings.format,
            pace: settings.pace,
            batch_rows: settings.batch_rows,
            max_bad_rows: settings.max_bad_rows,
            dead_letter: settings.dead_letter,
            schema: spec.schema.clone(),
            event_time: spec.event_time,
            unit: settings.unit,
        }
    }
}

/// Counts, logs and dead-letters records that do not decode, and stops the source past
/// `max_bad_rows`.
struct BadRows {
    source: String,
    telemetry: Arc<SourceTelemetry>,
    dead: Option<DeadLetters>,
    max: Option<u64>,
    seen: u64,
}

impl BadRows {
    fn record(&mut self, path: &Path, bad: BadRecord) -> anyhow::Result<()> {
        let at = format!("{}:{}", path.display(), bad.line);
        self.seen += 1;
        self.telemetry.skip(bad.reason, &at, &bad.detail);
        if let Some(d) = &mut self.dead {
            d.write(
                &self.source,
                &at,
                bad.reason,
                &bad.detail,
                &bad.bytes,
                bad.bytes.len(),
            );
        }
        match self.max {
            Some(max) if self.seen > max => anyhow::bail!(
                "{at}: {} ({}); {} bad rows, more than max_bad_rows = {max}",
                bad.detail,
                bad.reason,
                self.seen
            ),
            _ => Ok(()),
        }
    }
}

/// Replays at the pace of the event times: the first row's time is now.
struct Pacer {
    speed: Option<f64>,
    event_time: Option<usize>,
    origin: Option<(i64, tokio::time::Instant)>,
    /// The file whose implausible event times were last warned about.
    warned: Option<PathBuf>,
}

impl Pacer {
    /// Waits until `batch` is due.
    async fn wait(&mut self, batch: &RecordBatch) {
        let (Some(speed), Some(col)) = (self.speed, self.event_time) else {
            return;
        };
        let times = batch.column(col).as_primitive::<TimestampNanosecondType>();
        let Some(first) = times.iter().flatten().next() else {
            return;
        };
        let (t0, w0) = *self
            .origin
            .get_or_insert((first, tokio::time::Instant::now()));
        let ahead = ((first - t0).max(0) as f64 / speed) as u64;
        tokio::time::sleep_until(w0 + Duration::from_nanos(ahead)).await;
    }
}

impl FileSource {
    /// Warns, once per file, when an event time of `batch` is implausible: epoch numbers
    /// in another unit than `timestamp_unit`.
    fn check_times(&self, path: &Path, batch: &RecordBatch, pacer: &mut Pacer) {
        let Some(col) = self.event_time else {
            return;
        };
        if pacer.warned.as_deref() == Some(path) {
            return;
        }
        if let Some(t) = implausible(batch, col) {
            pacer.warned = Some(path.to_path_buf());
            let shown = chrono::DateTime::from_timestamp_nanos(t).to_rfc3339();
            tracing::warn!(source = %self.name, file = %path.display(), column = %self.schema.field(col).name(),
                time = %shown, timestamp_unit = ?self.unit,
                "event time before 1990 or after 2100: are the file's epoch numbers in another unit than timestamp_unit?");
        }
    }

    /// Sends the rows of a Parquet file; false when the engine stopped.
    async fn parquet(
        &self,
        path: &Path,
        pacer: &mut Pacer,
        out: &SourceOutput,
    ) -> anyhow::Result<bool> {
        let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        crate::parquet_footer::check_file(&mut file)
            .with_context(|| format!("reading Parquet {}", path.display()))?;
        let batches = ParquetRecordBatchReaderBuilder::try_new(file)
            .with_context(|| format!("reading Parquet {}", path.display()))?
            .with_batch_size(self.batch_rows)
            .build()?;
        for batch in batches {
            let batch = batch.with_context(|| format!("reading {}", path.display()))?;
            let batch = scale_epochs(batch, &self.schema, self.unit)
                .with_context(|| format!("reading {}", path.display()))?;
            let batch = conform(&batch, &self.schema)?;
            self.check_times(path, &batch, pacer);
            if !self.send(batch, pacer, out).await {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Sends the rows of a CSV or NDJSON file, `batch_rows` records at a time, setting bad
    /// records aside; false when the engine stopped.
    async fn text(
        &self,
        path: &Path,
        bad_rows: &mut BadRows,
        pacer: &mut Pacer,
        out: &SourceOutput,
    ) -> anyhow::Result<bool> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut records = Records::new(BufReader::new(file), self.format);
        let read = |e| anyhow::anyhow!("reading {}: {e}", path.display());
        if self.format == InputFormat::Csv {
            records.next_record().map_err(read)?; // the header
        }
        loop {
            let mut chunk = Vec::with_capacity(self.batch_rows.min(1 << 16));
            while chunk.len() < self.batch_rows {
                match records.next_record().map_err(read)? {
                    Some(r) => chunk.push(r),
                    None => break,
                }
            }
            if chunk.is_empty() {
                return Ok(true);
            }
            let (good, bad) = decode_isolating(&self.schema, self.format, self.unit, chunk);
            for b in bad {
                bad_rows.record(path, b)?;
            }
            for batch in good {
                let batch = conform(&batch, &self.schema)?;
                self.check_times(path, &batch, pacer);
                if !self.send(batch, pacer, out).await {
                    return Ok(false);
                }
            }
        }
    }

    async fn send(&self, batch: RecordBatch, pacer: &mut Pacer, out: &SourceOutput) -> bool {
        pacer.wait(&batch).await;
        out.send(batch).await.is_ok()
    }
}

#[async_trait]
impl Source for FileSource {
    fn is_bounded(&self) -> bool {
        true
    }

    async fn run(self: Box<Self>, out: SourceOutput) -> anyhow::Result<()> {
        let mut pacer = Pacer {
            speed: match self.pace {
                Pace::Original(speed) => Some(speed),
                Pace::Max => None,
            },
            event_time: self.event_time,
            origin: None,
            warned: None,
        };
        let mut bad_rows = BadRows {
            source: self.name.clone(),
            telemetry: Arc::clone(out.telemetry()),
            dead: self
                .dead_letter
                .as_ref()
                .map(DeadLetterFile::open)
                .transpose()?,
            max: self.max_bad_rows,
            seen: 0,
        };
        for path in &self.files {
            let went_on = match self.format {
                InputFormat::Parquet => self.parquet(path, &mut pacer, &out).await?,
                _ => self.text(path, &mut bad_rows, &mut pacer, &out).await?,
            };
            if let Some(d) = &mut bad_rows.dead {
                d.flush();
            }
            if !went_on {
                break;
            }
        }
        Ok(())
    }
}
