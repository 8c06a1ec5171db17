//! Tumbling and hopping windows (and the single window of a finite, unwindowed `GROUP BY`),
//! kept as panes of partial aggregate state and merged when a window closes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, BooleanArray, Int64Array, UInt32Array};
use arrow::datatypes::{Int64Type, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::Result;
use datafusion::common::hash_utils::{RandomState, create_hashes};
use datafusion::physical_expr::PhysicalExpr;

use super::state::{
    Absorb, AggInputs, AggSpec, Declined, LiveGroups, OutputLayout, Prepared, StateChunk, process,
    state_batch, time_values,
};
use super::{Emitted, Extent, OperatorState, Panes, Processed, WindowOperator, meta_error};

/// What a pane operator keeps besides its panes' partial aggregates, in a checkpoint.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct PaneMeta {
    watermark: i64,
    /// Starts of open windows emitted early.
    flushed: Vec<i64>,
    /// Key columns of the state batch (after its `pane` column).
    keys: usize,
    /// State columns per aggregate.
    widths: Vec<usize>,
}

/// How rows are assigned to windows.
#[derive(Debug, Clone, Copy)]
pub enum Assignment {
    /// Tumbling or hopping windows; the pre-aggregate batch carries the pane start in
    /// column `col`.
    Panes {
        /// Pane geometry.
        panes: Panes,
        /// Column with each row's pane start (ns).
        col: usize,
    },
    /// One window over the whole (finite) input, emitted at its end.
    Whole,
}

/// State of one pane: sealed chunks (partial state already taken out for an emitted
/// window) and live accumulators for rows that arrived since; while new keys are refused,
/// the hashes of the keys it holds, sorted (8 bytes a key: a hash set would take twice that).
#[derive(Default)]
struct Pane {
    chunks: Vec<StateChunk>,
    live: Option<LiveGroups>,
    key_hashes: Option<Vec<u64>>,
}

impl Pane {
    fn groups(&self) -> usize {
        self.chunks.iter().map(StateChunk::rows).sum::<usize>()
            + self.live.as_ref().map_or(0, LiveGroups::len)
    }

    fn size(&self) -> usize {
        self.chunks.iter().map(StateChunk::size).sum::<usize>()
            + self.live.as_ref().map_or(0, LiveGroups::size)
            + self
                .key_hashes
                .as_ref()
                .map_or(0, |h| h.capacity() * std::mem::size_of::<u64>())
    }
}

/// Aggregation over tumbling or hopping windows.
pub struct PaneAggregate {
    assignment: Assignment,
    key_exprs: Vec<Arc<dyn PhysicalExpr>>,
    key_schema: SchemaRef,
    aggs: Vec<AggSpec>,
    layout: OutputLayout,
    panes: BTreeMap<i64, Pane>,
    watermark: i64,
    groups: Vec<usize>,
    /// Starts of open windows emitted early: what they emit later is partial too.
    flushed: BTreeSet<i64>,
    /// Rows of keys without state are refused (the `drop_new_keys` policy).
    refuse_new: bool,
    hasher: RandomState,
}

impl PaneAggregate {
    /// A new operator; `key_exprs` produce the non-window group keys (schema `key_schema`).
    pub fn new(
        assignment: Assignment,
        key_exprs: Vec<Arc<dyn PhysicalExpr>>,
        key_schema: SchemaRef,
        aggs: Vec<AggSpec>,
        layout: OutputLayout,
    ) -> Self {
        Self {
            assignment,
            key_exprs,
            key_schema,
            aggs,
            layout,
            panes: BTreeMap::new(),
            watermark: i64::MIN,
            groups: Vec::new(),
            flushed: BTreeSet::new(),
            refuse_new: false,
            hasher: RandomState::with_seed(0x5745_4952),
        }
    }

    fn is_late(&self, pane: i64) -> bool {
        match self.assignment {
            Assignment::Panes { panes, .. } => panes.last_window_end(pane) <= self.watermark,
            Assignment::Whole => false,
        }
    }

    /// Adds rows of one pane; returns those it did not take.
    fn add(
        &mut self,
        pane: i64,
        keys: &[ArrayRef],
        rows: usize,
        inputs: &[AggInputs],
    ) -> Result<Declined> {
        if self.is_late(pane) {
            return Ok(Declined {
                late: rows as u64,
                refused: 0,
            });
        }
        if !self.refuse_new {
            let entry = self.panes.entry(pane).or_default();
            let live = match &mut entry.live {
                Some(live) => live,
                None => entry
                    .live
                    .insert(LiveGroups::new(&self.key_schema, &self.aggs)?),
            };
            live.update(keys, rows, inputs, &mut self.groups)?;
            return Ok(Declined::default());
        }
        // Refusing new keys: take only the rows whose key this pane already holds.
        let hashes = hash_keys(keys, rows, &self.hasher)?;
        let Some(entry) = self.panes.get_mut(&pane) else {
            return Ok(Declined {
                late: 0,
                refused: rows as u64,
            });
        };
        let known = match &entry.key_hashes {
            Some(k) => k,
            None => {
                let k = pane_key_hashes(entry, &self.hasher)?;
                entry.key_hashes.insert(k)
            }
        };
        let keep: BooleanArray = hashes
            .iter()
            .map(|h| Some(known.binary_search(h).is_ok()))
            .collect();
        let kept = keep.true_count();
        let refused = (rows - kept) as u64;
        if kept == 0 {
            return Ok(Declined { late: 0, refused });
        }
        let (keys, inputs) = if kept == rows {
            (keys.to_vec(), inputs.to_vec())
        } else {
            let idx: UInt32Array = (0..rows as u32)
                .filter(|&i| keep.value(i as usize))
                .collect();
            take_rows(keys, inputs, &idx)?
        };
        let live = match &mut entry.live {
            Some(live) => live,
            None => entry
                .live
                .insert(LiveGroups::new(&self.key_schema, &self.aggs)?),
        };
        live.update(&keys, kept, &inputs, &mut self.groups)?;
        Ok(Declined { late: 0, refused })
    }

    /// A pane's merged state (sealed chunks and live accumulators), if it has any.
    fn pane_state(&self, pane: Pane) -> Result<Option<LiveGroups>> {
        merged_state(pane, &self.key_schema, &self.aggs)
    }

    /// Emits the window starting at `start` (ns) from the panes it covers.
    fn emit_window(&mut self, panes: Panes, start: i64) -> Result<Option<RecordBatch>> {
        let end = start.saturating_add(panes.size);
        let covered: Vec<i64> = self.panes.range(start..end).map(|(p, _)| *p).collect();
        // Fast path (tumbling windows): one pane, nothing sealed, and this is its last window.
        let state = if let [p] = covered.as_slice()
            && panes.last_window_end(*p) == end
            && self.panes[p].chunks.is_empty()
        {
            let pane = self.panes.remove(p).expect("covered pane");
            match pane.live {
                Some(live) => live,
                None => return Ok(None),
            }
        } else {
            let mut merged = LiveGroups::new(&self.key_schema, &self.aggs)?;
            for p in &covered {
                let pane = self.panes.get_mut(p).expect("covered pane");
                if let Some(live) = pane.live.take() {
                    pane.chunks.push(live.seal()?);
                }
                for chunk in &pane.chunks {
                    merged.merge(chunk, &mut self.groups)?;
                }
            }
            merged
        };
        let partial = self.flushed.remove(&start);
        if state.is_empty() {
            return Ok(None);
        }
        let (rows, keys, values) = state.evaluate()?;
        self.layout
            .build(
                rows,
                vec![start; rows],
                vec![end; rows],
                keys,
                values,
                partial,
            )
            .map(Some)
    }

    fn emit_whole(&mut self) -> Result<Emitted> {
        let partial = self.flushed.remove(&0);
        let Some(live) = self.panes.remove(&0).and_then(|p| p.live) else {
            return Ok(Emitted::default());
        };
        let (rows, keys, values) = live.evaluate()?;
        Ok(Emitted {
            batches: vec![
                self.layout
                    .build(rows, vec![], vec![], keys, values, partial)?,
            ],
            windows: 1,
            early: 0,
        })
    }

    /// Emits the state of pane `p` now, as partial rows of every open window it is in.
    fn flush_pane(&mut self, p: i64, out: &mut Emitted) -> Result<()> {
        let pane = self.panes.remove(&p).expect("flushed pane");
        let Some(state) = self.pane_state(pane)? else {
            return Ok(());
        };
        if state.is_empty() {
            return Ok(());
        }
        let (rows, keys, values) = state.evaluate()?;
        let panes = match self.assignment {
            Assignment::Whole => {
                self.flushed.insert(0);
                out.batches.push(
                    self.layout
                        .build(rows, vec![], vec![], keys, values, true)?,
                );
                out.early += 1;
                return Ok(());
            }
            Assignment::Panes { panes, .. } => panes,
        };
        let open: Vec<i64> = panes
            .window_starts(p)
            .filter(|s| s.saturating_add(panes.size) > self.watermark)
            .collect();
        for s in open.into_iter().rev() {
            let end = s.saturating_add(panes.size);
            self.flushed.insert(s);
            out.batches.push(self.layout.build(
                rows,
                vec![s; rows],
                vec![end; rows],
                keys.clone(),
                values.clone(),
                true,
            )?);
            out.early += 1;
        }
        Ok(())
    }
}

impl Absorb for PaneAggregate {
    fn expressions(&self) -> (&[Arc<dyn PhysicalExpr>], &[AggSpec]) {
        (&self.key_exprs, &self.aggs)
    }

    /// Adds evaluated rows to their panes; returns those it did not take.
    fn absorb(&mut self, part: Prepared) -> Result<Declined> {
        let Prepared {
            batch,
            keys,
            inputs,
        } = part;
        let batch = &batch;
        let rows = batch.num_rows();
        let col = match self.assignment {
            Assignment::Whole => return self.add(0, &keys, rows, &inputs),
            Assignment::Panes { col, .. } => col,
        };
        let times = time_values(batch, col);
        let first = times[0];
        if times.iter().all(|&t| t == first) {
            return self.add(first, &keys, rows, &inputs);
        }
        // Rows of several panes: split by pane, in time order.
        let mut declined = Declined::default();
        let mut by_pane: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        for (i, &t) in times.iter().enumerate() {
            by_pane.entry(t).or_default().push(i as u32);
        }
        for (pane, idx) in by_pane {
            let idx = UInt32Array::from(idx);
            let (part_keys, part_inputs) = take_rows(&keys, &inputs, &idx)?;
            declined += self.add(pane, &part_keys, idx.len(), &part_inputs)?;
        }
        Ok(declined)
    }
}

impl WindowOperator for PaneAggregate {
    fn process(&mut self, batch: &RecordBatch) -> Result<Processed> {
        process(self, batch)
    }

    fn advance(&mut self, w: i64) -> Result<Emitted> {
        let Assignment::Panes { panes, .. } = self.assignment else {
            return Ok(Emitted::default());
        };
        if w <= self.watermark {
            return Ok(Emitted::default());
        }
        let previous = self.watermark;
        // Windows that close now: those holding a pane, ending in (previous, w].
        let mut closing = BTreeSet::new();
        for &p in self.panes.range(..w).map(|(p, _)| p) {
            for s in panes.window_starts(p) {
                let end = s.saturating_add(panes.size);
                if end > previous && end <= w {
                    closing.insert((end, s));
                }
            }
        }
        self.watermark = w;
        let mut out = Emitted::default();
        for (_, start) in closing {
            if let Some(b) = self.emit_window(panes, start)? {
                out.batches.push(b);
                out.windows += 1;
            }
        }
        // Panes whose last window has been emitted are done.
        self.panes.retain(|&p, _| panes.last_window_end(p) > w);
        self.flushed = self.flushed.split_off(&panes.first_open_start(w));
        Ok(out)
    }

    fn finish(&mut self, emit: bool) -> Result<Emitted> {
        if !emit {
            self.panes.clear();
            self.flushed.clear();
            return Ok(Emitted::default());
        }
        match self.assignment {
            Assignment::Whole => self.emit_whole(),
            Assignment::Panes { .. } => self.advance(i64::MAX),
        }
    }

    fn start_lower_bound(&self) -> Option<i64> {
        match self.assignment {
            Assignment::Panes { panes, .. } if self.watermark > i64::MIN => {
                Some(panes.first_open_start(self.watermark))
            }
            _ => None,
        }
    }

    fn state_bytes(&self) -> usize {
        self.panes.values().map(Pane::size).sum()
    }

    fn extent(&self) -> Extent {
        Extent {
            windows: self.panes.len(),
            groups: self.panes.values().map(Pane::groups).sum(),
        }
    }

    fn flush_oldest(&mut self, bytes: usize) -> Result<Emitted> {
        let mut out = Emitted::default();
        let mut freed = 0;
        while let Some((&p, pane)) = self.panes.iter().next() {
            freed += pane.size();
            self.flush_pane(p, &mut out)?;
            if freed >= bytes {
                break;
            }
        }
        Ok(out)
    }

    fn refuse_new_keys(&mut self, refuse: bool) {
        self.refuse_new = refuse;
        if !refuse {
            for pane in self.panes.values_mut() {
                pane.key_hashes = None;
            }
        }
    }

    /// One row per (pane, group): `pane` (its start), the keys, the aggregates' states.
    /// Each pane's sealed chunks and live accumulators are merged into one live set.
    fn snapshot(&mut self) -> Result<OperatorState> {
        let mut parts = Vec::new();
        let mut widths = Vec::new();
        let mut groups = 0;
        for (&start, pane) in self.panes.iter_mut() {
            let taken = Pane {
                chunks: std::mem::take(&mut pane.chunks),
                live: pane.live.take(),
                key_hashes: None,
            };
            let Some(state) = merged_state(taken, &self.key_schema, &self.aggs)? else {
                continue;
            };
            let chunk = state.seal()?;
            pane.live = Some(LiveGroups::from_chunk(
                &self.key_schema,
                &self.aggs,
                &chunk,
            )?);
            if chunk.rows() == 0 {
                continue;
            }
            groups += chunk.rows();
            widths = chunk.widths();
            let mut cols: Vec<(String, ArrayRef)> = vec![(
                "pane".into(),
                Arc::new(Int64Array::from(vec![start; chunk.rows()])),
            )];
            cols.extend(chunk.columns());
            parts.push(state_batch(cols, chunk.rows())?);
        }
        let batch = match parts.first() {
            Some(first) => Some(arrow::compute::concat_batches(&first.schema(), &parts)?),
            None => None,
        };
        let meta = PaneMeta {
            watermark: self.watermark,
            flushed: self.flushed.iter().copied().collect(),
            keys: self.key_schema.fields().len(),
            widths,
        };
        Ok(OperatorState {
            meta: serde_json::to_value(meta).map_err(meta_error)?,
            batch,
            windows: parts.len(),
            groups,
        })
    }

    fn restore(&mut self, state: OperatorState) -> Result<()> {
        let meta: PaneMeta = serde_json::from_value(state.meta).map_err(meta_error)?;
        self.watermark = meta.watermark;
        self.flushed = meta.flushed.into_iter().collect();
        self.panes.clear();
        let Some(batch) = state.batch else {
            return Ok(());
        };
        let starts = batch
            .column(0)
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| {
                meta_error("the first column of checkpointed pane state is not the pane start")
            })?;
        let n = batch.num_rows();
        let mut i = 0;
        while i < n {
            let start = starts.value(i);
            let mut j = i + 1;
            while j < n && starts.value(j) == start {
                j += 1;
            }
            let part = batch.slice(i, j - i);
            let chunk =
                StateChunk::from_columns(&part.columns()[1..], meta.keys, &meta.widths, j - i)?;
            let live = LiveGroups::from_chunk(&self.key_schema, &self.aggs, &chunk)?;
            self.panes.insert(
                start,
                Pane {
                    chunks: Vec::new(),
                    live: Some(live),
                    key_hashes: None,
                },
            );
            i = j;
        }
        Ok(())
    }
}

/// A pane's merged state (sealed chunks and live accumulators), if it has any.
fn merged_state(
    pane: Pane,
    key_schema: &SchemaRef,
    aggs: &[AggSpec],
) -> Result<Option<LiveGroups>> {
    if pane.chunks.is_empty() {
        return Ok(pane.live);
    }
    let mut merged = LiveGroups::new(key_schema, aggs)?;
    let mut groups = Vec::new();
    for chunk in &pane.chunks {
        merged.merge(chunk, &mut groups)?;
    }
    if let Some(live) = pane.live {
        merged.merge(&live.seal()?, &mut groups)?;
    }
    Ok(Some(merged))
}

/// The rows at `idx` of evaluated keys and aggregate inputs.
fn take_rows(
    keys: &[ArrayRef],
    inputs: &[AggInputs],
    idx: &UInt32Array,
) -> Result<(Vec<ArrayRef>, Vec<AggInputs>)> {
    let keys = keys
        .iter()
        .map(|k| arrow::compute::take(k.as_ref(), idx, None))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let inputs = inputs
        .iter()
        .map(|i| i.take(idx))
        .collect::<Result<Vec<_>>>()?;
    Ok((keys, inputs))
}

/// One hash per row of the key columns (all equal when there are none).
fn hash_keys(keys: &[ArrayRef], rows: usize, hasher: &RandomState) -> Result<Vec<u64>> {
    let mut hashes = vec![0; rows];
    if !keys.is_empty() {
        create_hashes(keys, hasher, &mut hashes)?;
    }
    Ok(hashes)
}

/// The hashes of every key a pane holds state for: its live keys are taken out and put back
/// (the group table hands out ids in the order keys first appear, so they come back with
/// the same ids).
fn pane_key_hashes(pane: &mut Pane, hasher: &RandomState) -> Result<Vec<u64>> {
    let mut known = Vec::new();
    for chunk in &pane.chunks {
        known.extend(hash_keys(chunk.keys(), chunk.rows(), hasher)?);
    }
    if let Some(live) = &mut pane.live {
        let (keys, rows) = live.keys_snapshot()?;
        known.extend(hash_keys(&keys, rows, hasher)?);
    }
    known.sort_unstable();
    known.dedup();
    known.shrink_to_fit();
    Ok(known)
}
