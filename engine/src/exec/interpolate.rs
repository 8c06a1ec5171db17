//! `interpolate(value, time, max_gap) OVER (PARTITION BY key ORDER BY time)` in a stream:
//! a row whose value is null after a known value of its key is held until the key's next
//! known value arrives, then leaves with the straight line between the two (or null when
//! they are more than `max_gap` apart). Held rows also leave, with null, once the watermark
//! passes the last known value by `max_gap`: no value can come in time. Rows of a gap thus
//! leave up to `max_gap` (plus the watermark delay) late, and the pipeline's output
//! watermark is held back by `max_gap` so that readers do not count them as late.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::row::{RowConverter, SortField};
use datafusion::common::Result;
use datafusion::physical_expr::PhysicalExpr;
use weir_udf::across_windows::values_f64;
use weir_udf::interpolate::{linear, times_ns};

/// The rows of one key.
#[derive(Default)]
struct Key {
    /// The last known value and its time.
    last: Option<(i64, f64)>,
    /// Rows waiting for the next known value: their time and the row.
    held: Vec<(i64, RecordBatch)>,
}

/// The interpolation step.
pub struct Interpolating {
    partition: Vec<Arc<dyn PhysicalExpr>>,
    order: Option<Arc<dyn PhysicalExpr>>,
    value: Arc<dyn PhysicalExpr>,
    time: Arc<dyn PhysicalExpr>,
    max_gap: i64,
    converter: RowConverter,
    keys: HashMap<Vec<u8>, Key>,
    schema: SchemaRef,
}

impl std::fmt::Debug for Interpolating {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interpolating")
            .field("max_gap", &self.max_gap)
            .finish()
    }
}

impl Interpolating {
    /// The step: `value` at `time` per `partition` key, gaps of at most `max_gap` ns filled,
    /// rows of a batch taken in `order`; `schema`: its input's columns and the result.
    pub fn new(
        partition: Vec<Arc<dyn PhysicalExpr>>,
        partition_types: Vec<DataType>,
        order: Option<Arc<dyn PhysicalExpr>>,
        value: Arc<dyn PhysicalExpr>,
        time: Arc<dyn PhysicalExpr>,
        max_gap: i64,
        schema: SchemaRef,
    ) -> Result<Self> {
        Ok(Self {
            partition,
            order,
            value,
            time,
            max_gap,
            converter: RowConverter::new(
                partition_types.into_iter().map(SortField::new).collect(),
            )?,
            keys: HashMap::new(),
            schema,
        })
    }

    /// How far behind the watermark the rows it lets out may be (ns).
    pub fn max_gap(&self) -> i64 {
        self.max_gap
    }

    /// Input columns its expressions read.
    pub fn exprs(&self) -> impl Iterator<Item = &Arc<dyn PhysicalExpr>> {
        self.partition
            .iter()
            .chain(self.order.iter())
            .chain([&self.value, &self.time])
    }

    /// The rows of `batch` that can leave now (with the rows they release), result appended.
    pub fn apply(&mut self, batch: &RecordBatch) -> Result<RecordBatch> {
        let n = batch.num_rows();
        let eval = |e: &Arc<dyn PhysicalExpr>| e.evaluate(batch)?.into_array(n);
        let keys: Vec<ArrayRef> = self.partition.iter().map(eval).collect::<Result<_>>()?;
        let rows = self.converter.convert_columns(&keys)?;
        let values = values_f64(&eval(&self.value)?)?;
        let times = times_ns(&eval(&self.time)?)?;
        let mut order: Vec<usize> = (0..n).collect();
        if let Some(o) = &self.order {
            let o = times_ns(&eval(o)?)?;
            order.sort_by_key(|&i| o[i]);
        }
        let mut out = Vec::new();
        for i in order {
            let row = batch.slice(i, 1);
            let key = self.keys.entry(rows.row(i).as_ref().to_vec()).or_default();
            match (values[i], times[i]) {
                (Some(v), Some(t)) => {
                    release(key, Some((t, v)), self.max_gap, &mut out);
                    key.last = Some((t, v));
                    out.push((row, Some(v)));
                }
                (None, Some(t)) if key.last.is_some() => key.held.push((t, row)),
                (x, _) => out.push((row, x)),
            }
        }
        self.assemble(out)
    }

    /// Rows whose key's last known value the watermark `w` passed by more than `max_gap`:
    /// they leave with null.
    pub fn release_until(&mut self, w: i64) -> Result<Option<RecordBatch>> {
        let mut out = Vec::new();
        for key in self.keys.values_mut() {
            if key
                .last
                .is_some_and(|(t0, _)| t0.saturating_add(self.max_gap) < w)
            {
                release(key, None, self.max_gap, &mut out);
            }
        }
        self.keys
            .retain(|_, k| !k.held.is_empty() || k.last.is_some());
        (!out.is_empty()).then(|| self.assemble(out)).transpose()
    }

    /// Every held row leaves (the input ended): no value follows their gap.
    pub fn release_all(&mut self) -> Result<Option<RecordBatch>> {
        self.release_until(i64::MAX)
    }

    /// Its state, for a checkpoint: per key its partition columns (`k0`, ...) and last known
    /// value (`last_time`, `last_value`), and the rows it holds; `None` without keys.
    pub fn snapshot(&self) -> Result<Option<(RecordBatch, Option<RecordBatch>)>> {
        if self.keys.is_empty() {
            return Ok(None);
        }
        let entries: Vec<(&Vec<u8>, &Key)> = self.keys.iter().collect();
        let mut cols =
            super::running::key_state_columns(&self.converter, entries.iter().map(|(k, _)| *k))?;
        let times: arrow::array::Int64Array =
            entries.iter().map(|(_, k)| k.last.map(|l| l.0)).collect();
        let values: Float64Array = entries.iter().map(|(_, k)| k.last.map(|l| l.1)).collect();
        cols.push(("last_time".into(), Arc::new(times)));
        cols.push(("last_value".into(), Arc::new(values)));
        let state = crate::exec::window::state::state_batch(cols, entries.len())?;
        let held: Vec<RecordBatch> = entries
            .iter()
            .flat_map(|(_, k)| k.held.iter().map(|(_, r)| r.clone()))
            .collect();
        let held = match held.first() {
            Some(first) => Some(concat_batches(&first.schema(), &held)?),
            None => None,
        };
        Ok(Some((state, held)))
    }

    /// Takes back the state [`Interpolating::snapshot`] took from the same step.
    pub fn restore(&mut self, state: &RecordBatch, held: Option<&RecordBatch>) -> Result<()> {
        use arrow::array::AsArray;
        use arrow::datatypes::{Float64Type, Int64Type};
        let k = self.partition.len();
        if state.num_columns() != k + 2 {
            return datafusion::common::exec_err!(
                "checkpointed interpolate state has {} columns, the plan needs {}",
                state.num_columns(),
                k + 2
            );
        }
        let rows = self.converter.convert_columns(&state.columns()[..k])?;
        let bad = || {
            datafusion::common::DataFusionError::Execution(
                "checkpointed interpolate state has columns of the wrong type".into(),
            )
        };
        let times = state
            .column(k)
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(bad)?;
        let values = state
            .column(k + 1)
            .as_primitive_opt::<Float64Type>()
            .ok_or_else(bad)?;
        self.keys.clear();
        for i in 0..state.num_rows() {
            let last = (times.is_valid(i) && values.is_valid(i))
                .then(|| (times.value(i), values.value(i)));
            self.keys.insert(
                rows.row(i).as_ref().to_vec(),
                Key {
                    last,
                    held: Vec::new(),
                },
            );
        }
        if let Some(h) = held {
            // held rows are null after a known value: applying them holds them again
            let out = self.apply(h)?;
            debug_assert_eq!(out.num_rows(), 0);
        }
        Ok(())
    }

    /// Forgets every key.
    pub fn clear(&mut self) {
        self.keys.clear();
    }

    fn assemble(&self, out: Vec<(RecordBatch, Option<f64>)>) -> Result<RecordBatch> {
        let input = Arc::new(arrow::datatypes::Schema::new(
            self.schema.fields()[..self.schema.fields().len() - 1].to_vec(),
        ));
        let parts: Vec<RecordBatch> = out.iter().map(|(r, _)| r.clone()).collect();
        let rows = if parts.is_empty() {
            RecordBatch::new_empty(Arc::clone(&input))
        } else {
            concat_batches(&parts[0].schema(), &parts)?
        };
        let ys: Float64Array = out.iter().map(|(_, y)| *y).collect();
        let mut cols = rows.columns().to_vec();
        cols.push(Arc::new(ys));
        debug_assert!(cols.iter().all(|c| c.len() == out.len()));
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), cols)?)
    }
}

/// Lets the held rows of `key` out: on the line to `next` when it is within `max_gap` of the
/// last known value, else null.
fn release(
    key: &mut Key,
    next: Option<(i64, f64)>,
    max_gap: i64,
    out: &mut Vec<(RecordBatch, Option<f64>)>,
) {
    let line = key
        .last
        .zip(next)
        .filter(|((t0, _), (t1, _))| t1 - t0 <= max_gap);
    for (t, row) in key.held.drain(..) {
        out.push((
            row,
            line.map(|((t0, v0), (t1, v1))| linear(t0, v0, t1, v1, t)),
        ));
    }
}
