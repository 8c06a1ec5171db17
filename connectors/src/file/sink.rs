//! The file sink: Parquet or NDJSON files in a local directory, rolled by rows or time. A
//! file is written under a hidden temporary name and renamed when complete, so a reader
//! never sees a partial file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use weir_engine::connector::Sink;

use super::settings::{OutputFormat, SinkSettings};

enum Writer {
    Parquet(ArrowWriter<File>),
    Ndjson(arrow::json::LineDelimitedWriter<std::io::BufWriter<File>>),
}

struct OpenFile {
    writer: Writer,
    tmp: PathBuf,
    path: PathBuf,
    rows: u64,
    opened: Instant,
}

/// A running file sink.
pub struct FileSink {
    prefix: String,
    dir: PathBuf,
    format: OutputFormat,
    roll_rows: u64,
    roll_interval: Duration,
    seq: Option<u64>,
    open: Option<OpenFile>,
}

/// The next free sequence number for files named `prefix-NNNNNN.ext` in `dir`.
fn next_seq(dir: &Path, prefix: &str) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let rest = name.strip_prefix(prefix)?.strip_prefix('-')?;
            rest.split('.').next()?.parse::<u64>().ok()
        })
        .max()
        .map_or(0, |m| m + 1)
}

impl FileSink {
    /// A sink writing the files of sink `name` as `settings` say.
    pub fn new(name: &str, settings: SinkSettings) -> Self {
        Self {
            prefix: name.to_string(),
            dir: settings.dir,
            format: settings.format,
            roll_rows: settings.roll_rows,
            roll_interval: settings.roll_interval,
            seq: None,
            open: None,
        }
    }

    fn open(&mut self, schema: &SchemaRef) -> anyhow::Result<&mut OpenFile> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating directory {}", self.dir.display()))?;
        let seq = *self
            .seq
            .get_or_insert_with(|| next_seq(&self.dir, &self.prefix));
        self.seq = Some(seq + 1);
        let name = format!("{}-{seq:06}.{}", self.prefix, self.format.extension());
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let writer = match self.format {
            OutputFormat::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .build();
                Writer::Parquet(ArrowWriter::try_new(file, schema.clone(), Some(props))?)
            }
            OutputFormat::Ndjson => {
                Writer::Ndjson(weir_engine::json::writer(std::io::BufWriter::new(file)))
            }
        };
        Ok(self.open.insert(OpenFile {
            writer,
            tmp,
            path,
            rows: 0,
            opened: Instant::now(),
        }))
    }

    fn roll(&mut self) -> anyhow::Result<()> {
        let Some(f) = self.open.take() else {
            return Ok(());
        };
        match f.writer {
            Writer::Parquet(w) => {
                w.close()?;
            }
            Writer::Ndjson(mut w) => {
                w.finish()?;
                let inner = w.into_inner();
                let file = inner.into_inner().map_err(|e| e.into_error())?;
                file.sync_all()?;
            }
        }
        std::fs::rename(&f.tmp, &f.path)
            .with_context(|| format!("renaming {} to {}", f.tmp.display(), f.path.display()))?;
        Ok(())
    }
}

#[async_trait]
impl Sink for FileSink {
    async fn write(&mut self, batch: RecordBatch) -> anyhow::Result<()> {
        if let Some(f) = &self.open
            && (f.opened.elapsed() >= self.roll_interval || f.rows >= self.roll_rows)
        {
            self.roll()?;
        }
        let schema = batch.schema();
        let file = match self.open.as_mut() {
            Some(f) => f,
            None => self.open(&schema)?,
        };
        match &mut file.writer {
            Writer::Parquet(w) => w.write(&batch)?,
            Writer::Ndjson(w) => w.write(&batch)?,
        }
        file.rows += batch.num_rows() as u64;
        if file.rows >= self.roll_rows {
            self.roll()?;
        }
        Ok(())
    }

    async fn tick(&mut self) -> anyhow::Result<()> {
        if self
            .open
            .as_ref()
            .is_some_and(|f| f.opened.elapsed() >= self.roll_interval)
        {
            self.roll()?;
        }
        Ok(())
    }

    async fn close(&mut self, _deadline: tokio::time::Instant) -> anyhow::Result<()> {
        self.roll()
    }
}
