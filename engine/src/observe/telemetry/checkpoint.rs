//! The checkpoints' telemetry: taken and failed checkpoints, their duration and size, the
//! age of the newest, the checkpoint a run restored, and the gap live sources report after a
//! restore. Updated by the run, read by `/metrics` and the run summary.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tracing::warn;

use super::{
    CHECKPOINT_AGE, CHECKPOINT_BYTES, CHECKPOINT_DURATION, CHECKPOINTS, Count, Lazy, LogLimit,
    SOURCE_GAP,
};
use crate::sync::lock;

/// What a run restored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RestoredCheckpoint {
    /// Its number.
    pub number: u64,
    /// Time from its cut to the restore.
    pub age: Duration,
    /// Open windows restored.
    pub windows: usize,
    /// Groups over them.
    pub groups: usize,
    /// Pipelines whose plan changed and that started empty.
    pub changed: Vec<String>,
}

/// The checkpoints' counters at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckpointCounts {
    /// Checkpoints completed.
    pub taken: u64,
    /// Checkpoints that failed (the previous one stays).
    pub failed: u64,
    /// Size of the last completed one.
    pub last_bytes: u64,
    /// Duration of the last completed one, from its cut until it was durable.
    pub last_duration: Duration,
    /// What the run restored, if anything.
    pub restored: Option<RestoredCheckpoint>,
}

/// The telemetry of a run's checkpoints.
#[derive(Debug, Default)]
pub struct CheckpointTelemetry {
    ok: Count,
    failed: Count,
    fail_log: LogLimit,
    last_bytes: AtomicU64,
    last_duration_us: AtomicU64,
    /// Cut of the newest complete checkpoint, ns since the epoch (0: none).
    newest_ns: AtomicI64,
    duration: Lazy<metrics::Histogram>,
    bytes: Lazy<metrics::Gauge>,
    age: Lazy<metrics::Gauge>,
    restored: Mutex<Option<RestoredCheckpoint>>,
}

impl CheckpointTelemetry {
    /// A checkpoint cut at `taken_ns` became durable after `duration` with `bytes` bytes.
    pub fn completed(&self, taken_ns: i64, duration: Duration, bytes: u64) {
        self.ok.add(1, || CHECKPOINTS.counter_with(&["ok"]));
        self.last_bytes.store(bytes, Ordering::Relaxed);
        self.last_duration_us
            .store(duration.as_micros() as u64, Ordering::Relaxed);
        self.newest_ns.store(taken_ns, Ordering::Relaxed);
        self.duration
            .get(|| CHECKPOINT_DURATION.histogram_with(&[]))
            .record(duration.as_secs_f64());
        self.bytes
            .get(|| CHECKPOINT_BYTES.gauge_with(&[]))
            .set(bytes as f64);
        self.refresh_age();
    }

    /// A checkpoint failed (`error`): counted and logged (rate-limited).
    pub fn failed(&self, error: impl std::fmt::Display) {
        self.failed.add(1, || CHECKPOINTS.counter_with(&["failed"]));
        if let Some(unlogged) = self.fail_log.admit() {
            warn!(error = %error, not_logged_since_last = unlogged,
                "checkpoint failed: the previous one stays; the next is tried at the next interval");
        }
    }

    /// The run restored `r`, cut at `taken_ns`.
    pub fn restored(&self, r: RestoredCheckpoint, taken_ns: i64) {
        self.newest_ns.store(taken_ns, Ordering::Relaxed);
        *lock(&self.restored) = Some(r);
        self.refresh_age();
    }

    /// Sets `weir_checkpoint_age_seconds` (on the run's tick).
    pub fn refresh_age(&self) {
        if let Some(age) = self.age_seconds() {
            self.age.get(|| CHECKPOINT_AGE.gauge_with(&[])).set(age);
        }
    }

    /// Seconds since the cut of the newest complete checkpoint (`None`: none yet).
    pub fn age_seconds(&self) -> Option<f64> {
        let newest = self.newest_ns.load(Ordering::Relaxed);
        (newest != 0).then(|| (crate::clock::now_nanos() - newest).max(0) as f64 / 1e9)
    }

    /// Source `source` resumed `gap` after the last batch the restored checkpoint covers,
    /// and cannot replay what it missed (live values).
    pub fn source_gap(&self, source: &str, gap: Duration) {
        SOURCE_GAP.gauge_with(&[source]).set(gap.as_secs_f64());
    }

    /// The counters now.
    pub fn counts(&self) -> CheckpointCounts {
        CheckpointCounts {
            taken: self.ok.get(),
            failed: self.failed.get(),
            last_bytes: self.last_bytes.load(Ordering::Relaxed),
            last_duration: Duration::from_micros(self.last_duration_us.load(Ordering::Relaxed)),
            restored: lock(&self.restored).clone(),
        }
    }
}
