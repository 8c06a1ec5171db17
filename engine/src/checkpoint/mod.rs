//! Crash-consistent checkpoints.
//!
//! The dataflow runs in one task, so a consistent cut of the whole run lies between two
//! batches. At a cut the run takes every pipeline's operator state (partial aggregates as
//! Arrow arrays, `ewma`/`zscore` state), every stream's watermark, each source's position as
//! of the last batch the dataflow consumed and the counters, and asks every sink to
//! pre-commit the rows it received since the last checkpoint (a durable pending file). Once
//! all of that is on disk ([`store`]: temporary directory, fsync, rename, fsync of the
//! parent) the checkpoint is complete: sinks commit their pending files and sources learn
//! which of their batches are covered (the MQTT source then acknowledges their messages).
//!
//! On start the newest complete checkpoint is restored before any source starts; a torn or
//! corrupt one (checksums) is moved aside and the previous one is used.

pub mod manifest;
pub mod store;

use std::path::PathBuf;
use std::time::Duration;

pub use manifest::{Manifest, PipelineEntry, Restored, SinkEntry, SourceEntry, StreamEntry, Taken};
pub use store::CheckpointStore;

/// `--checkpoint-interval` when none is given.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// Where and how often checkpoints are taken.
#[derive(Debug, Clone)]
pub struct CheckpointSettings {
    /// `--state-dir`.
    pub dir: PathBuf,
    /// `--checkpoint-interval`.
    pub interval: Duration,
    /// `--state-reset`: discard what the directory holds before the first run.
    pub reset: bool,
}

/// A stable 64-bit hash of `text` (the same across runs, builds and machines): plan and
/// source fingerprints, file checksums.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    twox_hash::XxHash64::oneshot(0, bytes)
}

/// `stable_hash` as 16 hex digits.
pub fn hex(h: u64) -> String {
    format!("{h:016x}")
}
