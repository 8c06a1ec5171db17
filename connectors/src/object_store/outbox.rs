//! The sink's outbox with checkpoints (`SPILL_DIR/SINK/pending/`):
//!
//! - `NUMBER-SEQ.parquet`: a file pre-committed with checkpoint NUMBER, durable; handed to
//!   the uploader when the checkpoint is complete, removed once uploaded (or moved into the
//!   spill directory, its name tagged with the checkpoint, when the store cannot take it);
//! - `NUMBER-….uploaded`: the key of an object committed with checkpoint NUMBER, kept while
//!   that checkpoint could still be given up for an older one (a damaged newest checkpoint);
//! - `NUMBER-….delete`: the key of an object committed after the checkpoint a run
//!   restored: deleted from the store before anything is uploaded (the file made again may
//!   have the same key).

use std::path::{Path, PathBuf};

use anyhow::Context;
use bytes::Bytes;
use tracing::info;

use super::spill::{inspect, remove_committed_after};
use super::uploader::{Committed, Finished, Outbox, Tombstone, outbox_checkpoint};

/// What recovering the outbox found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The sequence number the restored checkpoint left off at.
    pub next_seq: Option<u64>,
    /// Files pending for the restored checkpoint (or older): committed again.
    pub recommit: Vec<Finished>,
    /// Objects to delete first.
    pub deletes: Vec<Tombstone>,
}

fn fsync_dir(dir: &Path) {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).ok();
}

/// Writes `data` durably as the pending file of sequence number `seq`, checkpoint
/// `number`.
pub fn pend(dir: &Path, number: u64, seq: u64, data: &[u8]) -> std::io::Result<PathBuf> {
    let path = dir.join(format!("{number:016}-{seq:06}.parquet"));
    weir_engine::checkpoint::store::write_durably(&path, data)?;
    Ok(path)
}

/// At start, with checkpoints: files pending for the restored checkpoint `restored` are
/// committed again, later ones removed; objects committed after it are marked for deletion
/// (and spilled files committed after it removed). Without a restored checkpoint nothing
/// pending can be committed: the outbox is emptied (marked deletions stay).
pub fn recover(
    sink: &str,
    outbox: &Outbox,
    spill_dir: &Path,
    restored: Option<(u64, serde_json::Value)>,
) -> anyhow::Result<Recovered> {
    std::fs::create_dir_all(&outbox.dir)
        .with_context(|| format!("cannot create {}", outbox.dir.display()))?;
    let mut found = Recovered::default();
    let restored_number = restored.as_ref().map(|(n, _)| *n);
    found.next_seq = restored
        .as_ref()
        .and_then(|(_, s)| s.get("next_seq"))
        .and_then(serde_json::Value::as_u64);
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&outbox.dir)?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    let (mut removed, mut marked) = (0, 0);
    for path in entries {
        let Some(k) = outbox_checkpoint(&path) else {
            continue;
        };
        let covered = restored_number.is_some_and(|m| k <= m);
        match path.extension().and_then(|x| x.to_str()) {
            Some("parquet") if covered => {
                let data = Bytes::from(std::fs::read(&path)?);
                match inspect(&data) {
                    Ok((key, rows)) => found.recommit.push(Finished {
                        key,
                        data,
                        rows,
                        committed: Some(Committed {
                            pending: path,
                            checkpoint: k,
                        }),
                    }),
                    Err(_) => {
                        // cut short before its fsync: the checkpoint did not complete with it
                        std::fs::remove_file(&path)?;
                        removed += 1;
                    }
                }
            }
            Some("parquet") | Some("tmp") => {
                std::fs::remove_file(&path)?;
                removed += 1;
            }
            Some("uploaded") if restored_number.is_some_and(|m| k > m) => {
                let to = path.with_extension("delete");
                std::fs::rename(&path, &to)?;
                marked += 1;
            }
            Some("uploaded") if restored_number.is_none() => {
                std::fs::remove_file(&path)?;
            }
            _ => {}
        }
    }
    fsync_dir(&outbox.dir);
    for e in std::fs::read_dir(&outbox.dir)?.flatten() {
        let path = e.path();
        if path.extension().is_some_and(|x| x == "delete") {
            let key = std::fs::read_to_string(&path)?;
            found.deletes.push(Tombstone { path, key });
        }
    }
    let spilled = match restored_number {
        Some(m) => remove_committed_after(spill_dir, &outbox.lineage, m),
        None => 0,
    };
    if removed + marked + spilled > 0 || !found.recommit.is_empty() {
        info!(
            sink,
            recommitted = found.recommit.len(),
            pending_removed = removed,
            spilled_removed = spilled,
            objects_to_delete = found.deletes.len(),
            "object-store sink recovered: files of the restored checkpoint committed, output after it removed (its rows come again)"
        );
    }
    Ok(found)
}
