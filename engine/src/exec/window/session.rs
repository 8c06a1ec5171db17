//! Session windows: per group key, rows closer than `gap` to each other form one window,
//! which closes once the watermark passes its last row plus `gap`. Each session keeps
//! partial aggregate state; sessions bridged by a late-arriving row are merged.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, UInt32Array};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::PhysicalExpr;

use super::state::{Absorb, AggSpec, OutputLayout, Prepared, process, time_values};
use super::{Emitted, Processed, WindowOperator};

/// One open session of one key.
struct Session {
    key: OwnedRow,
    start: i64,
    /// Last row's time plus the gap.
    end: i64,
    accs: Vec<Box<dyn Accumulator>>,
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
                self.sessions.insert(
                    id,
                    Session {
                        key: key.clone(),
                        start: t,
                        end: t.saturating_add(gap),
                        accs,
                    },
                );
                Ok((id, vec![]))
            }
            [first, rest @ ..] => {
                for other in rest {
                    let mut gone = self.sessions.remove(other).expect("open session");
                    let keep = self.sessions.get_mut(first).expect("open session");
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

    /// Adds evaluated rows to their sessions; returns how many were late.
    fn absorb(&mut self, part: Prepared) -> Result<u64> {
        let (batch, keys, inputs) = (&part.batch, &part.keys[..], &part.inputs[..]);
        let rows = batch.num_rows();
        let key_rows = self.converter.convert_columns(keys)?;
        let times = time_values(batch, self.time_col).to_vec();
        let mut order: Vec<u32> = (0..rows as u32).collect();
        order.sort_by_key(|&i| times[i as usize]);
        let mut per_session: HashMap<u64, Vec<u32>> = HashMap::new();
        let mut late = 0;
        for i in order {
            let t = times[i as usize];
            if t.saturating_add(self.gap) <= self.watermark {
                late += 1;
                continue;
            }
            let key = key_rows.row(i as usize).owned();
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
        }
        Ok(late)
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
        let mut starts = Vec::with_capacity(closed.len());
        let mut ends = Vec::with_capacity(closed.len());
        let mut keys = Vec::with_capacity(closed.len());
        let mut values: Vec<Vec<ScalarValue>> =
            vec![Vec::with_capacity(closed.len()); self.aggs.len()];
        for id in &closed {
            let mut s = self.sessions.remove(id).expect("open session");
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
        let rows = closed.len();
        let key_cols = self.converter.convert_rows(keys.iter().map(|k| k.row()))?;
        let value_cols = values
            .into_iter()
            .map(ScalarValue::iter_to_array)
            .collect::<Result<Vec<_>>>()?;
        Ok(Emitted {
            batches: vec![
                self.layout
                    .build(rows, starts, ends, key_cols, value_cols)?,
            ],
            windows: rows as u64,
        })
    }

    fn finish(&mut self, emit: bool) -> Result<Emitted> {
        if emit {
            self.advance(i64::MAX)
        } else {
            self.sessions.clear();
            self.by_key.clear();
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
        self.sessions
            .values()
            .map(|s| s.accs.iter().map(|a| a.size()).sum::<usize>() + s.key.as_ref().len())
            .sum()
    }
}
