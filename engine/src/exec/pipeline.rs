//! One compiled view or insert: input branches, an optional windowed aggregation, and the
//! stateless steps after it.

use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::{SchemaRef, TimestampNanosecondType};
use arrow::record_batch::RecordBatch;
use datafusion::common::Result;

use super::budget::{StateBudget, StatePolicy, resume_below};
use super::chain::Chain;
use super::ids::{SinkId, StreamId};
use super::isolate::{RowDeadLetters, RowFailure};
use super::window::assign::WindowAssign;
use super::window::{Emitted, WindowOperator};
use crate::observe::telemetry::PipelineTelemetry;

/// Where a pipeline's rows go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A view's stream, read by other pipelines.
    Stream(StreamId),
    /// A sink.
    Sink(SinkId),
}

/// One input of a pipeline (several with `UNION ALL`).
#[derive(Debug)]
pub struct Branch {
    /// The stream read.
    pub stream: StreamId,
    /// Window columns added first, for a window table function.
    pub assign: Option<WindowAssign>,
    /// Stateless steps up to the aggregation (or to the output).
    pub chain: Chain,
    /// Time columns of the stream that the window (or the output) follows: `(stream column,
    /// pre-aggregate column)`.
    pub time_cols: Vec<(usize, usize)>,
}

impl Branch {
    /// Runs the branch's window assignment and stateless steps; rows they cannot evaluate
    /// go to `failed`.
    pub fn apply(
        &mut self,
        batch: RecordBatch,
        failed: &mut Vec<RowFailure>,
    ) -> Result<RecordBatch> {
        let batch = match &self.assign {
            Some(a) => a.apply(&batch)?,
            None => batch,
        };
        self.chain.apply(batch, failed)
    }
}

/// The windowed aggregation of a pipeline and where its window columns end up.
pub struct Windowed {
    /// The operator.
    pub op: Box<dyn WindowOperator>,
    /// Output column of `window_start`, if the query keeps it.
    pub out_start: Option<usize>,
    /// Output column of `window_end`, if the query keeps it.
    pub out_end: Option<usize>,
    /// Output columns of the group keys the query keeps.
    pub out_keys: Vec<usize>,
    /// Stream column (per branch) whose watermark drives the windows.
    pub time_col: Vec<usize>,
    /// Rows for the keys of a reference table that a closed window had none of.
    pub fill: Option<super::window::fill::GapFill>,
}

/// Two input streams joined within a time bound, and where its time columns end up.
pub struct StreamJoin {
    /// The join.
    pub op: Box<dyn super::interval_join::JoinOperator>,
    /// Stream column (per branch: left, right) whose watermark releases the join's state.
    pub time_col: [usize; 2],
    /// Output time columns and how far behind the join's watermark their watermark is (ns).
    pub out_time: Vec<(usize, i64)>,
}

/// A compiled view or insert.
pub struct PipelineExec {
    /// View or sink name.
    pub name: String,
    /// Inputs.
    pub branches: Vec<Branch>,
    /// Windowed aggregation, if the query has a `GROUP BY`.
    pub window: Option<Windowed>,
    /// A join of its two inputs within a time bound.
    pub join: Option<StreamJoin>,
    /// Steps after the aggregation (or after the union of the branches).
    pub post: Chain,
    /// Output schema.
    pub schema: SchemaRef,
    /// Where rows go.
    pub target: Target,
    /// For stateless pipelines, output time columns: `(pre column, output column)`.
    pub out_time: Vec<(usize, usize)>,
    /// Rows in and out, windows, late rows, failed rows and batches.
    pub telemetry: Arc<PipelineTelemetry>,
    /// Where rows that cannot be evaluated are written, if anywhere.
    pub dead_letters: Option<Arc<RowDeadLetters>>,
    /// Its window state budget and policy.
    pub budget: StateBudget,
    /// A hash of its plan: a checkpoint's state is restored only into the same plan.
    pub fingerprint: u64,
}

/// Which budget a pipeline's state reached.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    /// Its own `max_state_bytes`.
    Own(usize),
    /// The process's `--max-state-bytes`.
    Process(usize),
}

impl Budget {
    fn name(self) -> &'static str {
        match self {
            Budget::Own(_) => "max_state_bytes",
            Budget::Process(_) => "--max-state-bytes",
        }
    }

    fn limit(self) -> usize {
        match self {
            Budget::Own(l) | Budget::Process(l) => l,
        }
    }
}

impl PipelineExec {
    /// Feeds `batch` from input branch `branch`; returns rows ready for the target.
    pub fn process(&mut self, branch: usize, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        if self.budget.failed {
            return Ok(vec![]);
        }
        self.telemetry.rows_in(batch.num_rows() as u64);
        let mut failed = Vec::new();
        let pre = self.branches[branch].apply(batch, &mut failed);
        let out = match (pre, &mut self.window) {
            (Err(e), _) => Err(e),
            (Ok(pre), Some(w)) => w.op.process(&pre).map(|p| {
                self.telemetry.late(p.late);
                self.telemetry.refused(p.refused);
                failed.extend(p.failed);
                vec![]
            }),
            (Ok(pre), None) => match &mut self.join {
                Some(j) => match j.op.process(branch, &pre) {
                    Ok(p) => {
                        self.telemetry.late(p.late);
                        self.post_process(p.out.into_iter().collect(), &mut failed)
                    }
                    Err(e) => Err(e),
                },
                None => self.post_process(vec![pre], &mut failed),
            },
        };
        self.report(failed);
        self.count_unmatched();
        let out = out?;
        if self.window.is_some() {
            return self.keep_own_budget();
        }
        Ok(out)
    }

    /// Drops every state it holds (window state, running statistics).
    pub fn clear_state(&mut self) {
        if let Some(w) = &mut self.window {
            let _ = w.op.finish(false);
        }
        if let Some(j) = &mut self.join {
            j.op.clear();
        }
        self.post.clear_held();
        let steps = self
            .branches
            .iter_mut()
            .flat_map(|b| b.chain.running_mut())
            .chain(self.post.running_mut());
        for step in steps {
            step.clear();
        }
    }

    /// Bytes of window (or join) state held now.
    pub fn state_bytes(&self) -> usize {
        self.window.as_ref().map_or(0, |w| w.op.state_bytes())
            + self.join.as_ref().map_or(0, |j| j.op.state_bytes())
    }

    /// Sets the state metrics on the dataflow's tick: its open windows and groups, and its
    /// bytes for pipelines no budget applies to (the others measure them after each batch).
    pub fn record_state_bytes(&self) {
        if let Some(j) = &self.join {
            self.telemetry.extent(0, j.op.state_rows());
            self.telemetry.state_bytes(j.op.state_bytes());
        }
        let Some(w) = &self.window else { return };
        let extent = w.op.extent();
        self.telemetry.extent(extent.windows, extent.groups);
        if !self.budget.measured {
            self.telemetry.state_bytes(w.op.state_bytes());
        }
    }

    /// Measures the state after a batch (when a budget applies) and applies the policy if it
    /// is over the pipeline's own budget; returns rows of windows emitted early.
    fn keep_own_budget(&mut self) -> Result<Vec<RecordBatch>> {
        if !self.budget.measured {
            return Ok(vec![]);
        }
        let bytes = self.state_bytes();
        self.telemetry.state_bytes(bytes);
        let Some(limit) = self.budget.max_bytes else {
            return Ok(vec![]);
        };
        if bytes > limit {
            let free = bytes - resume_below(limit);
            return self.over_budget(bytes, Budget::Own(limit), free);
        }
        self.resume_if_under(bytes);
        Ok(vec![])
    }

    /// Takes new keys again once the state is under 90% of the pipeline's own budget.
    fn resume_if_under(&mut self, bytes: usize) {
        if let Some(limit) = self.budget.max_bytes
            && self.budget.refusing_own
            && bytes < resume_below(limit)
        {
            self.budget.refusing_own = false;
            self.sync_refusing();
        }
    }

    /// The process is over its budget `limit` and this pipeline is asked to free `free`
    /// bytes of state (or to stop growing); returns rows of windows emitted early.
    pub fn shed(&mut self, limit: usize, free: usize) -> Result<Vec<RecordBatch>> {
        if self.budget.failed || self.window.is_none() {
            return Ok(vec![]);
        }
        let bytes = self.state_bytes();
        self.over_budget(bytes, Budget::Process(limit), free)
    }

    /// The process is back under its budget: rows of new keys are taken again (unless the
    /// pipeline's own budget still refuses them).
    pub fn process_budget_cleared(&mut self) {
        if self.budget.refusing_process {
            self.budget.refusing_process = false;
            self.sync_refusing();
        }
    }

    fn sync_refusing(&mut self) {
        let refuse = self.budget.refusing();
        if let Some(w) = &mut self.window {
            w.op.refuse_new_keys(refuse);
        }
    }

    /// Applies the state policy: state of `bytes` reached `budget`; `emit_early` frees at
    /// least `free` bytes (or everything it holds).
    fn over_budget(
        &mut self,
        bytes: usize,
        budget: Budget,
        free: usize,
    ) -> Result<Vec<RecordBatch>> {
        let limit = budget.limit();
        match self.budget.policy {
            StatePolicy::EmitEarly => {
                let Some(w) = &mut self.window else {
                    return Ok(vec![]);
                };
                let emitted = w.op.flush_oldest(free)?;
                let after = w.op.state_bytes();
                self.telemetry
                    .emitted_early(emitted.early, bytes, budget.name(), limit);
                self.telemetry.state_bytes(after);
                self.emit(emitted)
            }
            StatePolicy::DropNewKeys => {
                let already = self.budget.refusing();
                match budget {
                    Budget::Own(_) => self.budget.refusing_own = true,
                    Budget::Process(_) => self.budget.refusing_process = true,
                }
                if !already {
                    self.telemetry
                        .refusing_new_keys(bytes, budget.name(), limit);
                    self.sync_refusing();
                }
                Ok(vec![])
            }
            StatePolicy::Fail => {
                self.budget.failed = true;
                if let Some(w) = &mut self.window {
                    w.op.finish(false)?;
                }
                self.telemetry.state_bytes(0);
                self.telemetry.state_failed();
                Err(datafusion::common::DataFusionError::ResourcesExhausted(
                    format!(
                        "window state of {bytes} bytes reached {} ({limit} bytes): state_policy 'fail' stops this pipeline; its open windows are dropped, the other pipelines go on",
                        budget.name()
                    ),
                ))
            }
        }
    }

    /// Counts the stream rows that joins with reference tables dropped for want of a match.
    fn count_unmatched(&mut self) {
        let n: u64 = self
            .branches
            .iter_mut()
            .map(|b| b.chain.take_unmatched())
            .sum::<u64>()
            + self.post.take_unmatched();
        self.telemetry.join_unmatched(n);
    }

    /// Counts (and logs, and dead-letters) rows that could not be evaluated.
    fn report(&self, failed: Vec<RowFailure>) {
        for f in failed {
            self.telemetry.row_failed(f.reason, &f.message);
            if let Some(d) = &self.dead_letters {
                d.row(&self.name, &f);
            }
        }
    }

    /// The watermark of the windows reached `w`: emits what closed.
    pub fn advance(&mut self, w: i64) -> Result<Vec<RecordBatch>> {
        let mut out = self.advance_operator(w)?;
        out.extend(self.release_held(Some(w))?);
        Ok(out)
    }

    /// The window or join operator reached watermark `w`: the rows it completes.
    fn advance_operator(&mut self, w: i64) -> Result<Vec<RecordBatch>> {
        if let Some(j) = &mut self.join {
            let done = j.op.advance(w)?;
            let mut failed = Vec::new();
            let out = self.post_process(done.into_iter().collect(), &mut failed);
            self.report(failed);
            self.count_unmatched();
            return out;
        }
        match &mut self.window {
            Some(win) => {
                let mut out = win.op.advance(w)?;
                if let Some(f) = &mut win.fill {
                    out.batches = f.fill_in(std::mem::take(&mut out.batches), w)?;
                }
                self.emit(out)
            }
            None => Ok(vec![]),
        }
    }

    /// Rows the steps after the operator held (`interpolate`) and let out now that the
    /// watermark reached `w` (`None`: the input ended).
    fn release_held(&mut self, w: Option<i64>) -> Result<Vec<RecordBatch>> {
        let mut failed = Vec::new();
        let released = self.post.release(w, &mut failed);
        self.report(failed);
        let mut out = Vec::new();
        for b in released? {
            if b.num_rows() > 0 {
                self.telemetry.rows_out(b.num_rows() as u64);
                out.push(conform(&self.schema, b)?);
            }
        }
        Ok(out)
    }

    /// End of every input: emits (or drops) open windows.
    pub fn finish(&mut self, emit: bool) -> Result<Vec<RecordBatch>> {
        let mut out = self.finish_operator(emit)?;
        if emit {
            out.extend(self.release_held(None)?);
        } else {
            self.post.clear_held();
        }
        Ok(out)
    }

    /// The window or join operator at the end of the input: what it still emits.
    fn finish_operator(&mut self, emit: bool) -> Result<Vec<RecordBatch>> {
        if let Some(j) = &mut self.join {
            // the inputs ended: rows waiting for the watermark leave (or are dropped)
            let done = if emit { j.op.advance(i64::MAX)? } else { None };
            j.op.clear();
            let mut failed = Vec::new();
            let out = self.post_process(done.into_iter().collect(), &mut failed);
            self.report(failed);
            return out;
        }
        match &mut self.window {
            Some(win) => {
                let mut out = win.op.finish(emit)?;
                if let Some(f) = &mut win.fill {
                    // up to the end of the last window emitted
                    if let Some(upto) = f.last_end(&out.batches) {
                        out.batches = f.fill_in(std::mem::take(&mut out.batches), upto)?;
                    }
                }
                self.emit(out)
            }
            None => Ok(vec![]),
        }
    }

    /// Rows of closed windows: counted, run through the steps after the aggregation, and
    /// timed against the wall clock.
    fn emit(&mut self, emitted: Emitted) -> Result<Vec<RecordBatch>> {
        self.telemetry.windows_emitted(emitted.windows);
        if self.budget.measured && emitted.windows > 0 {
            let bytes = self.state_bytes();
            self.telemetry.state_bytes(bytes);
            self.resume_if_under(bytes);
        }
        let mut failed = Vec::new();
        let out = self.post_process(emitted.batches, &mut failed);
        self.report(failed);
        self.count_unmatched();
        let out = out?;
        if let Some(col) = self.window.as_ref().and_then(|w| w.out_end) {
            let now = crate::clock::now_nanos();
            for b in &out {
                let ends = b.column(col).as_primitive_opt::<TimestampNanosecondType>();
                if let Some(end) = ends.and_then(arrow::compute::min) {
                    self.telemetry
                        .emit_delay(now.saturating_sub(end).max(0) as f64 / 1e9);
                }
            }
        }
        Ok(out)
    }

    fn post_process(
        &mut self,
        batches: Vec<RecordBatch>,
        failed: &mut Vec<RowFailure>,
    ) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::with_capacity(batches.len());
        for b in batches {
            let b = self.post.apply(b, failed)?;
            if b.num_rows() > 0 {
                self.telemetry.rows_out(b.num_rows() as u64);
                out.push(conform(&self.schema, b)?);
            }
        }
        Ok(out)
    }
}

/// Gives `batch` the pipeline's declared schema (field names and nullability as planned).
fn conform(schema: &SchemaRef, batch: RecordBatch) -> Result<RecordBatch> {
    if batch.schema().fields().len() == schema.fields().len()
        && batch.columns().iter().zip(schema.fields()).all(|(c, f)| {
            c.data_type() == f.data_type() && (f.is_nullable() || c.null_count() == 0)
        })
    {
        Ok(RecordBatch::try_new(
            Arc::clone(schema),
            batch.columns().to_vec(),
        )?)
    } else {
        Ok(batch)
    }
}
