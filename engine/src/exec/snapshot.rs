//! The dataflow's part of a checkpoint: every stream's watermarks and status, every
//! pipeline's operator state (partial aggregates as Arrow arrays, `ewma`/`zscore` state) and
//! counters — taken at a cut between two batches, and restored into the same definitions.

use arrow::record_batch::RecordBatch;
use datafusion::common::Result;
use tracing::warn;

use super::dataflow::{Dataflow, StreamStatus};
use super::ids::PipelineId;
use super::window::OperatorState;
use crate::checkpoint::{PipelineEntry, Restored, StreamEntry, hex};

/// What restoring a checkpoint into a dataflow did.
#[derive(Debug, Default)]
pub struct RestoreReport {
    /// Pipelines whose state was restored.
    pub restored: Vec<String>,
    /// Pipelines whose plan changed: they start empty.
    pub changed: Vec<String>,
    /// Open windows restored.
    pub windows: usize,
    /// Groups over them.
    pub groups: usize,
    /// Pipelines whose state could not be restored, with the error: they start empty.
    pub failed: Vec<(String, String)>,
}

fn status_label(s: StreamStatus) -> &'static str {
    s.label()
}

impl Dataflow {
    /// Takes the state at this cut: an entry per stream and per pipeline; the Arrow state
    /// goes into `files` (named in the entries). The operators go on unchanged.
    pub fn capture(
        &mut self,
        files: &mut Vec<(String, RecordBatch)>,
    ) -> Result<(Vec<StreamEntry>, Vec<PipelineEntry>)> {
        let streams = self
            .streams
            .iter()
            .map(|s| {
                let mut watermarks: Vec<(usize, i64)> =
                    s.watermarks.iter().map(|(c, w)| (*c, *w)).collect();
                watermarks.sort_unstable();
                StreamEntry {
                    name: s.name.clone(),
                    fingerprint: hex(s.fingerprint),
                    watermarks,
                    status: status_label(s.status).to_string(),
                    max_time: s.clock.as_ref().and_then(|c| c.max_time),
                }
            })
            .collect();
        let mut pipelines = Vec::with_capacity(self.pipelines.len());
        for (i, p) in self.pipelines.iter_mut().enumerate() {
            let window = match &mut p.window {
                Some(w) => Some(w.op.snapshot()?),
                None => None,
            };
            let mut running_files = Vec::new();
            let steps = p
                .branches
                .iter()
                .flat_map(|b| b.chain.running())
                .chain(p.post.running());
            for (j, step) in steps.enumerate() {
                running_files.push(match step.snapshot()? {
                    Some(batch) => {
                        let name = format!("p{i}-running{j}.arrow");
                        files.push((name.clone(), batch));
                        Some(name)
                    }
                    None => None,
                });
            }
            let mut join_files = Vec::new();
            if let Some(j) = &p.join {
                for (side, batch) in j.op.snapshot()?.into_iter().enumerate() {
                    join_files.push(batch.map(|b| {
                        let name = format!("p{i}-join{side}.arrow");
                        files.push((name.clone(), b));
                        name
                    }));
                }
            }
            let mut interpolate_files = Vec::new();
            for (j, step) in p.post.interpolations().enumerate() {
                let mut name = |what: &str, b: RecordBatch| {
                    let name = format!("p{i}-interpolate{j}-{what}.arrow");
                    files.push((name.clone(), b));
                    name
                };
                interpolate_files.push(match step.snapshot()? {
                    Some((state, held)) => {
                        (Some(name("keys", state)), held.map(|h| name("held", h)))
                    }
                    None => (None, None),
                });
            }
            let (window_meta, window_file, windows, groups) = match window {
                Some(OperatorState {
                    meta,
                    batch,
                    windows,
                    groups,
                }) => {
                    let file = batch.map(|b| {
                        let name = format!("p{i}-window.arrow");
                        files.push((name.clone(), b));
                        name
                    });
                    (Some(meta), file, windows, groups)
                }
                None => (None, None, 0, 0),
            };
            pipelines.push(PipelineEntry {
                name: p.name.clone(),
                fingerprint: hex(p.fingerprint),
                last_watermark: self.last_watermark[i],
                failed: p.budget.failed,
                window_meta,
                window_file,
                windows,
                groups,
                running_files,
                join_files,
                interpolate_files,
                counts: p.telemetry.counts(),
            });
        }
        Ok((streams, pipelines))
    }

    /// Restores, from `restored`, the state of every stream and pipeline whose definition
    /// is unchanged (same name and fingerprint). `bounded[s]` says whether source stream `s`
    /// ends by itself: only such a source is restored as finished (others start again).
    pub fn restore(&mut self, restored: &mut Restored, bounded: &[bool]) -> RestoreReport {
        let mut report = RestoreReport::default();
        let streams = std::mem::take(&mut restored.manifest.streams);
        for (i, s) in self.streams.iter_mut().enumerate() {
            let Some(e) = streams
                .iter()
                .find(|e| e.name == s.name && e.fingerprint == hex(s.fingerprint))
            else {
                continue;
            };
            s.watermarks = e.watermarks.iter().copied().collect();
            if let Some(c) = &mut s.clock {
                c.max_time = e.max_time;
            }
            let is_source = s.telemetry.is_some();
            s.status = match e.status.as_str() {
                "finished" if is_source && bounded.get(i).copied().unwrap_or(false) => {
                    StreamStatus::Finished
                }
                "idle" if is_source => StreamStatus::Idle,
                _ => s.status,
            };
        }
        let entries = std::mem::take(&mut restored.manifest.pipelines);
        for i in 0..self.pipelines.len() {
            let name = self.pipelines[i].name.clone();
            let Some(e) = entries.iter().find(|e| e.name == name) else {
                continue;
            };
            if e.fingerprint != hex(self.pipelines[i].fingerprint) {
                warn!(pipeline = %name, "the pipeline's query or columns changed since the checkpoint: it starts empty (its open windows and running statistics are not restored)");
                report.changed.push(name);
                continue;
            }
            match self.restore_pipeline(PipelineId::new(i), e, restored) {
                Ok(()) => {
                    report.windows += e.windows;
                    report.groups += e.groups;
                    report.restored.push(name);
                }
                Err(err) => {
                    self.pipelines[i].clear_state();
                    warn!(pipeline = %name, error = %err, "the pipeline's checkpointed state does not fit its plan: it starts empty");
                    report.failed.push((name, err.to_string()));
                }
            }
        }
        report
    }

    fn restore_pipeline(
        &mut self,
        id: PipelineId,
        e: &PipelineEntry,
        restored: &mut Restored,
    ) -> Result<()> {
        let i = id.index();
        let p = &mut self.pipelines[i];
        if let (Some(w), Some(meta)) = (&mut p.window, &e.window_meta) {
            w.op.restore(OperatorState {
                meta: meta.clone(),
                batch: restored.file(&e.window_file),
                windows: e.windows,
                groups: e.groups,
            })?;
        }
        let steps = p
            .branches
            .iter_mut()
            .flat_map(|b| b.chain.running_mut())
            .chain(p.post.running_mut());
        for (step, file) in steps.zip(&e.running_files) {
            if let Some(batch) = restored.file(file) {
                step.restore(&batch)?;
            }
        }
        if let Some(j) = &mut p.join {
            for (side, file) in e.join_files.iter().enumerate() {
                if let Some(batch) = restored.file(file) {
                    j.op.restore(side, &batch)?;
                }
            }
            if let Some(w) = e.last_watermark {
                // rows a checkpoint keeps are after its watermark: nothing is completed here
                let _ = j.op.advance(w)?;
            }
        }
        for (step, (state, held)) in p.post.interpolations_mut().zip(&e.interpolate_files) {
            if let Some(state) = restored.file(state) {
                let held = restored.file(held);
                step.restore(&state, held.as_ref())?;
            }
        }
        p.telemetry.restore(&e.counts);
        self.last_watermark[i] = e.last_watermark;
        if e.failed {
            self.pipelines[i].budget.failed = true;
            self.stop_failed(id);
        }
        Ok(())
    }
}
