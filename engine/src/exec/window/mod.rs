//! Event-time windows: the kinds and their time arithmetic, the assignment of rows to
//! windows, the partial aggregate state, and the operators that keep it — tumbling and
//! hopping windows as panes ([`tumble_hop`]), session windows per key ([`session`]). All
//! times are nanoseconds since the Unix epoch; windows are aligned to the epoch.

pub mod assign;
pub mod fill;
pub mod partial;
pub mod session;
pub mod state;
pub mod tumble_hop;

use arrow::record_batch::RecordBatch;
use datafusion::common::Result;

use super::isolate::RowFailure;

/// What closing windows produced: result rows and how many windows they belong to.
#[derive(Debug, Default)]
pub struct Emitted {
    /// Result rows, in the aggregate's column order.
    pub batches: Vec<RecordBatch>,
    /// Windows emitted (one per window, not per group).
    pub windows: u64,
    /// Windows emitted early, before they closed, to free state.
    pub early: u64,
}

/// What adding a batch did besides adding rows.
#[derive(Debug, Default)]
pub struct Processed {
    /// Rows dropped because their window had been emitted.
    pub late: u64,
    /// Rows dropped because their key had no state and new keys were refused.
    pub refused: u64,
    /// Rows dropped because their keys or aggregate inputs could not be evaluated.
    pub failed: Vec<RowFailure>,
}

/// An operator's state as Arrow arrays and a few numbers, taken for a checkpoint.
#[derive(Debug, Clone, Default)]
pub struct OperatorState {
    /// Its bookkeeping besides the partial aggregates (watermark, windows emitted early,
    /// session ids), as JSON.
    pub meta: serde_json::Value,
    /// The partial aggregate state: one row per (window or pane, group key) with its keys
    /// and each aggregate's state columns (`GroupsAccumulator::state`); `None` when empty.
    pub batch: Option<RecordBatch>,
    /// Open windows (panes for tumbling and hopping windows, sessions).
    pub windows: usize,
    /// Groups over all of them.
    pub groups: usize,
}

/// How much state a windowed aggregation holds open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extent {
    /// Open windows: panes of tumbling and hopping windows, sessions.
    pub windows: usize,
    /// Partial-state rows over all of them (a (window or pane, group key) each; a key in
    /// several sealed chunks of one pane counts once per chunk until they are merged).
    pub groups: usize,
}

/// A stateful windowed aggregation fed batch after batch.
pub trait WindowOperator: Send {
    /// Adds the rows of `batch` (the pipeline's pre-aggregate rows). Rows that are late, or
    /// whose keys or inputs cannot be evaluated, are left out and reported.
    fn process(&mut self, batch: &RecordBatch) -> Result<Processed>;
    /// Emits every window whose end is at or before the watermark `w`.
    fn advance(&mut self, w: i64) -> Result<Emitted>;
    /// End of input: emits (or drops) every open window.
    fn finish(&mut self, emit: bool) -> Result<Emitted>;
    /// Lowest `window_start` a future result can have (for views read by other views).
    fn start_lower_bound(&self) -> Option<i64>;
    /// Approximate bytes of state held (the accumulators' and group tables' own accounting).
    fn state_bytes(&self) -> usize;
    /// How much state is open: windows (panes, sessions) and their partial-state rows.
    fn extent(&self) -> Extent;
    /// Emits the oldest open windows now, as partial results, until at least `bytes` of
    /// state are freed (at least one window while any is open). Rows that arrive for them
    /// later start new state and are emitted, also partial, when the window closes.
    fn flush_oldest(&mut self, bytes: usize) -> Result<Emitted>;
    /// While `refuse` is true, rows whose group key has no state in their window yet are not
    /// taken (and reported as refused).
    fn refuse_new_keys(&mut self, refuse: bool);
    /// The whole state, for a checkpoint; the operator goes on as if nothing happened (its
    /// partial aggregates are taken out with `state` and merged back).
    fn snapshot(&mut self) -> Result<OperatorState>;
    /// Replaces the (empty) state with one taken by [`WindowOperator::snapshot`] from an
    /// operator of the same plan.
    fn restore(&mut self, state: OperatorState) -> Result<()>;
}

/// A checkpointed operator's bookkeeping that does not read.
pub(crate) fn meta_error(e: impl std::fmt::Display) -> datafusion::common::DataFusionError {
    datafusion::common::DataFusionError::Execution(format!("checkpointed window state: {e}"))
}

/// A window as written in `TUMBLE`, `HOP` or `SESSION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// Fixed, non-overlapping windows of `size`.
    Tumble {
        /// Window length (ns).
        size: i64,
    },
    /// Windows of `size` starting every `slide`.
    Hop {
        /// Distance between window starts (ns).
        slide: i64,
        /// Window length (ns).
        size: i64,
    },
    /// Per-key windows that close after `gap` without a row.
    Session {
        /// Inactivity gap (ns).
        gap: i64,
    },
}

impl WindowKind {
    /// The SQL name of this kind.
    pub fn name(&self) -> &'static str {
        match self {
            WindowKind::Tumble { .. } => "TUMBLE",
            WindowKind::Hop { .. } => "HOP",
            WindowKind::Session { .. } => "SESSION",
        }
    }
}

/// Fixed-size windows cut into panes: each window is a whole number of panes, and each row
/// belongs to exactly one pane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Panes {
    /// Window length (ns).
    pub size: i64,
    /// Distance between window starts (ns).
    pub slide: i64,
    /// Pane length: the greatest common divisor of size and slide.
    pub pane: i64,
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// `t` rounded down to a multiple of `step`.
pub fn floor_to(t: i64, step: i64) -> i64 {
    t - t.rem_euclid(step)
}

impl Panes {
    /// Panes for windows of `size` every `slide`.
    pub fn new(size: i64, slide: i64) -> Self {
        Self {
            size,
            slide,
            pane: gcd(size, slide),
        }
    }

    /// Start of the pane holding time `t`.
    pub fn pane_start(&self, t: i64) -> i64 {
        floor_to(t, self.pane)
    }

    /// End of the last window that contains the pane starting at `p`.
    pub fn last_window_end(&self, p: i64) -> i64 {
        floor_to(p, self.slide).saturating_add(self.size)
    }

    /// Starts of every window containing the pane starting at `p`, latest first.
    pub fn window_starts(&self, p: i64) -> impl Iterator<Item = i64> + '_ {
        let last = floor_to(p, self.slide);
        (0..)
            .map(move |k: i64| last - k * self.slide)
            .take_while(move |s| s.saturating_add(self.size) > p)
    }

    /// The earliest start of a window that can still be emitted once the watermark is `w`.
    pub fn first_open_start(&self, w: i64) -> i64 {
        floor_to(w.saturating_sub(self.size), self.slide).saturating_add(self.slide)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_panes_and_windows() {
        let p = Panes::new(10, 4);
        assert_eq!(p.pane, 2);
        assert_eq!(p.pane_start(7), 6);
        assert_eq!(p.pane_start(-1), -2);
        // pane [6,8) lies in windows starting at 4, 0 (and not -4: [-4,6) ends at 6)
        let starts: Vec<i64> = p.window_starts(6).collect();
        assert_eq!(starts, vec![4, 0]);
        assert_eq!(p.last_window_end(6), 14);
        // watermark 13: window [4,14) is still open, [0,10) is not
        assert_eq!(p.first_open_start(13), 4);
        assert_eq!(p.first_open_start(14), 8);
    }

    #[test]
    fn tumble_is_one_pane_per_window() {
        let p = Panes::new(5, 5);
        assert_eq!(p.pane, 5);
        assert_eq!(p.window_starts(10).collect::<Vec<_>>(), vec![10]);
        assert_eq!(p.first_open_start(12), 10);
        assert_eq!(p.first_open_start(15), 15);
    }
}
