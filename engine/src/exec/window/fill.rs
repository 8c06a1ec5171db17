//! Gap filling (`fill_keys = 'table.column'` on a windowed view): when windows close, every
//! key of a reference table that had no rows in one of them gets a row of its own — `count`
//! 0, other aggregates as over no rows (null) — so that a silent machine shows as a row
//! with no samples instead of as nothing at all.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, TimestampNanosecondType};
use datafusion::common::{Result, ScalarValue};
use tracing::warn;

use super::floor_to;
use super::state::{GroupSlot, OutputLayout};
use crate::reference::ReferenceTable;

/// Most windows one watermark step fills (a jump beyond it skips ahead, with a warning).
pub const MAX_FILL_WINDOWS: i64 = 10_000;

/// The keys a windowed aggregation must emit in every window, and how.
pub struct GapFill {
    table: Arc<ReferenceTable>,
    column: usize,
    key_type: DataType,
    /// Position of the key among the output's group slots.
    key_slot: usize,
    layout: OutputLayout,
    /// Each aggregate's value over no rows.
    empties: Vec<ScalarValue>,
    size: i64,
    slide: i64,
    /// The first window start not filled yet (unknown until a window was emitted).
    next_start: Option<i64>,
}

impl std::fmt::Debug for GapFill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GapFill")
            .field("table", &self.table.name())
            .field("column", &self.column)
            .finish()
    }
}

impl GapFill {
    /// Fills the windows (`size` every `slide`) of an aggregation whose output is `layout`
    /// with the keys of `table`'s column `column` (cast to the key's `key_type`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        table: Arc<ReferenceTable>,
        column: usize,
        key_type: DataType,
        layout: OutputLayout,
        empties: Vec<ScalarValue>,
        size: i64,
        slide: i64,
    ) -> Self {
        let key_slot = layout
            .slots
            .iter()
            .position(|s| matches!(s, GroupSlot::Key(_)))
            .expect("a key, checked when planned");
        Self {
            table,
            column,
            key_type,
            key_slot,
            layout,
            empties,
            size,
            slide,
            next_start: None,
        }
    }

    /// One line for `--explain`.
    pub fn describe(&self) -> String {
        format!(
            "every window filled with the keys of table '{}' column '{}' that had no rows",
            self.table.name(),
            self.table.schema().field(self.column).name()
        )
    }

    /// The rows of `emitted` with the fill rows for the windows ending at or before `upto`,
    /// in one batch: the steps after the window (`locf`, `interpolate`) see each key's
    /// windows in order within a batch.
    pub fn fill_in(&mut self, emitted: Vec<RecordBatch>, upto: i64) -> Result<Vec<RecordBatch>> {
        let Some(extra) = self.fill(&emitted, upto)? else {
            return Ok(emitted);
        };
        let all: Vec<RecordBatch> = emitted.into_iter().chain([extra]).collect();
        let fields: Vec<_> = all[0]
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        let schema = Arc::new(arrow::datatypes::Schema::new(fields));
        Ok(vec![arrow::compute::concat_batches(&schema, &all)?])
    }

    /// The end of the last window in `emitted`.
    pub fn last_end(&self, emitted: &[RecordBatch]) -> Option<i64> {
        self.window_starts(emitted)
            .ok()?
            .into_iter()
            .flatten()
            .max()
            .map(|s| s + self.size)
    }

    /// The window start of every row of `emitted`, per batch.
    fn window_starts(&self, emitted: &[RecordBatch]) -> Result<Vec<Vec<i64>>> {
        let slot = |want: GroupSlot| self.layout.slots.iter().position(|s| *s == want);
        emitted
            .iter()
            .map(
                |b| match (slot(GroupSlot::WindowStart), slot(GroupSlot::WindowEnd)) {
                    (Some(s), _) => Ok(times(b.column(s))),
                    (None, Some(e)) => {
                        Ok(times(b.column(e)).iter().map(|t| t - self.size).collect())
                    }
                    (None, None) => {
                        datafusion::common::internal_err!("a filled window has no bounds")
                    }
                },
            )
            .collect()
    }

    /// The rows to add to `emitted` (the rows of windows that closed) for every window
    /// ending at or before `upto` not filled yet: one per table key without a row.
    fn fill(&mut self, emitted: &[RecordBatch], upto: i64) -> Result<Option<RecordBatch>> {
        // (window start, key) of every emitted row
        let mut present: HashSet<(i64, ScalarValue)> = HashSet::new();
        let mut first: Option<i64> = None;
        for (b, starts) in emitted.iter().zip(self.window_starts(emitted)?) {
            let keys = arrow::compute::cast(b.column(self.key_slot), &self.key_type)?;
            for (i, s) in starts.iter().enumerate() {
                present.insert((*s, ScalarValue::try_from_array(&keys, i)?));
                first = Some(first.map_or(*s, |f: i64| f.min(*s)));
            }
        }
        let Some(mut start) = self.next_start.or(first) else {
            return Ok(None);
        };
        if upto.saturating_sub(start) / self.slide > MAX_FILL_WINDOWS {
            let skipped = floor_to(upto - MAX_FILL_WINDOWS * self.slide, self.slide);
            warn!(table = %self.table.name(), from = start, to = skipped,
                "gap filling skips ahead: the watermark jumped over more than {MAX_FILL_WINDOWS} windows");
            start = skipped;
        }
        let version = self.table.current();
        let table_keys = arrow::compute::cast(version.batch.column(self.column), &self.key_type)?;
        let mut starts = Vec::new();
        let mut keys = Vec::new();
        let mut s = start;
        while s.saturating_add(self.size) <= upto {
            for i in 0..table_keys.len() {
                if table_keys.is_null(i) {
                    continue;
                }
                let k = ScalarValue::try_from_array(&table_keys, i)?;
                if !present.contains(&(s, k.clone())) {
                    starts.push(s);
                    keys.push(k);
                }
            }
            s += self.slide;
        }
        self.next_start = Some(s);
        if starts.is_empty() {
            return Ok(None);
        }
        let n = starts.len();
        let ends: Vec<i64> = starts.iter().map(|s| s + self.size).collect();
        let key_array: ArrayRef = ScalarValue::iter_to_array(keys)?;
        let values = self
            .empties
            .iter()
            .map(|v| v.to_array_of_size(n))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(self.layout.build(
            n,
            starts,
            ends,
            vec![key_array],
            values,
            false,
        )?))
    }
}

fn times(a: &ArrayRef) -> Vec<i64> {
    a.as_primitive::<TimestampNanosecondType>()
        .values()
        .to_vec()
}
