//! One compiled view or insert: input branches, an optional windowed aggregation, and the
//! stateless steps after it.

use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::{SchemaRef, TimestampNanosecondType};
use arrow::record_batch::RecordBatch;
use datafusion::common::Result;

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
}

/// A compiled view or insert.
pub struct PipelineExec {
    /// View or sink name.
    pub name: String,
    /// Inputs.
    pub branches: Vec<Branch>,
    /// Windowed aggregation, if the query has a `GROUP BY`.
    pub window: Option<Windowed>,
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
}

impl PipelineExec {
    /// Feeds `batch` from input branch `branch`; returns rows ready for the target.
    pub fn process(&mut self, branch: usize, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        self.telemetry.rows_in(batch.num_rows() as u64);
        let mut failed = Vec::new();
        let pre = self.branches[branch].apply(batch, &mut failed);
        let out = match (pre, &mut self.window) {
            (Err(e), _) => Err(e),
            (Ok(pre), Some(w)) => w.op.process(&pre).map(|p| {
                self.telemetry.late(p.late);
                failed.extend(p.failed);
                vec![]
            }),
            (Ok(pre), None) => self.post_process(vec![pre], &mut failed),
        };
        self.report(failed);
        out
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
        match &mut self.window {
            Some(win) => {
                let out = win.op.advance(w)?;
                self.emit(out)
            }
            None => Ok(vec![]),
        }
    }

    /// End of every input: emits (or drops) open windows.
    pub fn finish(&mut self, emit: bool) -> Result<Vec<RecordBatch>> {
        match &mut self.window {
            Some(win) => {
                let out = win.op.finish(emit)?;
                self.emit(out)
            }
            None => Ok(vec![]),
        }
    }

    /// Rows of closed windows: counted, run through the steps after the aggregation, and
    /// timed against the wall clock.
    fn emit(&mut self, emitted: Emitted) -> Result<Vec<RecordBatch>> {
        self.telemetry.windows_emitted(emitted.windows);
        let mut failed = Vec::new();
        let out = self.post_process(emitted.batches, &mut failed);
        self.report(failed);
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
