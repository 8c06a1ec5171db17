//! The spill directory: finished Parquet files that could not be uploaded yet, written
//! atomically (temporary name, fsync, rename, fsync of the directory) and named so that name
//! order is age order. Each file carries its object key in its Parquet metadata, so a file
//! spilled by an earlier run is uploaded under the key it was meant for.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use parquet::file::metadata::ParquetMetaDataReader;

/// Parquet metadata key holding the object key of a file.
pub const KEY_METADATA: &str = "weir.object_key";

/// The subdirectory torn and corrupt files are moved to.
const QUARANTINE: &str = "quarantine";

/// What precedes the tag in the name of a file committed with a checkpoint.
const TAG: &str = "ck";

/// The tag in the name of a spilled file committed with a checkpoint (`LINEAGExNUMBER`).
pub fn tag_of(path: &Path) -> Option<&str> {
    let name = path.file_name()?.to_str()?.strip_suffix(".parquet")?;
    Some(name.rsplit_once(&format!("-{TAG}"))?.1)
}

/// The tag for checkpoint `number` of `lineage`.
pub fn tag(lineage: &str, number: u64) -> String {
    format!("{lineage}x{number}")
}

/// Deletes the files in spill directory `dir` committed with a checkpoint of `lineage`
/// after `after` (before the directory is opened); how many.
pub fn remove_committed_after(dir: &Path, lineage: &str, after: u64) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let path = e.path();
        let later = tag_of(&path)
            .and_then(|t| checkpoint_of(t, lineage))
            .is_some_and(|k| k > after);
        if later && std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        File::open(dir).and_then(|d| d.sync_all()).ok();
    }
    removed
}

/// The checkpoint number in `tag`, when it is of `lineage`.
pub fn checkpoint_of(tag: &str, lineage: &str) -> Option<u64> {
    let (l, n) = tag.split_once('x')?;
    (l == lineage).then(|| n.parse().ok()).flatten()
}

/// A spilled file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spilled {
    /// Where it is.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// When it was spilled (ms since the epoch, from its name).
    pub spilled_ms: i64,
}

/// What a spilled file holds, read back for upload.
#[derive(Debug)]
pub struct Contents {
    /// The file.
    pub data: Bytes,
    /// The object key it is uploaded under.
    pub key: String,
    /// Rows in it.
    pub rows: u64,
}

/// One sink's spill directory.
#[derive(Debug)]
pub struct SpillDir {
    dir: PathBuf,
    files: BTreeMap<String, Spilled>,
    bytes: u64,
    seq: u64,
    /// Why the directory cannot be used (it is tried again at each write).
    unusable: Option<String>,
    /// Files in `quarantine/`, oldest first, with their sizes.
    quarantined: Vec<(PathBuf, u64)>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Reads the object key and row count of a Parquet file; an error for a torn or corrupt one.
pub fn inspect(data: &Bytes) -> anyhow::Result<(String, u64)> {
    crate::parquet_footer::check(data)?;
    let meta = ParquetMetaDataReader::new()
        .parse_and_finish(data)
        .context("not a complete Parquet file")?;
    let rows = meta.file_metadata().num_rows().max(0) as u64;
    let key = meta
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == KEY_METADATA))
        .and_then(|k| k.value.clone())
        .context("the file has no object key in its metadata")?;
    Ok((key, rows))
}

/// True when the file at `path` is a complete spill file: a Parquet file whose footer reads
/// and that carries its object key.
fn complete(path: &Path) -> bool {
    std::fs::read(path)
        .map(Bytes::from)
        .is_ok_and(|data| inspect(&data).is_ok())
}

impl SpillDir {
    /// Opens (creating) `dir`; files already there are the backlog, oldest first. A leftover
    /// temporary file is a write a crash cut short: when it is a complete Parquet file with
    /// its object key (the crash came after its fsync, before the rename) it is renamed and
    /// joins the backlog; otherwise it is moved to quarantine.
    pub fn open(dir: &Path) -> anyhow::Result<(SpillDir, Vec<PathBuf>)> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create spill directory {}", dir.display()))?;
        let mut s = SpillDir::unusable(dir, "");
        s.unusable = None;
        let mut quarantined = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().to_string();
            if !entry.file_type()?.is_file() {
                continue;
            }
            let name = match name.strip_prefix(".tmp-") {
                Some(done) if complete(&entry.path()) => {
                    let to = dir.join(done);
                    std::fs::rename(entry.path(), &to).with_context(|| {
                        format!(
                            "cannot rename {} to {}",
                            entry.path().display(),
                            to.display()
                        )
                    })?;
                    File::open(dir).and_then(|d| d.sync_all()).ok();
                    done.to_string()
                }
                Some(_) => {
                    quarantined.push(s.quarantine(&entry.path())?);
                    continue;
                }
                None => name,
            };
            let path = dir.join(&name);
            let Some(spilled_ms) = name.split('-').next().and_then(|t| t.parse::<i64>().ok())
            else {
                continue;
            };
            let bytes = std::fs::metadata(&path)?.len();
            s.bytes += bytes;
            s.files.insert(
                name,
                Spilled {
                    path,
                    bytes,
                    spilled_ms,
                },
            );
        }
        s.scan_quarantine();
        Ok((s, quarantined))
    }

    /// Finds the files already in `quarantine/`, oldest first.
    fn scan_quarantine(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.dir.join(QUARANTINE)) else {
            return;
        };
        let mut found: Vec<(SystemTime, PathBuf, u64)> = entries
            .flatten()
            .filter_map(|e| {
                let m = e.metadata().ok().filter(|m| m.is_file())?;
                Some((m.modified().unwrap_or(UNIX_EPOCH), e.path(), m.len()))
            })
            .filter(|(_, p, _)| !self.quarantined.iter().any(|(q, _)| q == p))
            .collect();
        found.sort();
        let mut all: Vec<(PathBuf, u64)> = found.into_iter().map(|(_, p, b)| (p, b)).collect();
        all.append(&mut self.quarantined);
        self.quarantined = all;
    }

    /// Bytes in `quarantine/`.
    pub fn quarantine_bytes(&self) -> u64 {
        self.quarantined.iter().map(|(_, b)| b).sum()
    }

    /// Deletes the oldest quarantined file; its path and size, or None when there is none.
    pub fn delete_oldest_quarantined(&mut self) -> Option<(PathBuf, u64)> {
        if self.quarantined.is_empty() {
            return None;
        }
        let (path, bytes) = self.quarantined.remove(0);
        let _ = std::fs::remove_file(&path);
        Some((path, bytes))
    }

    /// A spill directory that cannot be used (`why`): empty, so that files are uploaded
    /// directly; a write tries to create it again and fails while it cannot be.
    pub fn unusable(dir: &Path, why: &str) -> SpillDir {
        SpillDir {
            dir: dir.to_path_buf(),
            files: BTreeMap::new(),
            bytes: 0,
            seq: 0,
            unusable: Some(why.to_string()),
            quarantined: Vec::new(),
        }
    }

    /// Files waiting.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Bytes waiting.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The oldest file.
    pub fn oldest(&self) -> Option<&Spilled> {
        self.files.values().next()
    }

    /// Writes `data` atomically as the newest file.
    /// A failed write leaves nothing behind (its temporary file is removed at once).
    pub fn write(&mut self, data: &[u8]) -> anyhow::Result<Spilled> {
        if let Some(why) = &self.unusable {
            if std::fs::create_dir_all(&self.dir).is_err() {
                anyhow::bail!(
                    "the spill directory {} cannot be used: {why}",
                    self.dir.display()
                );
            }
            self.unusable = None;
        }
        let newest = self.files.values().next_back().map_or(0, |s| s.spilled_ms);
        let ms = now_ms().max(newest);
        self.seq += 1;
        let name = format!("{ms:013}-{:06}-{}.parquet", self.seq, std::process::id());
        let tmp = self.dir.join(format!(".tmp-{name}"));
        let path = self.dir.join(&name);
        let written = File::create(&tmp)
            .with_context(|| format!("cannot create spill file {}", tmp.display()))
            .and_then(|mut f| {
                f.write_all(data)
                    .and_then(|()| f.sync_all())
                    .with_context(|| format!("cannot write spill file {}", tmp.display()))
            })
            .and_then(|()| {
                std::fs::rename(&tmp, &path).with_context(|| {
                    format!("cannot rename {} to {}", tmp.display(), path.display())
                })
            });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        File::open(&self.dir).and_then(|d| d.sync_all()).ok();
        let s = Spilled {
            path,
            bytes: data.len() as u64,
            spilled_ms: ms,
        };
        self.bytes += s.bytes;
        self.files.insert(name, s.clone());
        Ok(s)
    }

    /// Moves the durable file at `path` (on the same file system) into the directory as the
    /// newest spilled file, its name tagged with `tag` (see [`tag_of`]); fsyncs the
    /// directory.
    pub fn adopt(&mut self, path: &Path, tag: &str) -> anyhow::Result<Spilled> {
        if self.unusable.is_some() {
            std::fs::create_dir_all(&self.dir).with_context(|| {
                format!("the spill directory {} cannot be used", self.dir.display())
            })?;
            self.unusable = None;
        }
        let newest = self.files.values().next_back().map_or(0, |s| s.spilled_ms);
        let ms = now_ms().max(newest);
        self.seq += 1;
        let name = format!(
            "{ms:013}-{:06}-{}-{TAG}{tag}.parquet",
            self.seq,
            std::process::id()
        );
        let to = self.dir.join(&name);
        std::fs::rename(path, &to)
            .with_context(|| format!("cannot move {} to {}", path.display(), to.display()))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).ok();
        let s = Spilled {
            bytes: std::fs::metadata(&to).map_or(0, |m| m.len()),
            path: to,
            spilled_ms: ms,
        };
        self.bytes += s.bytes;
        self.files.insert(name, s.clone());
        Ok(s)
    }

    /// Reads a spilled file back.
    pub fn read(&self, s: &Spilled) -> anyhow::Result<Contents> {
        let data = Bytes::from(
            std::fs::read(&s.path).with_context(|| format!("cannot read {}", s.path.display()))?,
        );
        let (key, rows) = inspect(&data)?;
        Ok(Contents { data, key, rows })
    }

    fn forget(&mut self, s: &Spilled) {
        let name = s
            .path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if self.files.remove(&name).is_some() {
            self.bytes = self.bytes.saturating_sub(s.bytes);
        }
    }

    /// Deletes a file (uploaded, or dropped by the disk budget).
    pub fn remove(&mut self, s: &Spilled) -> anyhow::Result<()> {
        self.forget(s);
        match std::fs::remove_file(&s.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("cannot delete {}", s.path.display()))
            }
            _ => Ok(()),
        }
    }

    /// Moves a file that cannot be read to `quarantine/`; returns its new path.
    pub fn quarantine(&mut self, path: &Path) -> anyhow::Result<PathBuf> {
        let q = self.dir.join(QUARANTINE);
        std::fs::create_dir_all(&q)?;
        let to = q.join(path.file_name().unwrap_or_default());
        std::fs::rename(path, &to)
            .with_context(|| format!("cannot move {} to {}", path.display(), to.display()))?;
        let bytes = std::fs::metadata(&to).map_or(0, |m| m.len());
        self.quarantined.retain(|(p, _)| *p != to);
        self.quarantined.push((to.clone(), bytes));
        if let Some(s) = self.files.values().find(|s| s.path == path).cloned() {
            self.forget(&s);
        }
        Ok(to)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn an_unusable_directory_refuses_writes_until_it_can_be_created() {
        let base = std::env::temp_dir().join(format!("weir-spill-blocked-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let blocker = base.join("blocked");
        std::fs::write(&blocker, "a file").unwrap();
        let dir = blocker.join("spill");
        let e = SpillDir::open(&dir).unwrap_err();
        let mut s = SpillDir::unusable(&dir, &format!("{e:#}"));
        assert!(s.is_empty());
        let e = s.write(b"data").unwrap_err();
        assert!(format!("{e:#}").contains("cannot be used"), "{e:#}");
        // nothing left behind, and once the way is clear the directory is used
        std::fs::remove_file(&blocker).unwrap();
        let written = s.write(b"data").unwrap();
        assert_eq!(std::fs::read(&written.path).unwrap(), b"data");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn files_come_back_oldest_first_and_leftovers_are_quarantined() {
        let dir = std::env::temp_dir().join(format!("weir-spill-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (mut s, q) = SpillDir::open(&dir).unwrap();
        assert!(q.is_empty() && s.is_empty());
        let a = s.write(b"first").unwrap();
        let b = s.write(b"second!").unwrap();
        assert_eq!(s.bytes(), 12);
        std::fs::write(dir.join(".tmp-torn.parquet"), b"tor").unwrap();
        let (mut s, q) = SpillDir::open(&dir).unwrap();
        assert_eq!(q.len(), 1, "the torn temporary file is quarantined");
        assert!(q[0].starts_with(dir.join("quarantine")));
        assert_eq!(s.len(), 2);
        assert_eq!(s.oldest(), Some(&a));
        assert!(s.read(&a).is_err(), "not Parquet");
        s.remove(&a).unwrap();
        assert_eq!(s.oldest(), Some(&b));
        assert_eq!(s.bytes(), 7);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A Parquet file of `rows` rows carrying object key `key`, as the sink writes them.
    /// An empty scratch directory for test `name` of this process.
    pub(in crate::object_store) fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A spill file of `rows` rows for object `key`.
    pub(in crate::object_store) fn parquet(rows: i64, key: &str) -> Vec<u8> {
        use arrow::array::Int64Array;
        use arrow::record_batch::RecordBatch;
        use parquet::arrow::ArrowWriter;
        use parquet::file::metadata::KeyValue;
        let batch = RecordBatch::try_from_iter([(
            "n",
            std::sync::Arc::new(Int64Array::from_iter_values(0..rows)) as _,
        )])
        .unwrap();
        let mut w = ArrowWriter::try_new(Vec::new(), batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.append_key_value_metadata(KeyValue::new(KEY_METADATA.to_string(), key.to_string()));
        w.into_inner().unwrap()
    }

    #[test]
    fn quarantined_files_are_counted_and_deleted_oldest_first() {
        let dir = scratch("quarantine-cap").join("spill");
        std::fs::create_dir_all(dir.join("quarantine")).unwrap();
        std::fs::write(dir.join("quarantine").join("old.parquet"), [0u8; 100]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.join(".tmp-torn.parquet"), [0u8; 30]).unwrap();
        let (mut s, q) = SpillDir::open(&dir).unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(
            s.quarantine_bytes(),
            130,
            "found at start and newly quarantined"
        );
        let (gone, bytes) = s.delete_oldest_quarantined().unwrap();
        assert_eq!(
            (gone.file_name().unwrap().to_str(), bytes),
            (Some("old.parquet"), 100)
        );
        assert!(!gone.exists());
        assert_eq!(s.quarantine_bytes(), 30);
        s.delete_oldest_quarantined().unwrap();
        assert!(s.delete_oldest_quarantined().is_none());
        assert_eq!(s.quarantine_bytes(), 0);
    }

    #[test]
    fn a_complete_file_left_before_its_rename_is_recovered() {
        let dir = std::env::temp_dir().join(format!("weir-spill-rename-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let name = "0001767225600000-000001-42.parquet";
        std::fs::write(dir.join(format!(".tmp-{name}")), parquet(5, "p/k.parquet")).unwrap();
        let mut torn = parquet(5, "p/torn.parquet");
        torn.truncate(torn.len() - 3);
        std::fs::write(dir.join(".tmp-0001767225600001-000002-42.parquet"), torn).unwrap();
        let (s, q) = SpillDir::open(&dir).unwrap();
        assert_eq!(q.len(), 1, "only the torn file is quarantined");
        assert_eq!(s.len(), 1);
        let oldest = s.oldest().unwrap().clone();
        assert_eq!(oldest.path, dir.join(name));
        assert_eq!(oldest.spilled_ms, 1_767_225_600_000);
        let c = s.read(&oldest).unwrap();
        assert_eq!((c.key.as_str(), c.rows), ("p/k.parquet", 5));
        assert!(!dir.join(format!(".tmp-{name}")).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
