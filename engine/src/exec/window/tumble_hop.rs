//! Tumbling and hopping windows (and the single window of a finite, unwindowed `GROUP BY`),
//! kept as panes of partial aggregate state and merged when a window closes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{ArrayRef, UInt32Array};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::Result;
use datafusion::physical_expr::PhysicalExpr;

use super::state::{
    Absorb, AggInputs, AggSpec, LiveGroups, OutputLayout, Prepared, StateChunk, process,
    time_values,
};
use super::{Emitted, Panes, Processed, WindowOperator};

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
/// window) and live accumulators for rows that arrived since.
struct Pane {
    chunks: Vec<StateChunk>,
    live: Option<LiveGroups>,
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
        }
    }

    fn is_late(&self, pane: i64) -> bool {
        match self.assignment {
            Assignment::Panes { panes, .. } => panes.last_window_end(pane) <= self.watermark,
            Assignment::Whole => false,
        }
    }

    /// Adds rows of one pane; returns how many were late.
    fn add(
        &mut self,
        pane: i64,
        keys: &[ArrayRef],
        rows: usize,
        inputs: &[AggInputs],
    ) -> Result<u64> {
        if self.is_late(pane) {
            return Ok(rows as u64);
        }
        let entry = self.panes.entry(pane).or_insert(Pane {
            chunks: Vec::new(),
            live: None,
        });
        if entry.live.is_none() {
            entry.live = Some(LiveGroups::new(&self.key_schema, &self.aggs)?);
        }
        let live = entry.live.as_mut().expect("just set");
        live.update(keys, rows, inputs, &mut self.groups)?;
        Ok(0)
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
        if state.is_empty() {
            return Ok(None);
        }
        let (rows, keys, values) = state.evaluate()?;
        self.layout
            .build(rows, vec![start; rows], vec![end; rows], keys, values)
            .map(Some)
    }

    fn emit_whole(&mut self) -> Result<Emitted> {
        let Some(live) = self.panes.remove(&0).and_then(|p| p.live) else {
            return Ok(Emitted::default());
        };
        let (rows, keys, values) = live.evaluate()?;
        Ok(Emitted {
            batches: vec![self.layout.build(rows, vec![], vec![], keys, values)?],
            windows: 1,
        })
    }
}

impl Absorb for PaneAggregate {
    fn expressions(&self) -> (&[Arc<dyn PhysicalExpr>], &[AggSpec]) {
        (&self.key_exprs, &self.aggs)
    }

    /// Adds evaluated rows to their panes; returns how many were late.
    fn absorb(&mut self, part: Prepared) -> Result<u64> {
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
        let mut late = 0;
        let mut by_pane: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        for (i, &t) in times.iter().enumerate() {
            by_pane.entry(t).or_default().push(i as u32);
        }
        for (pane, idx) in by_pane {
            let idx = UInt32Array::from(idx);
            let part_keys = keys
                .iter()
                .map(|k| arrow::compute::take(k.as_ref(), &idx, None))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let part_inputs = inputs
                .iter()
                .map(|i| i.take(&idx))
                .collect::<Result<Vec<_>>>()?;
            late += self.add(pane, &part_keys, idx.len(), &part_inputs)?;
        }
        Ok(late)
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
        Ok(out)
    }

    fn finish(&mut self, emit: bool) -> Result<Emitted> {
        if !emit {
            self.panes.clear();
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
        self.panes
            .values()
            .map(|p| {
                p.chunks.iter().map(StateChunk::size).sum::<usize>()
                    + p.live.as_ref().map_or(0, LiveGroups::size)
            })
            .sum()
    }
}
