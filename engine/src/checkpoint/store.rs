//! The state directory on disk:
//!
//! ```text
//! STATE_DIR/
//!   lock                      held (flock) by the running Weir: one process per directory
//!   lineage                   random id made when the directory was first used or reset
//!   checkpoints/
//!     0000000000000041/       a complete checkpoint: manifest.json, *.arrow, SUMS
//!     0000000000000042/
//!     .tmp-0000000000000043/  one being written (removed at start: a crash cut it short)
//!     torn/                   checkpoints that failed verification, moved aside
//! ```
//!
//! A checkpoint is written into a temporary directory, every file fsynced, `SUMS` (size and
//! xxHash64 of every file) written last, the directory fsynced and renamed, and the parent
//! fsynced. The two newest complete checkpoints are kept, so that a checkpoint damaged after
//! it was complete (a bad disk) leaves the previous one to fall back to.

use std::collections::HashMap;
use std::fs::File;
use std::hash::Hasher;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;
use arrow::record_batch::RecordBatch;
use tracing::{error, warn};

use super::manifest::{FORMAT, Manifest, Restored, Taken};

const CHECKPOINTS: &str = "checkpoints";
const TORN: &str = "torn";
const SUMS: &str = "SUMS";
const MANIFEST: &str = "manifest.json";
const LINEAGE: &str = "lineage";
const LOCK: &str = "lock";
/// Checkpoints moved aside that are kept for inspection.
const KEEP_TORN: usize = 4;

/// An opened, locked state directory.
#[derive(Debug)]
pub struct CheckpointStore {
    dir: PathBuf,
    lineage: String,
    /// Held for the life of the store: the exclusive lock on `lock`.
    _lock: File,
}

/// Writes through, counting bytes and hashing them.
struct Hashing<W: Write> {
    inner: W,
    hasher: twox_hash::XxHash64,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.write(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// A new random-enough id: time, process id and the standard library's random hash keys.
fn new_lineage() -> String {
    use std::hash::BuildHasher;
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(now_ms());
    h.write_u32(std::process::id());
    super::hex(h.finish())
}

/// Writes `data` to `path` durably: temporary name, fsync, rename, fsync of the directory.
pub fn write_durably(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".tmp-{}",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    fsync_dir(dir)
}

impl CheckpointStore {
    /// Opens (creating) the state directory `dir` and locks it; with `reset`, what it holds
    /// is discarded first (a new lineage begins). Leftovers of a write a crash cut short
    /// are removed.
    pub fn open(dir: &Path, reset: bool) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK))
            .with_context(|| format!("cannot open {}", dir.join(LOCK).display()))?;
        if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            bail!(
                "the state directory {} is in use by another Weir process (each process needs a state directory of its own)",
                dir.display()
            );
        }
        let checkpoints = dir.join(CHECKPOINTS);
        if reset {
            for gone in [checkpoints.clone(), dir.join(LINEAGE)] {
                let removed = if gone.is_dir() {
                    std::fs::remove_dir_all(&gone)
                } else {
                    std::fs::remove_file(&gone)
                };
                match removed {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(e).with_context(|| {
                            format!("--state-reset: cannot remove {}", gone.display())
                        });
                    }
                    _ => {}
                }
            }
        }
        std::fs::create_dir_all(&checkpoints)
            .with_context(|| format!("cannot create {}", checkpoints.display()))?;
        for entry in std::fs::read_dir(&checkpoints)?.flatten() {
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let lineage_path = dir.join(LINEAGE);
        let lineage = match std::fs::read_to_string(&lineage_path) {
            Ok(l) if !l.trim().is_empty() => l.trim().to_string(),
            _ => {
                let l = new_lineage();
                write_durably(&lineage_path, l.as_bytes())
                    .with_context(|| format!("cannot write {}", lineage_path.display()))?;
                l
            }
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            lineage,
            _lock: lock,
        })
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory's lineage id.
    pub fn lineage(&self) -> &str {
        &self.lineage
    }

    fn checkpoints(&self) -> PathBuf {
        self.dir.join(CHECKPOINTS)
    }

    /// Numbers of the complete checkpoints, oldest first.
    pub fn complete(&self) -> Vec<u64> {
        let mut found: Vec<u64> = std::fs::read_dir(self.checkpoints())
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
                    .collect()
            })
            .unwrap_or_default();
        found.sort_unstable();
        found
    }

    fn path_of(&self, number: u64) -> PathBuf {
        self.checkpoints().join(format!("{number:016}"))
    }

    /// Writes `taken` as checkpoint `taken.manifest.number`; returns its size in bytes.
    /// When this returns, the checkpoint is complete and durable.
    pub fn write(&self, taken: &Taken) -> anyhow::Result<u64> {
        let number = taken.manifest.number;
        let tmp = self.checkpoints().join(format!(".tmp-{number:016}"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut sums = String::new();
        let mut total = 0;
        let mut record = |name: &str, hash: u64, bytes: u64| {
            sums.push_str(&format!("{} {bytes} {name}\n", super::hex(hash)));
            total += bytes;
        };
        for (name, batch) in &taken.files {
            let (hash, bytes) = write_ipc(&tmp.join(name), batch)
                .with_context(|| format!("cannot write {}", tmp.join(name).display()))?;
            record(name, hash, bytes);
        }
        let manifest = serde_json::to_vec_pretty(&taken.manifest)?;
        let mut f = File::create(tmp.join(MANIFEST))?;
        f.write_all(&manifest)?;
        f.sync_all()?;
        record(
            MANIFEST,
            super::stable_hash(&manifest),
            manifest.len() as u64,
        );
        let mut f = File::create(tmp.join(SUMS))?;
        f.write_all(sums.as_bytes())?;
        f.sync_all()?;
        total += sums.len() as u64;
        fsync_dir(&tmp)?;
        let done = self.path_of(number);
        let _ = std::fs::remove_dir_all(&done);
        std::fs::rename(&tmp, &done)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), done.display()))?;
        fsync_dir(&self.checkpoints())?;
        Ok(total)
    }

    /// Removes complete checkpoints older than the `keep` newest.
    pub fn prune(&self, keep: usize) {
        let all = self.complete();
        let old = all.len().saturating_sub(keep);
        for n in &all[..old] {
            if let Err(e) = std::fs::remove_dir_all(self.path_of(*n)) {
                warn!(checkpoint = n, error = %e, "cannot remove an old checkpoint");
            }
        }
    }

    /// The newest complete checkpoint that verifies; each newer one that does not (torn,
    /// corrupt, or of another format) is moved to `checkpoints/torn/` and logged.
    pub fn newest(&self) -> Option<Restored> {
        for number in self.complete().into_iter().rev() {
            let path = self.path_of(number);
            match read(&path) {
                Ok(mut r) if r.manifest.number == number => {
                    let age_ns = (crate::clock::now_nanos() - r.manifest.taken_ns).max(0) as u64;
                    r.age = Duration::from_nanos(age_ns);
                    return Some(r);
                }
                Ok(_) => self.move_aside(number, &path, "its manifest names another number"),
                Err(e) => self.move_aside(number, &path, &format!("{e:#}")),
            }
        }
        None
    }

    fn move_aside(&self, number: u64, path: &Path, why: &str) {
        let torn = self.checkpoints().join(TORN);
        let to = torn.join(format!("{number:016}-{}", now_ms()));
        let moved = std::fs::create_dir_all(&torn).and_then(|()| std::fs::rename(path, &to));
        match moved {
            Ok(()) => error!(checkpoint = number, moved_to = %to.display(), error = %why,
                "checkpoint is torn or corrupt: moved aside; falling back to the one before"),
            Err(e) => {
                error!(checkpoint = number, error = %why, "checkpoint is torn or corrupt and cannot be moved aside ({e}): deleting it; falling back to the one before");
                let _ = std::fs::remove_dir_all(path);
            }
        }
        let mut kept: Vec<PathBuf> = std::fs::read_dir(&torn)
            .map(|e| e.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        kept.sort();
        let extra = kept.len().saturating_sub(KEEP_TORN);
        for old in &kept[..extra] {
            let _ = std::fs::remove_dir_all(old);
        }
    }
}

/// Writes `batch` as an Arrow IPC file at `path`, fsynced; returns its hash and size.
fn write_ipc(path: &Path, batch: &RecordBatch) -> anyhow::Result<(u64, u64)> {
    let file = File::create(path)?;
    let mut out = Hashing {
        inner: BufWriter::new(file),
        hasher: twox_hash::XxHash64::with_seed(0),
        bytes: 0,
    };
    {
        let mut w = FileWriter::try_new(&mut out, &batch.schema())?;
        w.write(batch)?;
        w.finish()?;
    }
    out.flush()?;
    let Hashing {
        inner,
        hasher,
        bytes,
    } = out;
    inner.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok((hasher.finish(), bytes))
}

/// Reads and verifies the checkpoint in `dir`.
fn read(dir: &Path) -> anyhow::Result<Restored> {
    let sums = std::fs::read_to_string(dir.join(SUMS)).context("no readable SUMS file")?;
    let mut files = HashMap::new();
    let mut manifest = None;
    let mut total = sums.len() as u64;
    for line in sums.lines() {
        let mut parts = line.splitn(3, ' ');
        let (Some(hash), Some(bytes), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            bail!("SUMS line '{line}' is not 'hash bytes name'");
        };
        let expected = u64::from_str_radix(hash, 16).context("a hash in SUMS does not read")?;
        let size: u64 = bytes.parse().context("a size in SUMS does not read")?;
        if name.contains('/') || name.starts_with('.') {
            bail!("SUMS names '{name}', which is not a file of the checkpoint");
        }
        let mut data = Vec::with_capacity(size as usize);
        File::open(dir.join(name))
            .and_then(|f| f.take(size + 1).read_to_end(&mut data))
            .with_context(|| format!("cannot read {name}"))?;
        if data.len() as u64 != size {
            bail!("{name} has {} bytes, SUMS says {size}", data.len());
        }
        if super::stable_hash(&data) != expected {
            bail!("{name} does not match its checksum");
        }
        total += size;
        if name == MANIFEST {
            manifest = Some(serde_json::from_slice::<Manifest>(&data).context("manifest.json")?);
        } else {
            let reader = FileReader::try_new(std::io::Cursor::new(data), None)
                .with_context(|| format!("{name} is not an Arrow IPC file"))?;
            let schema = reader.schema();
            let batches = reader
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("{name} does not read"))?;
            files.insert(
                name.to_string(),
                arrow::compute::concat_batches(&schema, &batches)?,
            );
        }
    }
    let manifest = manifest.context("SUMS lists no manifest.json")?;
    if manifest.format != FORMAT {
        bail!(
            "format {} (this Weir reads format {FORMAT}): start with --state-reset to discard it",
            manifest.format
        );
    }
    Ok(Restored {
        manifest,
        files,
        age: Duration::ZERO,
        bytes: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::manifest::{Manifest, Taken};
    use arrow::array::Int64Array;
    use std::sync::Arc;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("weir-ckpt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn taken(number: u64, lineage: &str, values: Vec<i64>) -> Taken {
        let batch =
            RecordBatch::try_from_iter([("v", Arc::new(Int64Array::from(values)) as _)]).unwrap();
        Taken {
            manifest: Manifest {
                format: FORMAT,
                number,
                lineage: lineage.into(),
                taken_ns: crate::clock::now_nanos(),
                version: "test".into(),
                streams: vec![],
                pipelines: vec![],
                sources: vec![],
                sinks: vec![],
            },
            files: vec![("p0-window.arrow".into(), batch)],
        }
    }

    #[test]
    fn written_checkpoints_read_back_and_only_two_are_kept() {
        let dir = scratch("roundtrip");
        let store = CheckpointStore::open(&dir, false).unwrap();
        for n in 1..=3 {
            store
                .write(&taken(n, store.lineage(), vec![n as i64, 10]))
                .unwrap();
            store.prune(2);
        }
        assert_eq!(store.complete(), vec![2, 3]);
        let mut r = store.newest().unwrap();
        assert_eq!(r.manifest.number, 3);
        let b = r.file(&Some("p0-window.arrow".into())).unwrap();
        assert_eq!(
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values(),
            &[3, 10]
        );
        let lineage = store.lineage().to_string();
        drop(store);
        let again = CheckpointStore::open(&dir, false).unwrap();
        assert_eq!(again.lineage(), lineage, "the lineage stays");
        drop(again);
        let reset = CheckpointStore::open(&dir, true).unwrap();
        assert_ne!(reset.lineage(), lineage, "a reset starts a new lineage");
        assert!(reset.complete().is_empty() && reset.newest().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_checkpoint_is_moved_aside_and_the_previous_one_is_used() {
        let dir = scratch("torn");
        let store = CheckpointStore::open(&dir, false).unwrap();
        store.write(&taken(1, store.lineage(), vec![1])).unwrap();
        store.write(&taken(2, store.lineage(), vec![2, 2])).unwrap();
        // a bad disk: the newest state file loses its tail
        let file = store.path_of(2).join("p0-window.arrow");
        let data = std::fs::read(&file).unwrap();
        std::fs::write(&file, &data[..data.len() - 7]).unwrap();
        let r = store.newest().unwrap();
        assert_eq!(r.manifest.number, 1);
        assert_eq!(store.complete(), vec![1]);
        let torn: Vec<_> = std::fs::read_dir(dir.join(CHECKPOINTS).join(TORN))
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(torn.len(), 1, "moved aside, not deleted");
        // a flipped byte (same size) is caught by the checksum
        let file = store.path_of(1).join(MANIFEST);
        let mut data = std::fs::read(&file).unwrap();
        data[5] ^= 0x20;
        std::fs::write(&file, &data).unwrap();
        assert!(store.newest().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_write_cut_short_leaves_nothing_behind_and_one_process_holds_the_directory() {
        let dir = scratch("tmp");
        let store = CheckpointStore::open(&dir, false).unwrap();
        let e = CheckpointStore::open(&dir, false).unwrap_err();
        assert!(
            format!("{e:#}").contains("in use by another Weir process"),
            "{e:#}"
        );
        std::fs::create_dir_all(dir.join(CHECKPOINTS).join(".tmp-0000000000000009")).unwrap();
        drop(store);
        let store = CheckpointStore::open(&dir, false).unwrap();
        assert!(!dir.join(CHECKPOINTS).join(".tmp-0000000000000009").exists());
        assert!(store.newest().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
