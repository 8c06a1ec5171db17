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

use super::state::{Absorb, AggSpec, Declined, OutputLayout, Prepared, process, time_values};
use super::{Emitted, Processed, WindowOperator};

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
}
