//! Counters of one sink, shared between the sink's task and the live system tables.

use std::sync::atomic::{AtomicU64, Ordering};

/// What a sink has done so far. Every sink's rows and failures are counted by the engine;
/// uploads and the spill buffer by the object-store sink.
#[derive(Debug, Default)]
pub struct SinkStats {
    rows: AtomicU64,
    batches: AtomicU64,
    failures: AtomicU64,
    uploads_ok: AtomicU64,
    uploads_failed: AtomicU64,
    uploaded_bytes: AtomicU64,
    spill_files: AtomicU64,
    spill_bytes: AtomicU64,
}

/// A copy of [`SinkStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkCounts {
    /// Rows handed to the sink.
    pub rows: u64,
    /// Batches handed to the sink.
    pub batches: u64,
    /// Failed writes or closes.
    pub failures: u64,
    /// Successful uploads.
    pub uploads_ok: u64,
    /// Failed uploads.
    pub uploads_failed: u64,
    /// Bytes uploaded.
    pub uploaded_bytes: u64,
    /// Files in the spill buffer.
    pub spill_files: u64,
    /// Bytes in the spill buffer.
    pub spill_bytes: u64,
}

impl SinkStats {
    /// A batch of `rows` rows was handed to the sink.
    pub fn wrote(&self, rows: u64) {
        self.rows.fetch_add(rows, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
    }

    /// A write or close failed.
    pub fn failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// An upload of `bytes` bytes finished, successfully or not.
    pub fn uploaded(&self, ok: bool, bytes: u64) {
        if ok {
            self.uploads_ok.fetch_add(1, Ordering::Relaxed);
            self.uploaded_bytes.fetch_add(bytes, Ordering::Relaxed);
        } else {
            self.uploads_failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The spill buffer now holds `files` files of `bytes` bytes.
    pub fn spilled(&self, files: u64, bytes: u64) {
        self.spill_files.store(files, Ordering::Relaxed);
        self.spill_bytes.store(bytes, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn counts(&self) -> SinkCounts {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SinkCounts {
            rows: get(&self.rows),
            batches: get(&self.batches),
            failures: get(&self.failures),
            uploads_ok: get(&self.uploads_ok),
            uploads_failed: get(&self.uploads_failed),
            uploaded_bytes: get(&self.uploaded_bytes),
            spill_files: get(&self.spill_files),
            spill_bytes: get(&self.spill_bytes),
        }
    }
}
