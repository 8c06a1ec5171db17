//! Window functions over the stream of rows, per partition key, with state kept across
//! batches: `ewma(...) OVER (PARTITION BY ... ORDER BY ...)`, `zscore(...)` and `locf(...)`.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, ListArray};
use arrow::datatypes::{DataType, Float64Type, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use datafusion::common::Result;
use datafusion::physical_expr::PhysicalExpr;
use weir_udf::across_windows::{Running, RunningKind, parameter, values_f64};

/// Encoded partition keys back as columns `k0`, `k1`, ... (the start of a checkpointed state
/// batch of a step that keeps state per key).
pub fn key_state_columns<'a>(
    converter: &RowConverter,
    keys: impl Iterator<Item = &'a Vec<u8>>,
) -> Result<Vec<(String, ArrayRef)>> {
    let parser = converter.parser();
    let keys = converter.convert_rows(keys.map(|k| parser.parse(k)))?;
    Ok(keys
        .into_iter()
        .enumerate()
        .map(|(i, k)| (format!("k{i}"), k))
        .collect())
}

/// One call: which statistic, its value and parameter expressions.
#[derive(Debug)]
pub struct RunningCall {
    /// ewma or zscore.
    pub kind: RunningKind,
    /// First argument.
    pub value: Arc<dyn PhysicalExpr>,
    /// Second argument (a constant).
    pub param: Arc<dyn PhysicalExpr>,
}

/// Running statistics per partition key; appends one column per call.
#[derive(Debug)]
pub struct KeyedRunning {
    partition: Vec<Arc<dyn PhysicalExpr>>,
    order: Option<Arc<dyn PhysicalExpr>>,
    calls: Vec<RunningCall>,
    converter: RowConverter,
    state: HashMap<Vec<u8>, Vec<Running>>,
    schema: SchemaRef,
}

impl KeyedRunning {
    /// A step computing `calls` per `partition` key, rows of a batch taken in `order`.
    pub fn new(
        partition: Vec<Arc<dyn PhysicalExpr>>,
        partition_types: Vec<DataType>,
        order: Option<Arc<dyn PhysicalExpr>>,
        calls: Vec<RunningCall>,
        schema: SchemaRef,
    ) -> Result<Self> {
        Ok(Self {
            partition,
            order,
            calls,
            converter: RowConverter::new(
                partition_types.into_iter().map(SortField::new).collect(),
            )?,
            state: HashMap::new(),
            schema,
        })
    }

    /// Input columns the expressions read.
    pub fn exprs(&self) -> impl Iterator<Item = &Arc<dyn PhysicalExpr>> {
        self.partition
            .iter()
            .chain(self.order.iter())
            .chain(self.calls.iter().flat_map(|c| [&c.value, &c.param]))
    }

    /// The state of every key, for a checkpoint: the partition key columns (`k0`, ...), then
    /// per call its parameter (`c0_param`) and its state: the average (`c0_value`, ewma) or
    /// the previous values (`c0_history`, zscore). `None` when no key has state.
    pub fn snapshot(&self) -> Result<Option<RecordBatch>> {
        if self.state.is_empty() {
            return Ok(None);
        }
        let entries: Vec<(&Vec<u8>, &Vec<Running>)> = self.state.iter().collect();
        let mut cols = key_state_columns(&self.converter, entries.iter().map(|(k, _)| *k))?;
        for (c, call) in self.calls.iter().enumerate() {
            let states = entries.iter().map(|(_, s)| &s[c]);
            let params: Float64Array = states
                .clone()
                .map(|r| match r {
                    Running::Ewma { alpha, .. } => Some(*alpha),
                    Running::Zscore { n, .. } => Some(*n as f64),
                    Running::Locf { .. } => Some(0.0),
                })
                .collect();
            cols.push((format!("c{c}_param"), Arc::new(params)));
            match call.kind {
                RunningKind::Ewma | RunningKind::Locf => {
                    let values: Float64Array = states
                        .map(|r| match r {
                            Running::Ewma { value, .. } | Running::Locf { value } => *value,
                            Running::Zscore { .. } => None,
                        })
                        .collect();
                    cols.push((format!("c{c}_value"), Arc::new(values)));
                }
                RunningKind::Zscore => {
                    let history = ListArray::from_iter_primitive::<Float64Type, _, _>(states.map(
                        |r| match r {
                            Running::Zscore { history, .. } => {
                                Some(history.iter().copied().map(Some).collect::<Vec<_>>())
                            }
                            Running::Ewma { .. } | Running::Locf { .. } => None,
                        },
                    ));
                    cols.push((format!("c{c}_history"), Arc::new(history)));
                }
            }
        }
        Ok(Some(crate::exec::window::state::state_batch(
            cols,
            entries.len(),
        )?))
    }

    /// Forgets every key's state.
    pub fn clear(&mut self) {
        self.state.clear();
    }

    /// Replaces the state with one [`KeyedRunning::snapshot`] took from the same step.
    pub fn restore(&mut self, batch: &RecordBatch) -> Result<()> {
        let keys = self.partition.len();
        let needed = keys + 2 * self.calls.len();
        if batch.num_columns() != needed {
            return datafusion::common::exec_err!(
                "checkpointed running state has {} columns, the plan needs {needed}",
                batch.num_columns()
            );
        }
        let rows = self.converter.convert_columns(&batch.columns()[..keys])?;
        let bad = || {
            datafusion::common::DataFusionError::Execution(
                "checkpointed running state has columns of the wrong type".into(),
            )
        };
        self.state.clear();
        let mut per_call = Vec::with_capacity(self.calls.len());
        for (c, call) in self.calls.iter().enumerate() {
            let params = batch
                .column(keys + 2 * c)
                .as_primitive_opt::<Float64Type>()
                .ok_or_else(bad)?;
            let values = batch.column(keys + 2 * c + 1);
            per_call.push((call.kind, params, values));
        }
        for i in 0..batch.num_rows() {
            let mut state = Vec::with_capacity(per_call.len());
            for (kind, params, values) in &per_call {
                let mut r = kind.start(params.value(i))?;
                match &mut r {
                    Running::Ewma { value, .. } | Running::Locf { value } => {
                        let v = values.as_primitive_opt::<Float64Type>().ok_or_else(bad)?;
                        *value = v.is_valid(i).then(|| v.value(i));
                    }
                    Running::Zscore { history, .. } => {
                        let lists = values.as_list_opt::<i32>().ok_or_else(bad)?;
                        let list = lists.value(i);
                        let list = list.as_primitive_opt::<Float64Type>().ok_or_else(bad)?;
                        history.extend(list.iter().flatten());
                    }
                }
                state.push(r);
            }
            self.state.insert(rows.row(i).as_ref().to_vec(), state);
        }
        Ok(())
    }

    /// Appends the running statistics to `batch`.
    pub fn apply(&mut self, batch: RecordBatch) -> Result<RecordBatch> {
        let n = batch.num_rows();
        let eval = |e: &Arc<dyn PhysicalExpr>| e.evaluate(&batch)?.into_array(n);
        let keys: Vec<ArrayRef> = self.partition.iter().map(eval).collect::<Result<_>>()?;
        let rows = self.converter.convert_columns(&keys)?;
        let mut order: Vec<usize> = (0..n).collect();
        if let Some(o) = &self.order {
            let o = eval(o)?;
            let o = match o.data_type() {
                DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => {
                    arrow::compute::cast(&o, &DataType::Int64)?
                }
                _ => o,
            };
            let o = arrow::compute::cast(&o, &DataType::Float64)?;
            let o = o.as_primitive::<Float64Type>();
            order.sort_by(|&a, &b| o.value(a).total_cmp(&o.value(b)));
        }
        let mut values = Vec::with_capacity(self.calls.len());
        let mut params = Vec::with_capacity(self.calls.len());
        for c in &self.calls {
            values.push(values_f64(&eval(&c.value)?)?);
            params.push(if n > 0 {
                parameter(c.kind, &eval(&c.param)?)?
            } else {
                0.0
            });
        }
        // everything that can fail comes before the first change of state
        let fresh = if n > 0 {
            self.calls
                .iter()
                .zip(&params)
                .map(|(c, p)| c.kind.start(*p))
                .collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        let mut out: Vec<Vec<Option<f64>>> = vec![vec![None; n]; self.calls.len()];
        for i in order {
            let key = rows.row(i).as_ref().to_vec();
            let state = self.state.entry(key).or_insert_with(|| fresh.clone());
            for (f, s) in state.iter_mut().enumerate() {
                out[f][i] = s.next(values[f][i]);
            }
        }
        let mut cols = batch.columns().to_vec();
        cols.extend(
            out.into_iter()
                .map(|v| Arc::new(Float64Array::from(v)) as ArrayRef),
        );
        let cols: Vec<ArrayRef> = cols;
        debug_assert!(cols.iter().all(|c| c.len() == n));
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), cols)?)
    }
}
