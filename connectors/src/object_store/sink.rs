//! The object-store sink: Parquet files rolled by rows, bytes or age, each handed to the
//! uploader (which spills it when the store cannot take it).
//!
//! With checkpoints, finished files wait for the checkpoint that covers their rows: they are
//! written durably to the [`outbox`](super::outbox) at its cut and handed to the uploader
//! once it is complete.

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
use weir_engine::connector::{Sink, SinkStart};
use weir_engine::observe::telemetry::SinkTelemetry;

use super::keys::{KeyLayout, KeyParts, TimeRange};
use super::outbox;
use super::output;
use super::settings::{Roll, Settings};
use super::spill::{KEY_METADATA, SpillDir};
use super::store;
use super::uploader::{
    Command, Committed, Destination, Finished, Outbox, Policy, Tombstone, Uploader,
};

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

/// A finished file waiting for a checkpoint.
struct Held {
    file: Finished,
    seq: u64,
    /// Its pending file and checkpoint, once pre-committed.
    pending: Option<(std::path::PathBuf, u64)>,
}

/// What the sink keeps with checkpoints.
struct Checkpointed {
    outbox: Outbox,
    held: Vec<Held>,
    /// Objects to delete before the uploader uploads anything (given to it when it starts).
    deletes: Vec<Tombstone>,
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
    /// With checkpoints.
    checkpointed: Option<Checkpointed>,
    /// How keys are made.
    layout: KeyLayout,
    /// The writer's node id.
    node: String,
    /// The pipelines inserting into the sink (name, plan fingerprint).
    inputs: Vec<(String, String)>,
    /// The schema files are written with, and its version.
    file_schema: Option<(SchemaRef, String)>,
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
            checkpointed: None,
            layout: settings.layout,
            node: weir_engine::node::id().to_string(),
            inputs: Vec::new(),
            file_schema: None,
        }
    }

    /// The schema files are written with for rows of `schema`, and its version.
    fn file_schema(&mut self, schema: &SchemaRef) -> (SchemaRef, String) {
        self.file_schema
            .get_or_insert_with(|| {
                let f = output::file_schema(schema);
                let v = output::version(&f);
                (f, v)
            })
            .clone()
    }

    /// Without `{schema}` in the layout, the files of this node under this prefix must all
    /// have one schema: the schema last written is kept in the spill directory, and a
    /// different one is refused.
    fn check_schema(&self, schema: &SchemaRef, version: &str) -> anyhow::Result<()> {
        if self.layout.uses("schema") {
            return Ok(());
        }
        let marker = self.spill_dir.join(".schema");
        let now = serde_json::json!({
            "prefix": self.target.display,
            "version": version,
            "columns": output::columns(schema),
        });
        if let Ok(text) = std::fs::read_to_string(&marker)
            && let Ok(before) = serde_json::from_str::<serde_json::Value>(&text)
            && before["prefix"] == now["prefix"]
            && before["version"] != now["version"]
        {
            anyhow::bail!(
                "the columns of sink {} changed since this node last wrote to {}: before ({}), now ({}). One partition never mixes two schemas: add {{schema}} to key_layout (a schema=VERSION partition per set of columns), or write to another prefix",
                self.name,
                self.target.display,
                before["columns"].as_str().unwrap_or("?"),
                now["columns"].as_str().unwrap_or("?"),
            );
        }
        if std::fs::create_dir_all(&self.spill_dir).is_ok() {
            weir_engine::checkpoint::store::write_durably(&marker, now.to_string().as_bytes())
                .with_context(|| format!("cannot write {}", marker.display()))?;
        }
        Ok(())
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
                    outbox: self.checkpointed.as_ref().map(|c| c.outbox.clone()),
                    deletes: self
                        .checkpointed
                        .as_mut()
                        .map(|c| std::mem::take(&mut c.deletes))
                        .unwrap_or_default(),
                },
                self.deadline.subscribe(),
                Arc::clone(&self.telemetry),
            );
            self.uploader = Some((tx, tokio::spawn(u.run(rx))));
        }
        Ok(self.uploader.as_ref().expect("started above").0.clone())
    }

    fn open(&mut self, schema: &SchemaRef) -> anyhow::Result<&mut OpenFile> {
        let (schema, version) = self.file_schema(schema);
        let mut writer = ArrowWriter::try_new(Vec::new(), schema, Some(self.props.clone()))?;
        for kv in output::metadata(&self.node, &version, &self.inputs) {
            writer.append_key_value_metadata(kv);
        }
        let opened_ns = weir_engine::clock::now_nanos();
        Ok(self.open.insert(OpenFile {
            writer,
            range: TimeRange::default(),
            rows: 0,
            opened: Instant::now(),
            opened_ns,
        }))
    }

    /// Finishes the open file and hands it to the uploader (with checkpoints: holds it
    /// until a checkpoint covers it).
    async fn roll(&mut self) -> anyhow::Result<()> {
        let Some(mut f) = self.open.take() else {
            return Ok(());
        };
        let seq = self.seq;
        let version = self.file_schema.as_ref().map_or("", |(_, v)| v.as_str());
        let key = self.layout.key(
            &self.target.prefix,
            KeyParts {
                pipeline: &self.name,
                node: &self.node,
                schema: version,
                range: f.range,
                seq,
                opened_ns: f.opened_ns,
            },
        );
        self.seq += 1;
        f.writer
            .append_key_value_metadata(KeyValue::new(KEY_METADATA.to_string(), key.clone()));
        let data = Bytes::from(f.writer.into_inner()?);
        let file = Finished {
            key,
            data,
            rows: f.rows,
            committed: None,
        };
        if let Some(c) = &mut self.checkpointed {
            c.held.push(Held {
                file,
                seq,
                pending: None,
            });
            return Ok(());
        }
        self.upload(file).await
    }

    async fn upload(&mut self, file: Finished) -> anyhow::Result<()> {
        let tx = self.uploader()?;
        tx.send(Command::File(file))
            .await
            .context("the uploader stopped")
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
        let (file_schema, _) = self.file_schema(&batch.schema());
        let rows = output::to_file(&batch, &file_schema)?;
        let f = match self.open.as_mut() {
            Some(f) => f,
            None => self.open(&batch.schema())?,
        };
        f.writer.write(&rows)?;
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

    async fn start(&mut self, start: SinkStart) -> anyhow::Result<()> {
        self.inputs = start.inputs;
        if let Some(schema) = &start.schema {
            let (file_schema, version) = self.file_schema(schema);
            self.check_schema(&file_schema, &version)?;
        }
        let Some(checkpoints) = start.checkpoints else {
            return Ok(());
        };
        let outbox = Outbox {
            dir: self.spill_dir.join("pending"),
            lineage: checkpoints.lineage,
        };
        let found = outbox::recover(&self.name, &outbox, &self.spill_dir, checkpoints.restored)?;
        if let Some(seq) = found.next_seq {
            self.seq = seq;
        }
        self.checkpointed = Some(Checkpointed {
            outbox,
            held: Vec::new(),
            deletes: found.deletes,
        });
        let pending_deletes = self
            .checkpointed
            .as_ref()
            .is_some_and(|c| !c.deletes.is_empty());
        if pending_deletes || !found.recommit.is_empty() {
            self.uploader()?;
        }
        for file in found.recommit {
            self.upload(file).await?;
        }
        Ok(())
    }

    async fn pre_commit(&mut self, number: u64) -> anyhow::Result<serde_json::Value> {
        self.roll().await?;
        if let Some(c) = &mut self.checkpointed {
            for h in c.held.iter_mut().filter(|h| h.pending.is_none()) {
                let path = outbox::pend(&c.outbox.dir, number, h.seq, &h.file.data).with_context(
                    || {
                        format!(
                            "cannot write a pending file into {}",
                            c.outbox.dir.display()
                        )
                    },
                )?;
                h.pending = Some((path, number));
            }
        }
        Ok(serde_json::json!({ "next_seq": self.seq }))
    }

    async fn commit(&mut self, number: u64, oldest_kept: u64) -> anyhow::Result<()> {
        let Some(c) = &mut self.checkpointed else {
            return Ok(());
        };
        let (ready, waiting): (Vec<Held>, Vec<Held>) = std::mem::take(&mut c.held)
            .into_iter()
            .partition(|h| h.pending.as_ref().is_some_and(|(_, k)| *k <= number));
        c.held = waiting;
        for h in ready {
            let (pending, checkpoint) = h.pending.expect("partitioned on it");
            let mut file = h.file;
            file.committed = Some(Committed {
                pending,
                checkpoint,
            });
            self.upload(file).await?;
        }
        let tx = self.uploader()?;
        tx.send(Command::Forget(oldest_kept))
            .await
            .context("the uploader stopped")?;
        Ok(())
    }

    fn delivery(&self) -> &'static str {
        "exactly once"
    }

    async fn close(&mut self, deadline: tokio::time::Instant) -> anyhow::Result<()> {
        self.deadline.send_replace(Some(deadline));
        if let Some(c) = &mut self.checkpointed {
            // rows after the last checkpoint stay uncommitted: a restart produces them again
            c.held.clear();
            self.open = None;
        }
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
