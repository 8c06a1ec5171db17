//! `a ASOF JOIN b MATCH_CONDITION (a.ts >= b.ts) ON a.k = b.k`: each row of the left
//! stream with the latest row of the right stream at (or before) its time, per key — the
//! setpoint or operating mode in force when a sample was taken. A left row waits until the
//! watermark passes its time (every right row at or before it has arrived), then leaves
//! with its match, or with nulls when the key had none yet. The right side keeps, per key,
//! its latest row at or before the watermark and the rows after it; the left side keeps the
//! rows the watermark has not reached.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow::compute::{concat_batches, filter_record_batch};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatchOptions;
use datafusion::common::Result;
use datafusion::physical_expr::PhysicalExpr;

use super::interval_join::{JoinOperator, JoinProgress};
use super::kept_rows::{KeptRows, SideKeys, time_column};

/// How an ASOF join is planned.
#[derive(Debug)]
pub struct AsOfPlan {
    /// Key expressions over each side's rows (left, right).
    pub keys: [Vec<Arc<dyn PhysicalExpr>>; 2],
    /// Each side's time column.
    pub time: [usize; 2],
    /// `>`: the right row must be strictly before the left one (`>=`: at or before).
    pub strict: bool,
    /// Output columns: the left side's, then the right side's (nullable).
    pub schema: SchemaRef,
    /// The right side's columns.
    pub right_schema: SchemaRef,
    /// Key column types.
    pub key_types: Vec<DataType>,
    /// Text for `--explain`.
    pub description: String,
}

/// The ASOF join's state and logic.
pub struct AsOfJoin {
    plan: AsOfPlan,
    keys: SideKeys,
    /// Left rows waiting for the watermark.
    waiting: Vec<RecordBatch>,
    /// Right rows kept, per key in time order.
    right: KeptRows,
    watermark: Option<i64>,
}

impl AsOfJoin {
    /// A join as planned, with empty state.
    pub fn new(plan: AsOfPlan) -> Result<Self> {
        let keys = SideKeys::new(plan.keys.clone(), plan.key_types.clone(), plan.time)?;
        Ok(Self {
            plan,
            keys,
            waiting: Vec::new(),
            right: KeptRows::default(),
            watermark: None,
        })
    }

    /// Keeps right rows (all of `batch`), in time order per key; returns how many were at
    /// or before the watermark (late: left rows before them already left).
    fn keep_right(&mut self, batch: &RecordBatch) -> Result<u64> {
        let (times, keys, encoded) = self.keys.read(1, batch)?;
        let w = self.watermark.unwrap_or(i64::MIN);
        let valid: Vec<bool> = (0..batch.num_rows())
            .map(|i| !times.is_null(i) && !keys.iter().any(|k| k.is_null(i)))
            .collect();
        let kept = filter_record_batch(batch, &BooleanArray::from(valid.clone()))?;
        let rows: Vec<usize> = (0..valid.len()).filter(|&i| valid[i]).collect();
        let late = rows.iter().filter(|&&i| times.value(i) <= w).count() as u64;
        self.right.add(
            kept,
            rows.iter().map(|&i| encoded.row(i).data()),
            rows.iter().map(|&i| times.value(i)),
        );
        Ok(late)
    }

    /// Left rows at or before `w`, joined; the others keep waiting.
    fn complete(&mut self, w: i64) -> Result<Option<RecordBatch>> {
        if self.waiting.is_empty() {
            return Ok(None);
        }
        let schema = self.waiting[0].schema();
        let all = concat_batches(&schema, &self.waiting)?;
        self.waiting.clear();
        let times = time_column(&all, self.plan.time[0])?;
        let due: BooleanArray = times
            .iter()
            .map(|t| Some(t.is_some_and(|t| t <= w)))
            .collect();
        let later = arrow::compute::not(&due)?;
        let rest = filter_record_batch(&all, &later)?;
        if rest.num_rows() > 0 {
            self.waiting.push(rest);
        }
        let ready = filter_record_batch(&all, &due)?;
        if ready.num_rows() == 0 {
            return Ok(None);
        }
        let (times, keys, encoded) = self.keys.read(0, &ready)?;
        let mut picks = Vec::with_capacity(ready.num_rows());
        for i in 0..ready.num_rows() {
            let t = times.value(i);
            picks.push(if keys.iter().any(|k| k.is_null(i)) {
                None
            } else {
                let rows = self.right.of(encoded.row(i).as_ref());
                let n = if self.plan.strict {
                    rows.partition_point(|r| r.time < t)
                } else {
                    rows.partition_point(|r| r.time <= t)
                };
                n.checked_sub(1).map(|j| rows[j])
            });
        }
        let right_cols = self.right.columns(&picks, &self.plan.right_schema)?;
        let cols: Vec<ArrayRef> = ready.columns().iter().cloned().chain(right_cols).collect();
        Ok(Some(RecordBatch::try_new_with_options(
            Arc::clone(&self.plan.schema),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(ready.num_rows())),
        )?))
    }

    /// Per key, the right rows before the latest one at or before `w` are released.
    fn release(&mut self, w: i64) {
        self.right.release(w, |rows| {
            rows.partition_point(|r| r.time <= w).saturating_sub(1)
        });
    }
}

impl JoinOperator for AsOfJoin {
    fn process(&mut self, s: usize, batch: &RecordBatch) -> Result<JoinProgress> {
        if s == 1 {
            let late = self.keep_right(batch)?;
            return Ok(JoinProgress { out: None, late });
        }
        // left rows at or before the watermark: their match may have been released
        let w = self.watermark.unwrap_or(i64::MIN);
        let times = time_column(batch, self.plan.time[0])?;
        let on_time: BooleanArray = times
            .iter()
            .map(|t| Some(t.is_some_and(|t| t > w)))
            .collect();
        let late = (batch.num_rows() - on_time.true_count()) as u64;
        let kept = filter_record_batch(batch, &on_time)?;
        if kept.num_rows() > 0 {
            self.waiting.push(kept);
        }
        Ok(JoinProgress { out: None, late })
    }

    fn advance(&mut self, w: i64) -> Result<Option<RecordBatch>> {
        if self.watermark.is_some_and(|old| w <= old) {
            return Ok(None);
        }
        self.watermark = Some(w);
        let out = self.complete(w)?;
        self.release(w);
        Ok(out)
    }

    fn snapshot(&self) -> Result<[Option<RecordBatch>; 2]> {
        let left = match self.waiting.first() {
            Some(b) => Some(concat_batches(&b.schema(), &self.waiting)?),
            None => None,
        };
        let right = self.right.snapshot()?;
        Ok([left, right])
    }

    fn restore(&mut self, s: usize, batch: &RecordBatch) -> Result<()> {
        if s == 0 {
            self.waiting.push(batch.clone());
        } else {
            self.keep_right(batch)?;
        }
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        self.right.bytes()
            + self
                .waiting
                .iter()
                .map(|b| b.get_array_memory_size())
                .sum::<usize>()
    }

    fn state_rows(&self) -> usize {
        self.right.len() + self.waiting.iter().map(|b| b.num_rows()).sum::<usize>()
    }

    fn clear(&mut self) {
        self.waiting.clear();
        self.right.clear();
    }

    fn description(&self) -> &str {
        &self.plan.description
    }
}
