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
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Reads the object key and row count of a Parquet file; an error for a torn or corrupt one.
pub fn inspect(data: &Bytes) -> anyhow::Result<(String, u64)> {
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

impl SpillDir {
    /// Opens (creating) `dir`; files already there are the backlog, oldest first. Leftover
    /// temporary files (a write cut short by a crash) are moved to quarantine.
    pub fn open(dir: &Path) -> anyhow::Result<(SpillDir, Vec<PathBuf>)> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create spill directory {}", dir.display()))?;
        let mut s = SpillDir {
            dir: dir.to_path_buf(),
            files: BTreeMap::new(),
            bytes: 0,
            seq: 0,
        };
        let mut quarantined = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().to_string();
            if !entry.file_type()?.is_file() {
                continue;
            }
            if name.starts_with(".tmp-") {
                quarantined.push(s.quarantine(&entry.path())?);
                continue;
            }
            let Some(spilled_ms) = name.split('-').next().and_then(|t| t.parse::<i64>().ok())
            else {
                continue;
            };
            let bytes = entry.metadata()?.len();
            s.bytes += bytes;
            s.files.insert(
                name,
                Spilled {
                    path: entry.path(),
                    bytes,
                    spilled_ms,
                },
            );
        }
        Ok((s, quarantined))
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
    pub fn write(&mut self, data: &[u8]) -> anyhow::Result<Spilled> {
        let newest = self.files.values().next_back().map_or(0, |s| s.spilled_ms);
        let ms = now_ms().max(newest);
        self.seq += 1;
        let name = format!("{ms:013}-{:06}-{}.parquet", self.seq, std::process::id());
        let tmp = self.dir.join(format!(".tmp-{name}"));
        let path = self.dir.join(&name);
        let mut f = File::create(&tmp)
            .with_context(|| format!("cannot create spill file {}", tmp.display()))?;
        f.write_all(data)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("cannot write spill file {}", tmp.display()))?;
        drop(f);
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
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
        let q = self.dir.join("quarantine");
        std::fs::create_dir_all(&q)?;
        let to = q.join(path.file_name().unwrap_or_default());
        std::fs::rename(path, &to)
            .with_context(|| format!("cannot move {} to {}", path.display(), to.display()))?;
        if let Some(s) = self.files.values().find(|s| s.path == path).cloned() {
            self.forget(&s);
        }
        Ok(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
