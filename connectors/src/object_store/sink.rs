//! The object-store sink: Parquet files rolled by rows, bytes or age, each handed to the
//! uploader (which spills it when the store cannot take it).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::error;
use weir_engine::connector::Sink;
use weir_engine::observe::telemetry::SinkTelemetry;

use super::keys::{TimeRange, object_key};
use super::settings::{Roll, Settings};
use super::spill::{KEY_METADATA, SpillDir};
use super::store;
use super::uploader::{Command, Destination, Finished, Policy, Uploader};

/// Files that may wait between the sink and its uploader.
const QUEUE: usize = 4;

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
    /// Uploads, spill buffer, rows lost.
    telemetry: Arc<SinkTelemetry>,
}

impl ObjectStoreSink {
    /// A sink named `name`, counting into `telemetry`.
    pub fn new(name: &str, settings: Settings, telemetry: Arc<SinkTelemetry>) -> Self {
        Self {
            name: name.to_string(),
            target: settings.target,
            props: settings.props,
            roll: settings.roll,
            spill_dir: settings.spill_dir,
            spill_max_bytes: settings.spill_max_bytes,
            policy: settings.policy,
            seq: 0,
            open: None,
            uploader: None,
            deadline: watch::channel(None).0,
            telemetry,
        }
    }

    /// Starts the uploader (on the first write: spilled files of earlier runs are replayed
    /// from then on).
    fn uploader(&mut self) -> anyhow::Result<mpsc::Sender<Command>> {
        if self.uploader.is_none() {
            let (spill, quarantined) = match SpillDir::open(&self.spill_dir) {
                Ok(opened) => opened,
                Err(e) => {
                    let why = format!("{e:#}");
                    error!(sink = %self.name, dir = %self.spill_dir.display(), error = %why,
                        "spill directory unusable: uploading directly; a file the store does not take is lost (counted) until the directory can be created");
                    (SpillDir::unusable(&self.spill_dir, &why), Vec::new())
                }
            };
            for q in quarantined {
                self.telemetry.quarantined();
                error!(sink = %self.name, file = %q.display(), "torn spill file (a write cut short) moved to quarantine");
            }
            let (tx, rx) = mpsc::channel(QUEUE);
            let u = Uploader::new(
                &self.name,
                Destination {
                    store: Arc::clone(&self.target.store),
                    display: self.target.display.clone(),
                    prefix: self.target.prefix.clone(),
                    spill,
                    max_bytes: self.spill_max_bytes,
                    policy: self.policy,
                },
                self.deadline.subscribe(),
                Arc::clone(&self.telemetry),
            );
            self.uploader = Some((tx, tokio::spawn(u.run(rx))));
        }
        Ok(self.uploader.as_ref().expect("started above").0.clone())
    }

    fn open(&mut self, schema: &SchemaRef) -> anyhow::Result<&mut OpenFile> {
        let writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(self.props.clone()))?;
        let opened_ns = weir_engine::clock::now_nanos();
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
