//! Stateless per-batch steps (filter, projection, column selection) run as DataFusion
//! physical expressions.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray};
use arrow::compute::{concat_batches, filter_record_batch};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::Result;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;

use super::interpolate::Interpolating;
use super::isolate::{RowFailure, culprit, isolate};
use super::lookup::LookupJoin;
use super::running::KeyedRunning;

/// One step.
#[derive(Debug)]
pub enum Step {
    /// Keep the rows where the predicate is true.
    Filter(Arc<dyn PhysicalExpr>),
    /// Compute new columns.
    Project {
        /// One expression per output column.
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        /// The output schema.
        schema: SchemaRef,
    },
    /// Keep some input columns, by index.
    Select(Vec<usize>),
    /// Append running statistics per key (the one step with state across batches).
    Running(Box<KeyedRunning>),
    /// Join with a reference table.
    Lookup(Box<LookupJoin>),
    /// `interpolate(...)`: holds the rows of a gap until the value after it.
    Interpolate(Box<Interpolating>),
}

impl Step {
    /// The step over `batch`. On failure nothing has changed (a running statistic's state
    /// is updated only once every expression of the batch was evaluated).
    fn apply(&mut self, batch: &RecordBatch) -> Result<RecordBatch> {
        match self {
            Step::Filter(pred) => {
                let mask = pred.evaluate(batch)?.into_array(batch.num_rows())?;
                Ok(filter_record_batch(batch, mask.as_boolean())?)
            }
            Step::Project { exprs, schema } => {
                let n = batch.num_rows();
                let cols = exprs
                    .iter()
                    .map(|e| e.evaluate(batch)?.into_array(n))
                    .collect::<Result<Vec<ArrayRef>>>()?;
                Ok(RecordBatch::try_new_with_options(
                    Arc::clone(schema),
                    cols,
                    &RecordBatchOptions::new().with_row_count(Some(n)),
                )?)
            }
            Step::Select(idx) => Ok(batch.project(idx)?),
            Step::Running(r) => r.apply(batch.clone()),
            Step::Lookup(l) => l.apply(batch),
            Step::Interpolate(i) => i.apply(batch),
        }
    }

    /// The step over the parts of `batch` it can evaluate: the failing rows go to `failed`.
    fn apply_isolating(
        &mut self,
        batch: &RecordBatch,
        failed: &mut Vec<RowFailure>,
    ) -> Result<RecordBatch> {
        let (parts, mut bad) = isolate(batch, &mut |b| self.apply(b));
        for f in &mut bad {
            if let Some(c) = self.culprit(&f.row) {
                f.message = c;
            }
        }
        failed.extend(bad);
        let schema = match parts.first() {
            Some(p) => p.schema(),
            None => self.apply(&batch.slice(0, 0))?.schema(),
        };
        Ok(concat_batches(&schema, &parts)?)
    }

    /// The expression of this step that fails on `row`, for messages.
    fn culprit(&self, row: &RecordBatch) -> Option<String> {
        match self {
            Step::Filter(p) => culprit([p], row),
            Step::Project { exprs, .. } => culprit(exprs, row),
            Step::Select(_) => None,
            Step::Running(r) => culprit(r.exprs(), row),
            Step::Lookup(l) => culprit(l.stream_exprs(), row),
            Step::Interpolate(i) => culprit(i.exprs(), row),
        }
    }

    /// Where input column `col` is in this step's output, if it passes through unchanged.
    fn map(&self, col: usize) -> Option<usize> {
        match self {
            Step::Filter(_) | Step::Running(_) | Step::Interpolate(_) => Some(col),
            Step::Select(idx) => idx.iter().position(|&i| i == col),
            Step::Project { exprs, .. } => exprs
                .iter()
                .position(|e| e.downcast_ref::<Column>().is_some_and(|c| c.index() == col)),
            Step::Lookup(l) => Some(l.map(col)),
        }
    }

    /// True when this step computes with input column `col` (beyond passing it through).
    fn reads(&self, col: usize) -> bool {
        match self {
            Step::Filter(p) => expr_reads(p, col),
            Step::Project { exprs, .. } => exprs
                .iter()
                .any(|e| e.downcast_ref::<Column>().is_none() && expr_reads(e, col)),
            Step::Select(_) => false,
            Step::Running(r) => r.exprs().any(|e| expr_reads(e, col)),
            Step::Lookup(l) => l.reads(col),
            Step::Interpolate(i) => i.exprs().any(|e| expr_reads(e, col)),
        }
    }
}

/// A sequence of steps applied to each batch in turn.
#[derive(Debug, Default)]
pub struct Chain {
    steps: Vec<Step>,
}

impl Chain {
    /// A chain of `steps`, applied first to last.
    pub fn new(mut steps: Vec<Step>) -> Self {
        // a lookup join carries only the table columns a later step reads or lets out
        for k in 0..steps.len() {
            let (head, later) = steps.split_at_mut(k + 1);
            if let Step::Lookup(l) = &mut head[k] {
                l.carry_only(|col| follow(later, col) != Fate::Dropped);
            }
        }
        Self { steps }
    }

    /// Its steps, in order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Its steps with state across batches (`ewma`, `zscore`), in order.
    pub fn running(&self) -> impl Iterator<Item = &KeyedRunning> {
        self.steps.iter().filter_map(|s| match s {
            Step::Running(r) => Some(r.as_ref()),
            _ => None,
        })
    }

    /// The same, to restore them.
    pub fn running_mut(&mut self) -> impl Iterator<Item = &mut KeyedRunning> {
        self.steps.iter_mut().filter_map(|s| match s {
            Step::Running(r) => Some(r.as_mut()),
            _ => None,
        })
    }

    /// How far behind the watermark rows may leave it (ns): the widest `max_gap` of its
    /// `interpolate` steps (0 without).
    pub fn hold(&self) -> i64 {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::Interpolate(i) => Some(i.max_gap()),
                _ => None,
            })
            .sum()
    }

    /// Rows its `interpolate` steps let out because the watermark reached `w` (`None`: the
    /// input ended), through the steps after them.
    pub fn release(
        &mut self,
        w: Option<i64>,
        failed: &mut Vec<RowFailure>,
    ) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for i in 0..self.steps.len() {
            let Step::Interpolate(step) = &mut self.steps[i] else {
                continue;
            };
            let released = match w {
                Some(w) => step.release_until(w)?,
                None => step.release_all()?,
            };
            if let Some(mut b) = released {
                for later in &mut self.steps[i + 1..] {
                    if b.num_rows() == 0 {
                        break;
                    }
                    b = match later.apply(&b) {
                        Ok(b) => b,
                        Err(_) => later.apply_isolating(&b, failed)?,
                    };
                }
                out.push(b);
            }
        }
        Ok(out)
    }

    /// Its `interpolate` steps, in order.
    pub fn interpolations(&self) -> impl Iterator<Item = &Interpolating> {
        self.steps.iter().filter_map(|s| match s {
            Step::Interpolate(i) => Some(i.as_ref()),
            _ => None,
        })
    }

    /// The same, to restore them.
    pub fn interpolations_mut(&mut self) -> impl Iterator<Item = &mut Interpolating> {
        self.steps.iter_mut().filter_map(|s| match s {
            Step::Interpolate(i) => Some(i.as_mut()),
            _ => None,
        })
    }

    /// Forgets what its `interpolate` steps hold.
    pub fn clear_held(&mut self) {
        for s in &mut self.steps {
            if let Step::Interpolate(i) = s {
                i.clear();
            }
        }
    }

    /// Its joins with reference tables, in order.
    pub fn lookups(&self) -> impl Iterator<Item = &LookupJoin> {
        self.steps.iter().filter_map(|s| match s {
            Step::Lookup(l) => Some(l.as_ref()),
            _ => None,
        })
    }

    /// Stream rows its inner joins dropped for want of a match since the last call.
    pub fn take_unmatched(&mut self) -> u64 {
        self.steps
            .iter_mut()
            .map(|s| match s {
                Step::Lookup(l) => l.take_unmatched(),
                _ => 0,
            })
            .sum()
    }

    /// Runs every step over `batch`. Rows a step cannot evaluate are set aside into
    /// `failed` (with the expression that failed); the others go on.
    pub fn apply(
        &mut self,
        mut batch: RecordBatch,
        failed: &mut Vec<RowFailure>,
    ) -> Result<RecordBatch> {
        for step in &mut self.steps {
            if batch.num_rows() == 0 {
                break;
            }
            batch = match step.apply(&batch) {
                Ok(b) => b,
                Err(_) => step.apply_isolating(&batch, failed)?,
            };
        }
        Ok(batch)
    }

    /// Where input column `col` ends up in the output, if it passes through unchanged.
    pub fn map_column(&self, col: usize) -> Option<usize> {
        self.steps.iter().try_fold(col, |c, s| s.map(c))
    }

    /// True when some step reads input column `col` other than to pass it through.
    pub fn computes_with(&self, col: usize) -> bool {
        follow(&self.steps, col) == Fate::Read
    }
}

/// What `steps` do with an input column.
#[derive(Debug, PartialEq, Eq)]
enum Fate {
    /// A step computes with it.
    Read,
    /// It is passed through to the output unread.
    Output,
    /// A step drops it unread.
    Dropped,
}

/// What `steps` do with input column `col`.
fn follow(steps: &[Step], mut col: usize) -> Fate {
    for step in steps {
        if step.reads(col) {
            return Fate::Read;
        }
        match step.map(col) {
            Some(c) => col = c,
            None => return Fate::Dropped,
        }
    }
    Fate::Output
}

/// True when `e` reads column `col` anywhere.
pub fn expr_reads(e: &Arc<dyn PhysicalExpr>, col: usize) -> bool {
    if let Some(c) = e.downcast_ref::<Column>() {
        return c.index() == col;
    }
    e.children().iter().any(|c| expr_reads(c, col))
}
