//! `connector = 'object_store'`: Parquet files in S3 (or any S3-compatible store), Google
//! Cloud Storage, Azure Blob Storage or a local directory, under deterministic keys, with a
//! spill-to-disk buffer that holds files while the store is unreachable.

pub mod keys;
pub mod spill;
pub mod store;
pub mod uploader;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::error;

use crate::backoff::Reconnect;
use crate::connector::{Sink, SinkFactory, SinkSpec, SinkStats};
use crate::diagnostic::PipelineError;
use crate::parse::Options;
use keys::{TimeRange, object_key};
use spill::{KEY_METADATA, SpillDir};
use uploader::{Command, Finished, Policy, Uploader};

/// Files that may wait between the sink and its uploader.
const QUEUE: usize = 4;

/// Builds `object_store` sinks.
pub struct ObjectStoreSinkFactory;

/// When to close a file and start the next.
#[derive(Debug, Clone, Copy)]
struct Roll {
    rows: u64,
    bytes: u64,
    interval: Duration,
}

impl SinkFactory for ObjectStoreSinkFactory {
    fn name(&self) -> &'static str {
        "object_store"
    }

    fn description(&self) -> &'static str {
        "Parquet files in S3, GCS, Azure or a directory, spilled to local disk while the store is unreachable"
    }

    fn build(&self, spec: &SinkSpec, o: &Options) -> Result<Box<dyn Sink>, PipelineError> {
        let target = store::target(o)?;
        let level = o.u64("zstd_level")?.unwrap_or(3).clamp(1, 22) as i32;
        let compression = match o
            .choice("compression", &["zstd", "snappy", "none"])?
            .as_deref()
        {
            Some("snappy") => Compression::SNAPPY,
            Some("none") => Compression::UNCOMPRESSED,
            _ => Compression::ZSTD(ZstdLevel::try_new(level).expect("clamped level")),
        };
        let row_group_rows = o.u64("row_group_rows")?.unwrap_or(64 * 1024).max(1) as usize;
        let roll = Roll {
            rows: o.u64("roll_rows")?.unwrap_or(1_000_000).max(1),
            bytes: o.bytes("roll_bytes")?.unwrap_or(64 * 1024 * 1024).max(1024),
            interval: o
                .duration("roll_interval")?
                .unwrap_or(Duration::from_secs(60)),
        };
        let spill_dir = PathBuf::from(o.get("spill_dir").unwrap_or("spill")).join(&spec.name);
        let spill_max_bytes = o.bytes("spill_max_bytes")?.unwrap_or(1024 * 1024 * 1024);
        let policy = match o
            .choice("spill_policy", &["drop_oldest", "block"])?
            .as_deref()
        {
            Some("block") => Policy::Block,
            _ => Policy::DropOldest,
        };
        let props = WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(row_group_rows))
            .build();
        Ok(Box::new(ObjectStoreSink {
            name: spec.name.clone(),
            target,
            props,
            roll,
            spill_dir,
            spill_max_bytes,
            policy,
            seq: 0,
            open: None,
            uploader: None,
            deadline: watch::channel(None).0,
            stats: Arc::clone(&spec.stats),
        }))
    }
}

/// The file being written.
struct OpenFile {
    writer: ArrowWriter<Vec<u8>>,
    range: TimeRange,
    rows: u64,
    opened: Instant,
    opened_ns: i64,
}

/// A configured object-store sink.
pub struct ObjectStoreSink {
    name: String,
    target: store::Target,
    props: WriterProperties,
    roll: Roll,
    spill_dir: PathBuf,
    spill_max_bytes: u64,
    policy: Policy,
    seq: u64,
    open: Option<OpenFile>,
    uploader: Option<(mpsc::Sender<Command>, JoinHandle<()>)>,
    /// The close deadline, for the uploader.
    deadline: watch::Sender<Option<tokio::time::Instant>>,
    /// Uploads and spill, for the live system tables.
    stats: Arc<SinkStats>,
}

impl ObjectStoreSink {
    /// Starts the uploader (on the first write: spilled files of earlier runs are replayed
    /// from then on).
    fn uploader(&mut self) -> anyhow::Result<mpsc::Sender<Command>> {
        if self.uploader.is_none() {
            let (spill, quarantined) = SpillDir::open(&self.spill_dir)?;
            for q in quarantined {
                error!(sink = %self.name, file = %q.display(), "torn spill file (a write cut short) moved to quarantine");
            }
            let (tx, rx) = mpsc::channel(QUEUE);
            let u = Uploader {
                name: self.name.clone(),
                store: Arc::clone(&self.target.store),
                display: self.target.display.clone(),
                prefix: self.target.prefix.clone(),
                spill,
                max_bytes: self.spill_max_bytes,
                policy: self.policy,
                down_since: None,
                reconnect: Reconnect::default(),
                closing: None,
                deadline: self.deadline.subscribe(),
                stats: Arc::clone(&self.stats),
            };
            self.uploader = Some((tx, tokio::spawn(u.run(rx))));
        }
        Ok(self.uploader.as_ref().expect("started above").0.clone())
    }

    fn open(&mut self, schema: &SchemaRef) -> anyhow::Result<&mut OpenFile> {
        let writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(self.props.clone()))?;
        let opened_ns = crate::clock::now_nanos();
        Ok(self.open.insert(OpenFile {
            writer,
            range: TimeRange::default(),
            rows: 0,
            opened: Instant::now(),
            opened_ns,
        }))
    }

    /// Finishes the open file and hands it to the uploader.
    async fn roll(&mut self) -> anyhow::Result<()> {
        let Some(mut f) = self.open.take() else {
            return Ok(());
        };
        let key = object_key(
            &self.target.prefix,
            &self.name,
            f.range,
            self.seq,
            f.opened_ns,
        );
        self.seq += 1;
        f.writer
            .append_key_value_metadata(KeyValue::new(KEY_METADATA.to_string(), key.clone()));
        let data = Bytes::from(f.writer.into_inner()?);
        let tx = self.uploader()?;
        tx.send(Command::File(Finished {
            key,
            data,
            rows: f.rows,
        }))
        .await
        .context("the uploader stopped")?;
        Ok(())
    }

    fn due(&self, f: &OpenFile) -> bool {
        f.rows >= self.roll.rows
            || (f.writer.bytes_written() + f.writer.in_progress_size()) as u64 >= self.roll.bytes
            || f.opened.elapsed() >= self.roll.interval
    }
}

#[async_trait]
impl Sink for ObjectStoreSink {
    async fn write(&mut self, batch: RecordBatch) -> anyhow::Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        // start replaying what earlier runs spilled as soon as there is work
        self.uploader()?;
        let schema = batch.schema();
        let f = match self.open.as_mut() {
            Some(f) => f,
            None => self.open(&schema)?,
        };
        f.writer.write(&batch)?;
        f.range.add(&batch);
        f.rows += batch.num_rows() as u64;
        if self.open.as_ref().is_some_and(|f| self.due(f)) {
            self.roll().await?;
        }
        Ok(())
    }

    async fn tick(&mut self) -> anyhow::Result<()> {
        if self.uploader.is_none() && self.spill_dir.exists() {
            self.uploader()?;
        }
        if self.open.as_ref().is_some_and(|f| self.due(f)) {
            self.roll().await?;
        }
        Ok(())
    }

    async fn close(&mut self, deadline: tokio::time::Instant) -> anyhow::Result<()> {
        self.deadline.send_replace(Some(deadline));
        self.roll().await?;
        if self.uploader.is_none() && self.spill_dir.exists() {
            // a run without rows still uploads what earlier runs spilled
            self.uploader()?;
        }
        if let Some((tx, task)) = self.uploader.take() {
            let (done, wait) = oneshot::channel();
            if tx.send(Command::Close(done)).await.is_ok() {
                let _ = wait.await;
            }
            drop(tx);
            let _ = task.await;
        }
        Ok(())
    }
}
