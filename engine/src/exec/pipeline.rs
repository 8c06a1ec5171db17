//! One compiled view or insert: input branches, an optional windowed aggregation, and the
//! stateless steps after it.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::Result;

use super::aggregate::{WindowOperator, WindowStats};
use super::assign::WindowAssign;
use super::chain::Chain;

/// Where a pipeline's rows go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A view's stream, read by other pipelines.
    Stream(usize),
    /// A sink.
    Sink(usize),
}

/// One input of a pipeline (several with `UNION ALL`).
#[derive(Debug)]
pub struct Branch {
    /// The stream read.
    pub stream: usize,
    /// Window columns added first, for a window table function.
    pub assign: Option<WindowAssign>,
    /// Stateless steps up to the aggregation (or to the output).
    pub chain: Chain,
    /// Time columns of the stream that the window (or the output) follows: `(stream column,
    /// pre-aggregate column)`.
    pub time_cols: Vec<(usize, usize)>,
}

impl Branch {
    /// Runs the branch's window assignment and stateless steps.
    pub fn apply(&mut self, batch: RecordBatch) -> Result<RecordBatch> {
        let batch = match &self.assign {
            Some(a) => a.apply(&batch)?,
            None => batch,
        };
        self.chain.apply(batch)
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
    /// Rows received.
    pub rows_in: u64,
    /// Rows produced.
    pub rows_out: u64,
    /// Batches dropped because evaluating them failed.
    pub errors: u64,
}

impl PipelineExec {
    /// Feeds `batch` from input branch `branch`; returns rows ready for the target.
    pub fn process(&mut self, branch: usize, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        self.rows_in += batch.num_rows() as u64;
        let pre = self.branches[branch].apply(batch)?;
        match &mut self.window {
            Some(w) => {
                w.op.process(&pre)?;
                Ok(vec![])
            }
            None => self.post_process(vec![pre]),
        }
    }

    /// The watermark of the windows reached `w`: emits what closed.
    pub fn advance(&mut self, w: i64) -> Result<Vec<RecordBatch>> {
        match &mut self.window {
            Some(win) => {
                let out = win.op.advance(w)?;
                self.post_process(out)
            }
            None => Ok(vec![]),
        }
    }

    /// End of every input: emits (or drops) open windows.
    pub fn finish(&mut self, emit: bool) -> Result<Vec<RecordBatch>> {
        match &mut self.window {
            Some(win) => {
                let out = win.op.finish(emit)?;
                self.post_process(out)
            }
            None => Ok(vec![]),
        }
    }

    fn post_process(&mut self, batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::with_capacity(batches.len());
        for b in batches {
            let b = self.post.apply(b)?;
            if b.num_rows() > 0 {
                self.rows_out += b.num_rows() as u64;
                out.push(conform(&self.schema, b)?);
            }
        }
        Ok(out)
    }

    /// Window counters (zero for stateless pipelines).
    pub fn window_stats(&self) -> WindowStats {
        self.window
            .as_ref()
            .map(|w| w.op.stats())
            .unwrap_or_default()
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
