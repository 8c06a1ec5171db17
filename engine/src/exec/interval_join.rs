//! Two streams joined within a time bound: `a JOIN b ON a.k = b.k AND b.ts BETWEEN a.ts - L
//! AND a.ts + U` (an interval join), or two windowed views joined on `window_end` (a window
//! join: the bound is zero). Each side keeps its rows, per key, for as long as a row of the
//! other side not yet late could still match them; a pair is emitted when its second row
//! arrives. State is released by the watermark: it is bounded by the time bound (plus the
//! watermark delay) × the rows per key in that time × keys, never by the rows seen.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array};
use arrow::compute::{filter_record_batch, take};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::record_batch::RecordBatchOptions;
use datafusion::common::Result;
use datafusion::physical_expr::PhysicalExpr;

use super::kept_rows::{KeptRow, KeptRows, SideKeys};

/// How the two sides are joined.
#[derive(Debug)]
pub struct IntervalPlan {
    /// Key expressions over each side's rows (left, right), in the same order.
    pub keys: [Vec<Arc<dyn PhysicalExpr>>; 2],
    /// Each side's time column (in its rows).
    pub time: [usize; 2],
    /// `right.time - left.time` is at least `-before`...
    pub before: i64,
    /// ... and at most `after` (ns).
    pub after: i64,
    /// The whole join condition over both sides' columns (left first), checked on each pair.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// Output columns: the left side's, then the right side's.
    pub schema: SchemaRef,
    /// Key column types (both sides' keys are cast to them).
    pub key_types: Vec<DataType>,
    /// Each side's columns.
    pub sides: [SchemaRef; 2],
    /// Text for `--explain`.
    pub description: String,
}

/// A join of two streams, as its pipeline drives it.
pub trait JoinOperator: Send {
    /// A batch of side `s` (0: left, 1: right): the rows it completes now.
    fn process(&mut self, s: usize, batch: &RecordBatch) -> Result<JoinProgress>;
    /// The watermark reached `w`: the rows it completes, and state released.
    fn advance(&mut self, w: i64) -> Result<Option<RecordBatch>>;
    /// Each side's kept rows, for a checkpoint (`None`: none).
    fn snapshot(&self) -> Result<[Option<RecordBatch>; 2]>;
    /// Keeps the rows of side `s` a checkpoint held (before any new row arrives).
    fn restore(&mut self, s: usize, batch: &RecordBatch) -> Result<()>;
    /// Approximate bytes of kept rows.
    fn state_bytes(&self) -> usize;
    /// Rows kept on both sides.
    fn state_rows(&self) -> usize;
    /// Drops every kept row.
    fn clear(&mut self);
    /// One line for `weir check --explain`.
    fn description(&self) -> &str;
}

/// What processing a batch did.
pub struct JoinProgress {
    /// Joined rows.
    pub out: Option<RecordBatch>,
    /// Rows dropped as late: the other side's rows they could match were released.
    pub late: u64,
}

/// The interval join's state and logic.
pub struct IntervalJoin {
    plan: IntervalPlan,
    keys: SideKeys,
    sides: [KeptRows; 2],
    /// The join's watermark: rows at or before it are late.
    watermark: Option<i64>,
}

impl std::fmt::Debug for IntervalJoin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.plan.description)
    }
}

impl IntervalJoin {
    /// A join as planned, with empty state.
    pub fn new(plan: IntervalPlan) -> Result<Self> {
        let keys = SideKeys::new(plan.keys.clone(), plan.key_types.clone(), plan.time)?;
        Ok(Self {
            plan,
            keys,
            sides: Default::default(),
            watermark: None,
        })
    }

    /// How long a row of side `s` at time `t` is kept: while `t + keep(s)` is after the
    /// watermark (a row of the other side not yet late may still match it).
    fn keep(&self, s: usize) -> i64 {
        if s == 0 {
            self.plan.after
        } else {
            self.plan.before
        }
    }

    fn restore_side(&mut self, s: usize, batch: &RecordBatch) -> Result<()> {
        let (times, _, encoded) = self.keys.read(s, batch)?;
        self.sides[s].add(
            batch.clone(),
            (0..batch.num_rows()).map(|i| encoded.row(i).data()),
            times.values().iter().copied(),
        );
        Ok(())
    }

    /// A batch of side `s` (0: left, 1: right): its pairs with the other side's kept rows,
    /// then its rows are kept.
    fn process_batch(&mut self, s: usize, batch: &RecordBatch) -> Result<JoinProgress> {
        let n = batch.num_rows();
        let (times, keys, encoded) = self.keys.read(s, batch)?;
        let w = self.watermark.unwrap_or(i64::MIN);
        let other = &self.sides[1 - s];
        // the other side's time must lie in [t + lo, t + hi]
        let (lo, hi) = if s == 0 {
            (-self.plan.before, self.plan.after)
        } else {
            (-self.plan.after, self.plan.before)
        };
        let mut late = 0;
        let mut keep = Vec::with_capacity(n);
        let (mut mine, mut theirs) = (Vec::new(), Vec::new());
        for i in 0..n {
            // a null key matches nothing
            if times.is_null(i) || keys.iter().any(|k| k.is_null(i)) {
                keep.push(false);
                continue;
            }
            let t = times.value(i);
            if t <= w {
                late += 1;
                keep.push(false);
                continue;
            }
            keep.push(t.saturating_add(self.keep(s)) > w);
            let rows = other.of(encoded.row(i).as_ref());
            let (from, to) = (t.saturating_add(lo), t.saturating_add(hi));
            let first = rows.partition_point(|r| r.time < from);
            for r in rows[first..].iter().take_while(|r| r.time <= to) {
                mine.push(i as u32);
                theirs.push(Some(*r));
            }
        }
        let out = if mine.is_empty() {
            None
        } else {
            Some(self.pairs(s, batch, &mine, &theirs)?)
        };
        // keep this batch's rows that can still match
        let kept = filter_record_batch(batch, &BooleanArray::from(keep.clone()))?;
        let kept_rows: Vec<usize> = (0..n).filter(|&i| keep[i]).collect();
        self.sides[s].add(
            kept,
            kept_rows.iter().map(|&i| encoded.row(i).data()),
            kept_rows.iter().map(|&i| times.value(i)),
        );
        Ok(JoinProgress { out, late })
    }

    /// The output rows of the pairs (`mine[j]` of `batch`, `theirs[j]` of the other side),
    /// those the whole condition holds for.
    fn pairs(
        &self,
        s: usize,
        batch: &RecordBatch,
        mine: &[u32],
        theirs: &[Option<KeptRow>],
    ) -> Result<RecordBatch> {
        let their_cols = self.sides[1 - s].columns(theirs, &self.plan.sides[1 - s])?;
        let idx = UInt32Array::from(mine.to_vec());
        let my_cols = batch
            .columns()
            .iter()
            .map(|c| take(c, &idx, None))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let cols: Vec<ArrayRef> = if s == 0 {
            my_cols.into_iter().chain(their_cols).collect()
        } else {
            their_cols.into_iter().chain(my_cols).collect()
        };
        let loose = Arc::new(Schema::new(
            self.plan
                .schema
                .fields()
                .iter()
                .zip(&cols)
                .map(|(f, c)| {
                    f.as_ref()
                        .clone()
                        .with_data_type(c.data_type().clone())
                        .with_nullable(true)
                })
                .collect::<Vec<_>>(),
        ));
        let joined = RecordBatch::try_new_with_options(
            loose,
            cols,
            &RecordBatchOptions::new().with_row_count(Some(mine.len())),
        )?;
        let joined = match &self.plan.filter {
            None => joined,
            Some(f) => {
                let mask = f.evaluate(&joined)?.into_array(joined.num_rows())?;
                let mask = mask.as_boolean();
                let mask = match mask.nulls() {
                    Some(_) => arrow::compute::prep_null_mask_filter(mask),
                    None => mask.clone(),
                };
                filter_record_batch(&joined, &mask)?
            }
        };
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.plan.schema),
            joined.columns().to_vec(),
            &RecordBatchOptions::new().with_row_count(Some(joined.num_rows())),
        )?)
    }

    /// The watermark reached `w`: rows that no row still to come can match are released.
    fn release(&mut self, w: i64) {
        if self.watermark.is_some_and(|old| w <= old) {
            return;
        }
        self.watermark = Some(w);
        for s in 0..2 {
            let keep = self.keep(s);
            // rows are in time order: those no row still to come can match come first
            let upto = w.saturating_sub(keep);
            self.sides[s].release(upto, |rows| rows.partition_point(|r| r.time <= upto));
        }
    }
}

impl JoinOperator for IntervalJoin {
    fn process(&mut self, s: usize, batch: &RecordBatch) -> Result<JoinProgress> {
        self.process_batch(s, batch)
    }

    fn advance(&mut self, w: i64) -> Result<Option<RecordBatch>> {
        self.release(w);
        Ok(None)
    }

    fn snapshot(&self) -> Result<[Option<RecordBatch>; 2]> {
        Ok([self.sides[0].snapshot()?, self.sides[1].snapshot()?])
    }

    fn restore(&mut self, s: usize, batch: &RecordBatch) -> Result<()> {
        self.restore_side(s, batch)
    }

    fn state_bytes(&self) -> usize {
        self.sides.iter().map(KeptRows::bytes).sum()
    }

    fn state_rows(&self) -> usize {
        self.sides.iter().map(KeptRows::len).sum()
    }

    fn clear(&mut self) {
        self.sides.iter_mut().for_each(KeptRows::clear);
    }

    fn description(&self) -> &str {
        &self.plan.description
    }
}
