//! The file sink: Parquet or NDJSON files in a local directory, rolled by rows or time. A
//! file is written under a hidden temporary name and renamed when complete, so a reader
//! never sees a partial file.
//!
//! With checkpoints the rename waits for the checkpoint that covers the file's rows: at the
//! checkpoint's cut the files are finished, fsynced and renamed to a pending name
//! (`.NAME.ckpt-N`); once the checkpoint is complete they get their final names. After a
//! crash, files pending for the restored checkpoint are renamed, later ones deleted, and so
//! are finished files numbered after the restored checkpoint's: their rows come again.

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
use tracing::info;

use weir_engine::connector::{Sink, SinkStart};

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

/// A finished file waiting for a checkpoint: where it is now and its final name.
struct Held {
    at: PathBuf,
    path: PathBuf,
    /// The checkpoint it was pre-committed for (None: not yet).
    checkpoint: Option<u64>,
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
    /// With checkpoints: finished files not yet committed.
    held: Option<Vec<Held>>,
}

/// The sequence number of a file named `prefix-NNNNNN.ext`, if it is one.
fn seq_of(name: &str, prefix: &str) -> Option<u64> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('-')?;
    rest.split('.').next()?.parse::<u64>().ok()
}

/// The next free sequence number for files named `prefix-NNNNNN.ext` in `dir`.
fn next_seq(dir: &Path, prefix: &str) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| seq_of(&e.file_name().to_string_lossy(), prefix))
        .max()
        .map_or(0, |m| m + 1)
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The final name and checkpoint of a pending file `.NAME.ckpt-N`.
fn pending_of(name: &str) -> Option<(&str, u64)> {
    let (file, n) = name.strip_prefix('.')?.rsplit_once(".ckpt-")?;
    Some((file, n.parse().ok()?))
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
            held: None,
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

    /// Finishes the open file (fsynced): renamed to its final name, or, with checkpoints,
    /// held until a checkpoint covers it.
    fn roll(&mut self) -> anyhow::Result<()> {
        let Some(f) = self.open.take() else {
            return Ok(());
        };
        let file = match f.writer {
            Writer::Parquet(w) => w.into_inner()?,
            Writer::Ndjson(mut w) => {
                w.finish()?;
                w.into_inner().into_inner().map_err(|e| e.into_error())?
            }
        };
        file.sync_all()?;
        match &mut self.held {
            Some(held) => held.push(Held {
                at: f.tmp,
                path: f.path,
                checkpoint: None,
            }),
            None => std::fs::rename(&f.tmp, &f.path)
                .with_context(|| format!("renaming {} to {}", f.tmp.display(), f.path.display()))?,
        }
        Ok(())
    }

    /// With checkpoints, at start: commits what was pending for the restored checkpoint and
    /// removes what was written after it.
    fn recover_files(&mut self, restored: Option<(u64, serde_json::Value)>) -> anyhow::Result<()> {
        let (checkpoint, next) = match &restored {
            Some((n, state)) => (
                Some(*n),
                state.get("next_seq").and_then(serde_json::Value::as_u64),
            ),
            None => (None, None),
        };
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            self.seq = next;
            return Ok(());
        };
        let (mut committed, mut removed) = (0, 0);
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let path = entry.path();
            if let Some((file, n)) = pending_of(&name) {
                if seq_of(file, &self.prefix).is_none() {
                    continue;
                }
                if checkpoint.is_some_and(|c| n <= c) {
                    std::fs::rename(&path, self.dir.join(file))
                        .with_context(|| format!("committing {}", path.display()))?;
                    committed += 1;
                } else {
                    std::fs::remove_file(&path)?;
                    removed += 1;
                }
            } else if let Some(file) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) {
                if seq_of(file, &self.prefix).is_some() {
                    std::fs::remove_file(&path)?;
                    removed += 1;
                }
            } else if let (Some(seq), Some(next)) = (seq_of(&name, &self.prefix), next)
                && seq >= next
            {
                // finished after the restored checkpoint: its rows come again
                std::fs::remove_file(&path)?;
                removed += 1;
            }
        }
        fsync_dir(&self.dir)?;
        if committed + removed > 0 {
            info!(sink = %self.prefix, dir = %self.dir.display(), committed, removed,
                "file sink recovered: files of the restored checkpoint committed, files written after it removed (their rows come again)");
        }
        self.seq = next;
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

    async fn start(&mut self, start: SinkStart) -> anyhow::Result<()> {
        let Some(checkpoints) = start.checkpoints else {
            return Ok(());
        };
        self.held = Some(Vec::new());
        self.recover_files(checkpoints.restored)
    }

    async fn pre_commit(&mut self, number: u64) -> anyhow::Result<serde_json::Value> {
        self.roll()?;
        let mut moved = false;
        for h in self.held.iter_mut().flatten() {
            if h.checkpoint.is_some() {
                continue;
            }
            let name = h.path.file_name().unwrap_or_default().to_string_lossy();
            let pending = self.dir.join(format!(".{name}.ckpt-{number}"));
            std::fs::rename(&h.at, &pending)
                .with_context(|| format!("renaming {} to {}", h.at.display(), pending.display()))?;
            h.at = pending;
            h.checkpoint = Some(number);
            moved = true;
        }
        if moved {
            fsync_dir(&self.dir)?;
        }
        let next = self
            .seq
            .unwrap_or_else(|| next_seq(&self.dir, &self.prefix));
        self.seq = Some(next);
        Ok(serde_json::json!({ "next_seq": next }))
    }

    async fn commit(&mut self, number: u64, _oldest_kept: u64) -> anyhow::Result<()> {
        let Some(held) = &mut self.held else {
            return Ok(());
        };
        let mut renamed = false;
        let mut result = Ok(());
        held.retain(|h| {
            if h.checkpoint.is_none_or(|c| c > number) || result.is_err() {
                return true;
            }
            result = std::fs::rename(&h.at, &h.path)
                .with_context(|| format!("renaming {} to {}", h.at.display(), h.path.display()));
            renamed |= result.is_ok();
            result.is_err()
        });
        if renamed {
            fsync_dir(&self.dir)?;
        }
        result
    }

    fn delivery(&self) -> &'static str {
        "exactly once"
    }

    async fn close(&mut self, _deadline: tokio::time::Instant) -> anyhow::Result<()> {
        if self.held.is_some() {
            // with checkpoints, rows after the last checkpoint stay uncommitted: a restart
            // produces them again and removes these files
            self.open = None;
            return Ok(());
        }
        self.roll()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_and_numbered_names_read_back() {
        assert_eq!(
            pending_of(".out-000004.parquet.ckpt-17"),
            Some(("out-000004.parquet", 17))
        );
        assert_eq!(pending_of("out-000004.parquet"), None);
        assert_eq!(seq_of("out-000004.parquet", "out"), Some(4));
        assert_eq!(seq_of("out-x-000004.parquet", "out"), None);
    }
}
