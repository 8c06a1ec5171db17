//! The window table functions at run time: add `window_start` and `window_end` to each row
//! of a stream.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, PrimitiveArray};
use arrow::datatypes::{SchemaRef, TimestampNanosecondType};
use arrow::record_batch::RecordBatch;
use datafusion::common::Result;

use super::{Panes, WindowKind};

/// Adds window columns computed from the event-time column.
///
/// For `TUMBLE` the columns hold the row's window. For `HOP` they hold the row's pane (the
/// aggregation merges panes into windows); for `SESSION` both hold the row's time (the
/// aggregation finds the session). The compiler only lets `HOP` and `SESSION` columns pass
/// through to the `GROUP BY`, so these internal values are never seen.
#[derive(Debug, Clone)]
pub struct WindowAssign {
    /// Event-time column of the stream.
    pub time_col: usize,
    /// Which window.
    pub kind: WindowKind,
    /// Stream columns kept, in order (an earlier `window_start`/`window_end` is replaced).
    pub keep: Vec<usize>,
    /// Output schema: the kept columns, then `window_start`, `window_end`.
    pub schema: SchemaRef,
}

impl WindowAssign {
    /// Adds the window columns to `batch`.
    pub fn apply(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let ts = batch
            .column(self.time_col)
            .as_primitive::<TimestampNanosecondType>();
        let tz = ts.timezone().map(Arc::<str>::from);
        let (start, end): (
            PrimitiveArray<TimestampNanosecondType>,
            PrimitiveArray<TimestampNanosecondType>,
        ) = match self.kind {
            WindowKind::Session { .. } => (ts.clone(), ts.clone()),
            WindowKind::Tumble { size } | WindowKind::Hop { size, .. } => {
                let slide = match self.kind {
                    WindowKind::Hop { slide, .. } => slide,
                    _ => size,
                };
                let panes = Panes::new(size, slide);
                let start: PrimitiveArray<TimestampNanosecondType> =
                    ts.unary(|t| panes.pane_start(t));
                let end = start.unary(|s| s.saturating_add(panes.pane));
                (start, end)
            }
        };
        let mut cols: Vec<ArrayRef> = self
            .keep
            .iter()
            .map(|&i| Arc::clone(batch.column(i)))
            .collect();
        cols.push(Arc::new(start.with_timezone_opt(tz.clone())));
        cols.push(Arc::new(end.with_timezone_opt(tz)));
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), cols)?)
    }
}
