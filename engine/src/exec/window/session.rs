//! Session windows: per group key, rows closer than `gap` to each other form one window,
//! which closes once the watermark passes its last row plus `gap`. Each session keeps
//! partial aggregate state; sessions bridged by a late-arriving row are merged.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, UInt32Array, UInt64Array};
use arrow::datatypes::SchemaRef;
use arrow::datatypes::{Int64Type, UInt64Type};
use arrow::record_batch::RecordBatch;
use arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::PhysicalExpr;

use super::state::{
    Absorb, AggSpec, Declined, OutputLayout, Prepared, process, state_batch, time_values,
};
use super::{Emitted, Extent, OperatorState, Processed, WindowOperator, meta_error};

/// What a session operator keeps besides its sessions, in a checkpoint.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SessionMeta {
    watermark: i64,
    next_id: u64,
    /// Key columns of the state batch (after `id`, `start`, `end`).
    keys: usize,
    /// State columns per aggregate.
    widths: Vec<usize>,
}

/// Columns of the state batch before the keys: `id`, `start`, `end`.
const LEADING: usize = 3;

/// One open session of one key.
struct Session {
    key: OwnedRow,
    start: i64,
    /// Last row's time plus the gap.
    end: i64,
    accs: Vec<Box<dyn Accumulator>>,
}

impl Session {
    /// Bytes held: the accumulators, the key (twice: here and in the per-key index) and the
    /// entries of both maps.
    fn size(&self) -> usize {
        self.accs.iter().map(|a| a.size()).sum::<usize>()
            + 2 * self.key.as_ref().len()
            + std::mem::size_of::<Self>()
            + std::mem::size_of::<(OwnedRow, Vec<u64>)>()
            + 2 * std::mem::size_of::<u64>()
    }
}

/// Aggregation over session windows.
pub struct SessionAggregate {
    gap: i64,
    /// Column of the pre-aggregate batch holding each row's event time (ns).
    time_col: usize,
    key_exprs: Vec<Arc<dyn PhysicalExpr>>,
    converter: RowConverter,
    aggs: Vec<AggSpec>,
    layout: OutputLayout,
    /// Open sessions by id.
    sessions: HashMap<u64, Session>,
    /// Open session ids per key.
    by_key: HashMap<OwnedRow, Vec<u64>>,
    next_id: u64,
    watermark: i64,
    /// Bytes of all open sessions, kept up to date as they change.
    bytes: usize,
    /// Rows of keys without an open session are refused (the `drop_new_keys` policy).
    refuse_new: bool,
}

impl SessionAggregate {
    /// A new operator over rows whose event time is in `time_col`.
    pub fn new(
        gap: i64,
        time_col: usize,
        key_exprs: Vec<Arc<dyn PhysicalExpr>>,
        key_schema: SchemaRef,
        aggs: Vec<AggSpec>,
        layout: OutputLayout,
    ) -> Result<Self> {
        let converter = RowConverter::new(
            key_schema
                .fields()
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect(),
        )?;
        Ok(Self {
            gap,
            time_col,
            key_exprs,
            converter,
            aggs,
            layout,
            sessions: HashMap::new(),
            by_key: HashMap::new(),
            next_id: 0,
            watermark: i64::MIN,
            bytes: 0,
            refuse_new: false,
        })
    }

    fn new_accumulators(&self) -> Result<Vec<Box<dyn Accumulator>>> {
        self.aggs
            .iter()
            .map(|a| a.expr.create_accumulator())
            .collect()
    }

    /// The session row `t` of `key` belongs to, creating or merging sessions as needed;
    /// also returns the ids of sessions merged into it.
    fn assign(&mut self, key: &OwnedRow, t: i64) -> Result<(u64, Vec<u64>)> {
        let gap = self.gap;
        let ids = self.by_key.entry(key.clone()).or_default();
        let touching: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| {
                let s = &self.sessions[id];
                s.start < t.saturating_add(gap) && t < s.end
            })
            .collect();
        match touching.as_slice() {
            [] => {
                let id = self.next_id;
                self.next_id += 1;
                ids.push(id);
                let accs = self.new_accumulators()?;
                let session = Session {
                    key: key.clone(),
                    start: t,
                    end: t.saturating_add(gap),
                    accs,
                };
                self.bytes += session.size();
                self.sessions.insert(id, session);
                Ok((id, vec![]))
            }
            [first, rest @ ..] => {
                for other in rest {
                    let mut gone = self.sessions.remove(other).expect("open session");
                    let keep = self.sessions.get_mut(first).expect("open session");
                    self.bytes = self.bytes.saturating_sub(gone.size() + keep.size());
                    keep.start = keep.start.min(gone.start);
                    keep.end = keep.end.max(gone.end);
                    for (k, g) in keep.accs.iter_mut().zip(gone.accs.iter_mut()) {
                        let state: Vec<ArrayRef> = g
                            .state()?
                            .into_iter()
                            .map(|v| v.to_array())
                            .collect::<Result<_>>()?;
                        k.merge_batch(&state)?;
                    }
                    self.bytes += keep.size();
                }
                if let Some(ids) = self.by_key.get_mut(key) {
                    ids.retain(|id| !rest.contains(id));
                }
                let s = self.sessions.get_mut(first).expect("open session");
                s.start = s.start.min(t);
                s.end = s.end.max(t.saturating_add(gap));
                Ok((*first, rest.to_vec()))
            }
        }
    }
}

impl Absorb for SessionAggregate {
    fn expressions(&self) -> (&[Arc<dyn PhysicalExpr>], &[AggSpec]) {
        (&self.key_exprs, &self.aggs)
    }

    /// Adds evaluated rows to their sessions; returns those it did not take.
    fn absorb(&mut self, part: Prepared) -> Result<Declined> {
        let (batch, keys, inputs) = (&part.batch, &part.keys[..], &part.inputs[..]);
        let rows = batch.num_rows();
        let key_rows = self.converter.convert_columns(keys)?;
        let times = time_values(batch, self.time_col).to_vec();
        let mut order: Vec<u32> = (0..rows as u32).collect();
        order.sort_by_key(|&i| times[i as usize]);
        let mut per_session: HashMap<u64, Vec<u32>> = HashMap::new();
        let mut declined = Declined::default();
        for i in order {
            let t = times[i as usize];
            if t.saturating_add(self.gap) <= self.watermark {
                declined.late += 1;
                continue;
            }
            let key = key_rows.row(i as usize).owned();
            if self.refuse_new && !self.by_key.contains_key(&key) {
                declined.refused += 1;
                continue;
            }
            let (id, merged) = self.assign(&key, t)?;
            // Rows already collected for a session that was merged away move to the survivor.
            for m in merged {
                let moved = per_session.remove(&m).unwrap_or_default();
                per_session.entry(id).or_default().extend(moved);
            }
            per_session.entry(id).or_default().push(i);
        }
        for (id, idx) in per_session {
            let idx = UInt32Array::from(idx);
            let session = self.sessions.get_mut(&id).expect("open session");
            self.bytes = self.bytes.saturating_sub(session.size());
            for (acc, input) in session.accs.iter_mut().zip(inputs) {
                let part = input.take(&idx)?;
                let args = match &part.filter {
                    Some(f) => part
                        .args
                        .iter()
                        .map(|a| arrow::compute::filter(a.as_ref(), f))
                        .collect::<std::result::Result<Vec<_>, _>>()?,
                    None => part.args,
                };
                acc.update_batch(&args)?;
            }
            self.bytes += session.size();
        }
        Ok(declined)
    }
}

impl SessionAggregate {
    /// Takes the sessions `ids` out as one batch of result rows.
    fn emit_sessions(&mut self, ids: &[u64], partial: bool) -> Result<RecordBatch> {
        let mut starts = Vec::with_capacity(ids.len());
        let mut ends = Vec::with_capacity(ids.len());
        let mut keys = Vec::with_capacity(ids.len());
        let mut values: Vec<Vec<ScalarValue>> =
            vec![Vec::with_capacity(ids.len()); self.aggs.len()];
        for id in ids {
            let mut s = self.sessions.remove(id).expect("open session");
            self.bytes = self.bytes.saturating_sub(s.size());
            if let Some(ids) = self.by_key.get_mut(&s.key) {
                ids.retain(|x| x != id);
                if ids.is_empty() {
                    self.by_key.remove(&s.key);
                }
            }
            starts.push(s.start);
            ends.push(s.end);
            for (v, acc) in values.iter_mut().zip(s.accs.iter_mut()) {
                v.push(acc.evaluate()?);
            }
            keys.push(s.key);
        }
        let rows = ids.len();
        let key_cols = self.converter.convert_rows(keys.iter().map(|k| k.row()))?;
        let value_cols = values
            .into_iter()
            .map(ScalarValue::iter_to_array)
            .collect::<Result<Vec<_>>>()?;
        self.layout
            .build(rows, starts, ends, key_cols, value_cols, partial)
    }
}

impl WindowOperator for SessionAggregate {
    fn process(&mut self, batch: &RecordBatch) -> Result<Processed> {
        process(self, batch)
    }

    fn advance(&mut self, w: i64) -> Result<Emitted> {
        if w <= self.watermark {
            return Ok(Emitted::default());
        }
        self.watermark = w;
        let mut closed: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.end <= w)
            .map(|(id, _)| *id)
            .collect();
        if closed.is_empty() {
            return Ok(Emitted::default());
        }
        closed.sort_by_key(|id| (self.sessions[id].end, self.sessions[id].start, *id));
        let rows = closed.len() as u64;
        let batch = self.emit_sessions(&closed, false)?;
        Ok(Emitted {
            batches: vec![batch],
            windows: rows,
            early: 0,
        })
    }

    fn finish(&mut self, emit: bool) -> Result<Emitted> {
        if emit {
            self.advance(i64::MAX)
        } else {
            self.sessions.clear();
            self.by_key.clear();
            self.bytes = 0;
            Ok(Emitted::default())
        }
    }

    fn start_lower_bound(&self) -> Option<i64> {
        if self.watermark == i64::MIN {
            return None;
        }
        let fresh = self.watermark.saturating_sub(self.gap).saturating_add(1);
        Some(
            self.sessions
                .values()
                .map(|s| s.start)
                .min()
                .map_or(fresh, |m| m.min(fresh)),
        )
    }

    fn state_bytes(&self) -> usize {
        self.bytes
    }

    fn extent(&self) -> Extent {
        Extent {
            windows: self.sessions.len(),
            groups: self.sessions.len(),
        }
    }

    /// Emits the sessions that would close first (earliest end) until `bytes` are freed.
    fn flush_oldest(&mut self, bytes: usize) -> Result<Emitted> {
        let mut by_end: Vec<(i64, i64, u64, usize)> = self
            .sessions
            .iter()
            .map(|(id, s)| (s.end, s.start, *id, s.size()))
            .collect();
        by_end.sort_unstable();
        let mut freed = 0;
        let mut ids = Vec::new();
        for (_, _, id, size) in by_end {
            ids.push(id);
            freed += size;
            if freed >= bytes {
                break;
            }
        }
        if ids.is_empty() {
            return Ok(Emitted::default());
        }
        let early = ids.len() as u64;
        Ok(Emitted {
            batches: vec![self.emit_sessions(&ids, true)?],
            windows: 0,
            early,
        })
    }

    fn refuse_new_keys(&mut self, refuse: bool) {
        self.refuse_new = refuse;
    }

    /// One row per open session: `id`, `start`, `end`, the keys, the aggregates' states.
    fn snapshot(&mut self) -> Result<OperatorState> {
        let mut ids: Vec<u64> = self.sessions.keys().copied().collect();
        ids.sort_unstable();
        let n = ids.len();
        let mut starts = Vec::with_capacity(n);
        let mut ends = Vec::with_capacity(n);
        let mut states: Vec<Vec<Vec<ScalarValue>>> = Vec::with_capacity(self.aggs.len());
        for id in &ids {
            let fresh = self.new_accumulators()?;
            let s = self.sessions.get_mut(id).expect("open session");
            starts.push(s.start);
            ends.push(s.end);
            // `state` may leave an accumulator unusable: the session goes on with fresh
            // accumulators that merged it
            for (a, (acc, mut again)) in s.accs.iter_mut().zip(fresh).enumerate() {
                let state = acc.state()?;
                let arrays = state
                    .iter()
                    .map(|v| v.to_array())
                    .collect::<Result<Vec<_>>>()?;
                again.merge_batch(&arrays)?;
                *acc = again;
                if states.len() <= a {
                    states.push(vec![Vec::with_capacity(n); state.len()]);
                }
                for (column, v) in states[a].iter_mut().zip(state) {
                    column.push(v);
                }
            }
        }
        let widths: Vec<usize> = states.iter().map(Vec::len).collect();
        let keys = self
            .converter
            .convert_rows(ids.iter().map(|id| self.sessions[id].key.row()))?;
        let meta = SessionMeta {
            watermark: self.watermark,
            next_id: self.next_id,
            keys: keys.len(),
            widths,
        };
        let batch = if n == 0 {
            None
        } else {
            let mut cols: Vec<(String, ArrayRef)> = vec![
                ("id".into(), Arc::new(UInt64Array::from(ids))),
                ("start".into(), Arc::new(Int64Array::from(starts))),
                ("end".into(), Arc::new(Int64Array::from(ends))),
            ];
            cols.extend(
                keys.into_iter()
                    .enumerate()
                    .map(|(i, k)| (format!("k{i}"), k)),
            );
            for (a, columns) in states.into_iter().enumerate() {
                for (j, values) in columns.into_iter().enumerate() {
                    cols.push((format!("s{a}_{j}"), ScalarValue::iter_to_array(values)?));
                }
            }
            Some(state_batch(cols, n)?)
        };
        Ok(OperatorState {
            meta: serde_json::to_value(meta).map_err(meta_error)?,
            batch,
            windows: n,
            groups: n,
        })
    }

    fn restore(&mut self, state: OperatorState) -> Result<()> {
        let meta: SessionMeta = serde_json::from_value(state.meta).map_err(meta_error)?;
        self.watermark = meta.watermark;
        self.next_id = meta.next_id;
        self.sessions.clear();
        self.by_key.clear();
        self.bytes = 0;
        let Some(batch) = state.batch else {
            return Ok(());
        };
        let needed = LEADING + meta.keys + meta.widths.iter().sum::<usize>();
        if batch.num_columns() != needed {
            return Err(meta_error(format!(
                "{} columns, the plan needs {needed}",
                batch.num_columns()
            )));
        }
        let column = |i: usize| batch.column(i);
        let ids = column(0)
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(|| meta_error("session ids are not UInt64"))?;
        let (starts, ends) = match (
            column(1).as_primitive_opt::<Int64Type>(),
            column(2).as_primitive_opt::<Int64Type>(),
        ) {
            (Some(s), Some(e)) => (s, e),
            _ => return Err(meta_error("session bounds are not Int64")),
        };
        let keys = self
            .converter
            .convert_columns(&batch.columns()[LEADING..LEADING + meta.keys])?;
        for i in 0..batch.num_rows() {
            let mut accs = self.new_accumulators()?;
            let mut at = LEADING + meta.keys;
            for (acc, w) in accs.iter_mut().zip(&meta.widths) {
                let state: Vec<ArrayRef> = (at..at + w).map(|c| column(c).slice(i, 1)).collect();
                acc.merge_batch(&state)?;
                at += w;
            }
            let id = ids.value(i);
            let key = keys.row(i).owned();
            self.by_key.entry(key.clone()).or_default().push(id);
            let session = Session {
                key,
                start: starts.value(i),
                end: ends.value(i),
                accs,
            };
            self.bytes += session.size();
            self.sessions.insert(id, session);
        }
        Ok(())
    }
}
