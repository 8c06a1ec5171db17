//! Partial aggregate state per (window, group key), built from DataFusion's aggregate
//! expressions and accumulators, and the layout of the rows a window emits.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, TimestampNanosecondArray};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::Result;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::GroupsAccumulatorAdapter;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_plan::aggregates::group_values::{GroupValues, new_group_values};
use datafusion::physical_plan::aggregates::order::GroupOrdering;

use super::Processed;
use crate::exec::isolate::{RowFailure, culprit, isolate};

/// One aggregate of the query: the function, its argument expressions and its `FILTER`.
#[derive(Debug, Clone)]
pub struct AggSpec {
    /// DataFusion's aggregate expression.
    pub expr: Arc<AggregateFunctionExpr>,
    /// Arguments, followed by the `ORDER BY` expressions of order-sensitive aggregates.
    pub args: Vec<Arc<dyn PhysicalExpr>>,
    /// `FILTER (WHERE ...)`, if any.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
}

impl AggSpec {
    /// A fresh vectorized accumulator (DataFusion's own where it has one, else an adapter
    /// over the row accumulator).
    pub fn groups_accumulator(&self) -> Result<Box<dyn GroupsAccumulator>> {
        if self.expr.groups_accumulator_supported() {
            self.expr.create_groups_accumulator()
        } else {
            let expr = Arc::clone(&self.expr);
            Ok(Box::new(GroupsAccumulatorAdapter::new(move || {
                expr.create_accumulator()
            })))
        }
    }

    /// Evaluates the arguments and the filter over `batch`.
    pub fn inputs(&self, batch: &RecordBatch) -> Result<AggInputs> {
        let n = batch.num_rows();
        let args = self
            .args
            .iter()
            .map(|e| e.evaluate(batch)?.into_array(n))
            .collect::<Result<Vec<_>>>()?;
        let filter = match &self.filter {
            Some(f) => Some(f.evaluate(batch)?.into_array(n)?.as_boolean().clone()),
            None => None,
        };
        Ok(AggInputs { args, filter })
    }
}

/// Evaluated inputs of one aggregate for one batch.
#[derive(Debug, Clone)]
pub struct AggInputs {
    /// Argument columns.
    pub args: Vec<ArrayRef>,
    /// Filter mask.
    pub filter: Option<BooleanArray>,
}

impl AggInputs {
    /// The rows at `indices`.
    pub fn take(&self, indices: &arrow::array::UInt32Array) -> Result<AggInputs> {
        let args = self
            .args
            .iter()
            .map(|a| arrow::compute::take(a.as_ref(), indices, None))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let filter = match &self.filter {
            Some(f) => Some(arrow::compute::take(f, indices, None)?.as_boolean().clone()),
            None => None,
        };
        Ok(AggInputs { args, filter })
    }
}

/// Maps group-key rows to dense group ids.
pub enum KeyInterner {
    /// `GROUP BY` only the window: every row is group 0.
    NoKeys {
        /// Whether group 0 exists yet.
        seen: bool,
    },
    /// DataFusion's specialized group-value table.
    Values(Box<dyn GroupValues>),
}

impl KeyInterner {
    /// An empty interner for keys of `schema`.
    pub fn new(schema: &SchemaRef) -> Result<Self> {
        if schema.fields().is_empty() {
            Ok(KeyInterner::NoKeys { seen: false })
        } else {
            Ok(KeyInterner::Values(new_group_values(
                Arc::clone(schema),
                &GroupOrdering::None,
            )?))
        }
    }

    /// Group ids for `rows` rows of `keys`.
    pub fn intern(&mut self, keys: &[ArrayRef], rows: usize, out: &mut Vec<usize>) -> Result<()> {
        match self {
            KeyInterner::NoKeys { seen } => {
                out.clear();
                out.resize(rows, 0);
                *seen |= rows > 0;
                Ok(())
            }
            KeyInterner::Values(gv) => gv.intern(keys, out),
        }
    }

    /// Number of groups.
    pub fn len(&self) -> usize {
        match self {
            KeyInterner::NoKeys { seen } => usize::from(*seen),
            KeyInterner::Values(gv) => gv.len(),
        }
    }

    /// True when no group exists.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes every group's key values out.
    pub fn emit(&mut self) -> Result<Vec<ArrayRef>> {
        match self {
            KeyInterner::NoKeys { seen } => {
                *seen = false;
                Ok(vec![])
            }
            KeyInterner::Values(gv) => gv.emit(EmitTo::All),
        }
    }
}

/// Accumulating state of one pane or window: group keys and one accumulator per aggregate.
pub struct LiveGroups {
    keys: KeyInterner,
    accs: Vec<Box<dyn GroupsAccumulator>>,
}

/// Sealed partial state: group keys and, per aggregate, its state columns.
pub struct StateChunk {
    keys: Vec<ArrayRef>,
    states: Vec<Vec<ArrayRef>>,
    rows: usize,
}

impl LiveGroups {
    /// Empty state for `aggs` grouped by keys of `key_schema`.
    pub fn new(key_schema: &SchemaRef, aggs: &[AggSpec]) -> Result<Self> {
        Ok(Self {
            keys: KeyInterner::new(key_schema)?,
            accs: aggs
                .iter()
                .map(AggSpec::groups_accumulator)
                .collect::<Result<_>>()?,
        })
    }

    /// True when no row was added.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Number of groups.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Adds rows: their keys and the evaluated inputs of each aggregate.
    pub fn update(
        &mut self,
        keys: &[ArrayRef],
        rows: usize,
        inputs: &[AggInputs],
        groups: &mut Vec<usize>,
    ) -> Result<()> {
        self.keys.intern(keys, rows, groups)?;
        let total = self.keys.len();
        for (acc, input) in self.accs.iter_mut().zip(inputs) {
            acc.update_batch(&input.args, groups, input.filter.as_ref(), total)?;
        }
        Ok(())
    }

    /// Merges a sealed chunk of partial state.
    pub fn merge(&mut self, chunk: &StateChunk, groups: &mut Vec<usize>) -> Result<()> {
        self.keys.intern(&chunk.keys, chunk.rows, groups)?;
        let total = self.keys.len();
        for (acc, state) in self.accs.iter_mut().zip(&chunk.states) {
            acc.merge_batch(state, groups, total)?;
        }
        Ok(())
    }

    /// Turns the state into a sealed chunk.
    pub fn seal(mut self) -> Result<StateChunk> {
        let rows = self.keys.len();
        let keys = self.keys.emit()?;
        let states = self
            .accs
            .iter_mut()
            .map(|a| a.state(EmitTo::All))
            .collect::<Result<_>>()?;
        Ok(StateChunk { keys, states, rows })
    }

    /// The same state as a fresh accumulator set holding `chunk` (merged in).
    pub fn from_chunk(
        key_schema: &SchemaRef,
        aggs: &[AggSpec],
        chunk: &StateChunk,
    ) -> Result<Self> {
        let mut live = Self::new(key_schema, aggs)?;
        let mut groups = Vec::new();
        live.merge(chunk, &mut groups)?;
        Ok(live)
    }

    /// Every group's key values, in group id order; the groups keep their ids.
    pub fn keys_snapshot(&mut self) -> Result<(Vec<ArrayRef>, usize)> {
        let rows = self.keys.len();
        let keys = self.keys.emit()?;
        let mut ids = Vec::with_capacity(rows);
        self.keys.intern(&keys, rows, &mut ids)?;
        debug_assert!(ids.iter().enumerate().all(|(i, g)| i == *g));
        Ok((keys, rows))
    }

    /// Final values: key columns and one column per aggregate.
    pub fn evaluate(mut self) -> Result<(usize, Vec<ArrayRef>, Vec<ArrayRef>)> {
        let rows = self.keys.len();
        let keys = self.keys.emit()?;
        let values = self
            .accs
            .iter_mut()
            .map(|a| a.evaluate(EmitTo::All))
            .collect::<Result<_>>()?;
        Ok((rows, keys, values))
    }

    /// Approximate bytes held.
    pub fn size(&self) -> usize {
        let keys = match &self.keys {
            KeyInterner::NoKeys { .. } => 0,
            KeyInterner::Values(gv) => gv.size(),
        };
        keys + self.accs.iter().map(|a| a.size()).sum::<usize>()
    }
}

impl StateChunk {
    /// Columns for a checkpoint: the keys (`k0`, `k1`, ...), then each aggregate's state
    /// columns (`s0_0`, `s0_1`, `s1_0`, ...); fields nullable.
    pub fn columns(&self) -> Vec<(String, ArrayRef)> {
        let keys = self
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| (format!("k{i}"), Arc::clone(k)));
        let states = self.states.iter().enumerate().flat_map(|(a, cols)| {
            cols.iter()
                .enumerate()
                .map(move |(j, c)| (format!("s{a}_{j}"), Arc::clone(c)))
        });
        keys.chain(states).collect()
    }

    /// How many state columns each aggregate has.
    pub fn widths(&self) -> Vec<usize> {
        self.states.iter().map(Vec::len).collect()
    }

    /// A chunk of `rows` rows from columns laid out as [`StateChunk::columns`] makes them:
    /// `keys` key columns, then `widths[a]` state columns per aggregate.
    pub fn from_columns(
        cols: &[ArrayRef],
        keys: usize,
        widths: &[usize],
        rows: usize,
    ) -> Result<Self> {
        let needed = keys + widths.iter().sum::<usize>();
        if cols.len() != needed {
            return datafusion::common::internal_err!(
                "checkpointed window state has {} columns, the plan needs {needed}",
                cols.len()
            );
        }
        let mut rest = cols[keys..].iter();
        let states = widths
            .iter()
            .map(|w| rest.by_ref().take(*w).cloned().collect())
            .collect();
        Ok(Self {
            keys: cols[..keys].to_vec(),
            states,
            rows,
        })
    }

    /// Its group keys.
    pub fn keys(&self) -> &[ArrayRef] {
        &self.keys
    }

    /// Number of groups.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Approximate bytes held.
    pub fn size(&self) -> usize {
        self.keys
            .iter()
            .map(|a| a.get_array_memory_size())
            .sum::<usize>()
            + self
                .states
                .iter()
                .flatten()
                .map(|a| a.get_array_memory_size())
                .sum::<usize>()
    }
}

/// A batch of state columns for a checkpoint, every field nullable.
pub fn state_batch(columns: Vec<(String, ArrayRef)>, rows: usize) -> Result<RecordBatch> {
    let fields: Vec<arrow::datatypes::Field> = columns
        .iter()
        .map(|(n, c)| arrow::datatypes::Field::new(n, c.data_type().clone(), true))
        .collect();
    Ok(RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        columns.into_iter().map(|(_, c)| c).collect(),
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )?)
}

/// Where each column of the aggregate's output comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupSlot {
    /// `window_start`.
    WindowStart,
    /// `window_end`.
    WindowEnd,
    /// The i-th group key expression.
    Key(usize),
}

/// Builds output batches in the column order of DataFusion's aggregate: group expressions,
/// then aggregates.
#[derive(Debug, Clone)]
pub struct OutputLayout {
    /// One slot per group expression.
    pub slots: Vec<GroupSlot>,
    /// The aggregate's output schema.
    pub schema: SchemaRef,
    /// Which aggregate is `window_partial()`, if the query selects it.
    pub partial: Option<usize>,
}

impl OutputLayout {
    /// The timezone of the window columns, if any.
    fn window_tz(&self) -> Option<Arc<str>> {
        self.slots
            .iter()
            .position(|s| matches!(s, GroupSlot::WindowStart | GroupSlot::WindowEnd))
            .and_then(|i| match self.schema.field(i).data_type() {
                DataType::Timestamp(_, tz) => tz.clone(),
                _ => None,
            })
    }

    /// A batch of `rows` rows with the given window bounds, keys and aggregate values;
    /// `partial` is what `window_partial()` says for them.
    pub fn build(
        &self,
        rows: usize,
        starts: Vec<i64>,
        ends: Vec<i64>,
        keys: Vec<ArrayRef>,
        mut values: Vec<ArrayRef>,
        partial: bool,
    ) -> Result<RecordBatch> {
        if let Some(v) = self.partial.and_then(|i| values.get_mut(i)) {
            *v = Arc::new(BooleanArray::from(vec![partial; rows]));
        }
        let tz = self.window_tz();
        let ts = |v: Vec<i64>| -> ArrayRef {
            Arc::new(TimestampNanosecondArray::from(v).with_timezone_opt(tz.clone()))
        };
        let (mut starts, mut ends) = (Some(starts), Some(ends));
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for slot in &self.slots {
            cols.push(match slot {
                GroupSlot::WindowStart => ts(starts.take().unwrap_or_default()),
                GroupSlot::WindowEnd => ts(ends.take().unwrap_or_default()),
                GroupSlot::Key(i) => Arc::clone(&keys[*i]),
            });
        }
        cols.extend(values);
        // DataFusion's declared nullability can be stricter than what accumulators return
        // for empty groups; build against a schema that accepts what we have.
        let schema = relax_nullability(&self.schema, &cols);
        Ok(RecordBatch::try_new_with_options(
            schema,
            cols,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?)
    }
}

/// `schema` with fields made nullable where the column holds nulls.
fn relax_nullability(schema: &SchemaRef, cols: &[ArrayRef]) -> SchemaRef {
    if schema
        .fields()
        .iter()
        .zip(cols)
        .all(|(f, c)| f.is_nullable() || c.null_count() == 0)
    {
        return Arc::clone(schema);
    }
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .zip(cols)
        .map(|(f, c)| {
            if !f.is_nullable() && c.null_count() > 0 {
                Arc::new(f.as_ref().clone().with_nullable(true))
            } else {
                Arc::clone(f)
            }
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// A part of a batch with its group keys and aggregate inputs evaluated.
pub struct Prepared {
    /// The rows.
    pub batch: RecordBatch,
    /// Their group keys.
    pub keys: Vec<ArrayRef>,
    /// Their aggregates' inputs.
    pub inputs: Vec<AggInputs>,
}

/// Evaluates the group keys and the aggregates' inputs over `batch` (nothing changes): the
/// whole batch, or, when an expression fails on some row, the parts of it that evaluate, the
/// failing rows set aside with the key or aggregate-input expression that failed named.
fn prepare(
    batch: &RecordBatch,
    key_exprs: &[Arc<dyn PhysicalExpr>],
    aggs: &[AggSpec],
) -> (Vec<Prepared>, Vec<RowFailure>) {
    let mut evaluate = |b: &RecordBatch| -> Result<Prepared> {
        Ok(Prepared {
            batch: b.clone(),
            keys: eval_keys(key_exprs, b)?,
            inputs: aggs.iter().map(|a| a.inputs(b)).collect::<Result<_>>()?,
        })
    };
    if let Ok(whole) = evaluate(batch) {
        return (vec![whole], vec![]);
    }
    let (parts, mut failed) = isolate(batch, &mut evaluate);
    for f in &mut failed {
        let exprs = key_exprs.iter().chain(
            aggs.iter()
                .flat_map(|a| a.args.iter().chain(a.filter.iter())),
        );
        if let Some(c) = culprit(exprs, &f.row) {
            f.message = c;
        }
    }
    (parts, failed)
}

/// Rows an operator did not take into its state.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Declined {
    /// Their window had been emitted.
    pub late: u64,
    /// Their key had no state and new keys were refused (the `drop_new_keys` policy).
    pub refused: u64,
}

impl std::ops::AddAssign for Declined {
    fn add_assign(&mut self, o: Self) {
        self.late += o.late;
        self.refused += o.refused;
    }
}

/// A window operator's way in: what it evaluates per row, and how it takes the evaluated rows.
pub trait Absorb {
    /// The group key expressions and the aggregates.
    fn expressions(&self) -> (&[Arc<dyn PhysicalExpr>], &[AggSpec]);
    /// Adds evaluated rows to the state; returns those it did not take.
    fn absorb(&mut self, part: Prepared) -> Result<Declined>;
}

/// [`WindowOperator::process`](super::WindowOperator::process) for every operator: the rows
/// that evaluate are absorbed, those that fail are returned.
pub fn process(op: &mut impl Absorb, batch: &RecordBatch) -> Result<Processed> {
    if batch.num_rows() == 0 {
        return Ok(Processed::default());
    }
    let (parts, failed) = {
        let (key_exprs, aggs) = op.expressions();
        prepare(batch, key_exprs, aggs)
    };
    let mut declined = Declined::default();
    for part in parts {
        declined += op.absorb(part)?;
    }
    Ok(Processed {
        late: declined.late,
        refused: declined.refused,
        failed,
    })
}

/// Evaluates the non-window group key expressions over `batch`.
pub fn eval_keys(exprs: &[Arc<dyn PhysicalExpr>], batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
    let n = batch.num_rows();
    exprs
        .iter()
        .map(|e| e.evaluate(batch)?.into_array(n))
        .collect()
}

/// The window-start (or event-time) column of a pre-aggregate batch as nanoseconds.
pub fn time_values(batch: &RecordBatch, col: usize) -> &[i64] {
    batch
        .column(col)
        .as_primitive::<arrow::datatypes::TimestampNanosecondType>()
        .values()
}
