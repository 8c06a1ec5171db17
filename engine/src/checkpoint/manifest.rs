//! What a checkpoint holds: a manifest (JSON) describing every stream, pipeline, source and
//! sink, and Arrow IPC files with the state that is made of arrays.

use std::collections::HashMap;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::observe::telemetry::{PipelineCounts, SinkCounts, SourceCounts};

/// The layout version this build writes and reads.
pub const FORMAT: u32 = 1;

/// The manifest of one checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// Checkpoint number, counting up within a lineage.
    pub number: u64,
    /// The state directory's lineage: a random id made when the directory was first used
    /// (or reset); sinks tag what they commit with it.
    pub lineage: String,
    /// Wall clock at the cut, ns since the epoch.
    pub taken_ns: i64,
    /// The Weir version that wrote it.
    pub version: String,
    /// Sources, then views.
    pub streams: Vec<StreamEntry>,
    /// Views and inserts.
    pub pipelines: Vec<PipelineEntry>,
    /// Sources: position and counters.
    pub sources: Vec<SourceEntry>,
    /// Sinks: what they pre-committed and their counters.
    pub sinks: Vec<SinkEntry>,
}

/// A stream at the cut.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamEntry {
    /// Source or view name.
    pub name: String,
    /// Fingerprint of its definition (a source's statement, a view's plan), hex.
    pub fingerprint: String,
    /// Watermark per time column: `(column, ns)`.
    pub watermarks: Vec<(usize, i64)>,
    /// `active`, `idle` or `finished`.
    pub status: String,
    /// Largest event time seen (sources).
    pub max_time: Option<i64>,
}

/// A pipeline at the cut.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelineEntry {
    /// Pipeline name.
    pub name: String,
    /// Fingerprint of its plan, hex: state is restored only into the same plan.
    pub fingerprint: String,
    /// The watermark its windows were closed up to.
    pub last_watermark: Option<i64>,
    /// Stopped by its state policy `fail`.
    pub failed: bool,
    /// The window operator's bookkeeping, when it has one.
    pub window_meta: Option<serde_json::Value>,
    /// The IPC file with its partial aggregate state, when it holds any.
    pub window_file: Option<String>,
    /// Open windows (panes, sessions).
    pub windows: usize,
    /// Groups over all open windows.
    pub groups: usize,
    /// Per `ewma`/`zscore` step: the IPC file with its state (None: no key yet).
    pub running_files: Vec<Option<String>>,
    /// A join of two streams: per side (left, right), the IPC file with the rows it keeps.
    #[serde(default)]
    pub join_files: Vec<Option<String>>,
    /// Per `interpolate` step: the IPC files of its keys' last values and of the rows it
    /// holds (None: nothing).
    #[serde(default)]
    pub interpolate_files: Vec<(Option<String>, Option<String>)>,
    /// Its counters.
    pub counts: PipelineCounts,
}

/// A source at the cut.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceEntry {
    /// Source name.
    pub name: String,
    /// Connector name.
    pub connector: String,
    /// Fingerprint of its statement, hex: a changed source starts from the beginning.
    pub fingerprint: String,
    /// Its position after the last batch the dataflow consumed (the source's own JSON).
    pub offset: Option<serde_json::Value>,
    /// Number of that batch (counting from 1 within a run; 0: none yet).
    pub batch: u64,
    /// Wall clock when that batch was consumed, ns (to report the gap of live sources).
    pub last_batch_ns: Option<i64>,
    /// The IPC file with ids of messages delivered recently (a broker may deliver them
    /// again after a crash), when there are any.
    pub delivered_file: Option<String>,
    /// Its counters.
    pub counts: SourceCounts,
}

/// A sink at the cut.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SinkEntry {
    /// Sink name.
    pub name: String,
    /// What its pre-commit returned: how it finds its pending output again.
    pub state: serde_json::Value,
    /// Its counters as of the pre-commit.
    pub counts: SinkCounts,
}

/// What the run captured at a cut, to be written: the manifest (its sink entries come from
/// the sinks' pre-commits) and the Arrow files it names.
#[derive(Debug)]
pub struct Taken {
    /// The manifest.
    pub manifest: Manifest,
    /// `(file name, rows)`: each written as one Arrow IPC file.
    pub files: Vec<(String, RecordBatch)>,
}

impl Taken {
    /// Open windows and groups over all pipelines.
    pub fn windows_and_groups(&self) -> (usize, usize) {
        self.manifest
            .pipelines
            .iter()
            .fold((0, 0), |(w, g), p| (w + p.windows, g + p.groups))
    }
}

/// A checkpoint read back and verified.
#[derive(Debug)]
pub struct Restored {
    /// Its manifest.
    pub manifest: Manifest,
    /// Its Arrow files by name.
    pub files: HashMap<String, RecordBatch>,
    /// Time since its cut.
    pub age: Duration,
    /// Bytes on disk.
    pub bytes: u64,
}

impl Restored {
    /// The rows of file `name`, if the manifest names one.
    pub fn file(&mut self, name: &Option<String>) -> Option<RecordBatch> {
        name.as_ref().and_then(|n| self.files.remove(n))
    }
}
