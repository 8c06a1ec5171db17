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
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
    RowSelector,
};
use weir_engine::connector::{Progress, Source, SourceOutput, SourceSpec, SourceStart};
use weir_engine::observe::telemetry::SourceTelemetry;

use super::pushdown;
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
    /// Where a checkpoint left off: the file (its index in `files`) and the records of it
    /// already read.
    resume: Option<(usize, u64)>,
    /// What every pipeline reading the source filters first (Parquet files: applied while
    /// reading).
    filter: Option<Arc<dyn datafusion::physical_expr::PhysicalExpr>>,
}

/// Chunks of CSV or NDJSON records being decoded at a time (on blocking threads).
const DECODING: usize = 2;

/// The source's position: the file being read and the records of it read so far (rows of
/// a Parquet file; data records of a CSV or NDJSON file, bad ones included).
fn position(path: &Path, records: u64) -> Progress {
    Progress {
        offset: Some(serde_json::json!({ "file": path.display().to_string(), "records": records })),
        delivered: Vec::new(),
    }
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
            resume: None,
            filter: None,
        }
    }
}

/// The columns of a Parquet file (its Arrow schema `file`) that the source declares (by name,
/// ignoring case), and, when some text or binary columns are declared as views, the file's
/// schema with those decoded straight to views (no cast afterwards).
fn declared_columns(file: &SchemaRef, declared: &SchemaRef) -> (Vec<usize>, Option<SchemaRef>) {
    use arrow::datatypes::{DataType, Field, Schema};
    let mut columns = Vec::new();
    let mut views = false;
    let fields: Vec<Field> = file
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let want = declared
                .fields()
                .iter()
                .find(|d| d.name().eq_ignore_ascii_case(f.name()));
            if want.is_some() {
                columns.push(i);
            }
            let ty = match (f.data_type(), want.map(|d| d.data_type())) {
                (DataType::Utf8 | DataType::LargeUtf8, Some(DataType::Utf8View)) => {
                    DataType::Utf8View
                }
                (DataType::Binary | DataType::LargeBinary, Some(DataType::BinaryView)) => {
                    DataType::BinaryView
                }
                (t, _) => t.clone(),
            };
            views |= &ty != f.data_type();
            f.as_ref().clone().with_data_type(ty)
        })
        .collect();
    let decoded =
        views.then(|| Arc::new(Schema::new_with_metadata(fields, file.metadata().clone())));
    (columns, decoded)
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

    /// Sends the rows of a Parquet file after its first `skip`; false when the engine
    /// stopped.
    async fn parquet(
        &self,
        path: &Path,
        skip: u64,
        pacer: &mut Pacer,
        out: &SourceOutput,
    ) -> anyhow::Result<bool> {
        let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        crate::parquet_footer::check_file(&mut file)
            .with_context(|| format!("reading Parquet {}", path.display()))?;
        let reading = || format!("reading Parquet {}", path.display());
        let meta =
            ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).with_context(reading)?;
        let (columns, decoded) = declared_columns(meta.schema(), &self.schema);
        let meta = if decoded.is_some() || self.filter.is_some() {
            let mut options = ArrowReaderOptions::new();
            if let Some(schema) = decoded {
                options = options.with_schema(schema);
            }
            if self.filter.is_some() {
                options = options.with_virtual_columns(vec![pushdown::row_number_field()])?;
            }
            ArrowReaderMetadata::try_new(Arc::clone(meta.metadata()), options)
                .with_context(reading)?
        } else {
            meta
        };
        // row groups no row of which can pass, by their statistics, are not read; of the
        // others, the reader decodes only the rows that pass
        let kept = match &self.filter {
            Some(f) => pushdown::row_groups(f, &self.schema, &meta),
            None => Vec::new(),
        };
        let filter = self
            .filter
            .as_ref()
            .and_then(|f| pushdown::row_filter(f, &self.schema, &meta, meta.parquet_schema()));
        let mask = ProjectionMask::roots(meta.parquet_schema(), columns);
        let group_rows: Vec<usize> = meta
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows().max(0) as usize)
            .collect();
        let mut builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file, meta)
            .with_projection(mask)
            .with_batch_size(self.batch_rows);
        let filtered = filter.is_some();
        builder = match filter {
            Some(filter) => {
                // the rows after `skip` of the row groups that may hold rows that pass
                let (mut groups, mut selection, mut first) = (Vec::new(), Vec::new(), 0);
                for (g, rows) in group_rows.iter().enumerate() {
                    let end = first + rows;
                    if kept.get(g).copied().unwrap_or(true) && end > skip as usize {
                        groups.push(g);
                        let skipped = (skip as usize).saturating_sub(first).min(*rows);
                        if skipped > 0 {
                            selection.push(RowSelector::skip(skipped));
                        }
                        selection.push(RowSelector::select(rows - skipped));
                    }
                    first = end;
                }
                builder
                    .with_row_groups(groups)
                    .with_row_selection(RowSelection::from(selection))
                    .with_row_filter(filter)
            }
            None => builder.with_offset(skip as usize),
        };
        let batches = builder.build()?;
        let mut records = skip;
        for batch in batches {
            let batch = batch.with_context(|| format!("reading {}", path.display()))?;
            records = match pushdown::next_row(&batch) {
                // rows the filter left out were read too
                Some(next) if filtered => next,
                _ => records + batch.num_rows() as u64,
            };
            let batch = scale_epochs(batch, &self.schema, self.unit)
                .with_context(|| format!("reading {}", path.display()))?;
            let batch = conform(&batch, &self.schema)?;
            self.check_times(path, &batch, pacer);
            if !self.send(batch, position(path, records), pacer, out).await {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Sends the rows of a CSV or NDJSON file after its first `skip` records, `batch_rows`
    /// records at a time, setting bad records aside; false when the engine stopped.
    async fn text(
        &self,
        path: &Path,
        skip: u64,
        bad_rows: &mut BadRows,
        pacer: &mut Pacer,
        out: &SourceOutput,
    ) -> anyhow::Result<bool> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut records = Records::new(BufReader::with_capacity(1 << 20, file), self.format);
        let read = |e| anyhow::anyhow!("reading {}: {e}", path.display());
        if self.format == InputFormat::Csv {
            records.skip_record().map_err(read)?; // the header
        }
        let mut read_so_far = 0;
        while read_so_far < skip && records.skip_record().map_err(read)? {
            read_so_far += 1;
        }
        // chunks are decoded on blocking threads, up to DECODING at a time, while the next
        // chunks are read; their rows go out in file order
        let mut decoding = std::collections::VecDeque::new();
        let mut more = true;
        loop {
            while more && decoding.len() < DECODING {
                let chunk = records.next_chunk(self.batch_rows).map_err(read)?;
                if chunk.is_empty() {
                    more = false;
                    break;
                }
                read_so_far += chunk.len() as u64;
                let (schema, format, unit) = (Arc::clone(&self.schema), self.format, self.unit);
                let decoded = tokio::task::spawn_blocking(move || {
                    let (good, bad) = decode_isolating(&schema, format, unit, chunk);
                    // one batch per chunk: its position is the end of the chunk
                    let good = good
                        .iter()
                        .map(|b| conform(b, &schema))
                        .collect::<Result<Vec<_>, _>>()
                        .and_then(|mut g| match g.len() {
                            0 => Ok(None),
                            1 => Ok(g.pop()),
                            _ => arrow::compute::concat_batches(&schema, &g).map(Some),
                        });
                    (good, bad)
                });
                decoding.push_back((decoded, read_so_far));
            }
            let Some((decoded, end)) = decoding.pop_front() else {
                return Ok(true);
            };
            let (good, bad) = decoded.await?;
            for b in bad {
                bad_rows.record(path, b)?;
            }
            let Some(batch) = good? else {
                continue;
            };
            self.check_times(path, &batch, pacer);
            if !self.send(batch, position(path, end), pacer, out).await {
                return Ok(false);
            }
        }
    }

    async fn send(
        &self,
        batch: RecordBatch,
        progress: Progress,
        pacer: &mut Pacer,
        out: &SourceOutput,
    ) -> bool {
        pacer.wait(&batch).await;
        out.send_at(batch, progress).await.is_ok()
    }
}

#[async_trait]
impl Source for FileSource {
    fn is_bounded(&self) -> bool {
        true
    }

    fn resumes(&self) -> bool {
        true
    }

    fn prepare(&mut self, start: SourceStart) -> anyhow::Result<()> {
        if self.format == InputFormat::Parquet {
            self.filter = start.filter;
            if let Some(f) = &self.filter {
                tracing::info!(source = %self.name, filter = %f,
                    "every pipeline reading the source filters it first: rows no pipeline reads are left out while reading");
            }
        }
        let Some(offset) = start.resume.and_then(|r| r.offset) else {
            self.resume = None;
            return Ok(());
        };
        let (Some(file), Some(records)) = (
            offset.get("file").and_then(serde_json::Value::as_str),
            offset.get("records").and_then(serde_json::Value::as_u64),
        ) else {
            anyhow::bail!("file source position {offset} does not read");
        };
        let Some(index) = self
            .files
            .iter()
            .position(|f| f.display().to_string() == file)
        else {
            anyhow::bail!("the checkpoint's file {file} is no longer among the source's files");
        };
        tracing::info!(source = %self.name, file, records, "resuming after the checkpoint's position");
        self.resume = Some((index, records));
        Ok(())
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
        let (first, skip) = self.resume.unwrap_or((0, 0));
        for (i, path) in self.files.iter().enumerate().skip(first) {
            let skip = if i == first { skip } else { 0 };
            let went_on = match self.format {
                InputFormat::Parquet => self.parquet(path, skip, &mut pacer, &out).await?,
                _ => {
                    self.text(path, skip, &mut bad_rows, &mut pacer, &out)
                        .await?
                }
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
