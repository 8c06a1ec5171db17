//! A bounded buffer of the most recent rows: at most `max_rows`, none older than `max_age`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;

/// The most recent rows of a stream, bounded by a row count and optionally by age (time since
/// the rows arrived).
#[derive(Debug)]
pub struct RowRing {
    max_rows: usize,
    max_age: Option<Duration>,
    batches: VecDeque<(Instant, RecordBatch)>,
    rows: usize,
}

impl RowRing {
    /// An empty ring keeping at most `max_rows` rows, each for at most `max_age`.
    pub fn new(max_rows: usize, max_age: Option<Duration>) -> Self {
        Self {
            max_rows,
            max_age,
            batches: VecDeque::new(),
            rows: 0,
        }
    }

    /// Adds `batch`, which arrived at `now`, dropping the oldest rows beyond the bounds.
    pub fn push(&mut self, batch: &RecordBatch, now: Instant) {
        let n = batch.num_rows();
        if n == 0 || self.max_rows == 0 {
            return;
        }
        let batch = if n > self.max_rows {
            batch.slice(n - self.max_rows, self.max_rows)
        } else {
            batch.clone()
        };
        self.rows += batch.num_rows();
        self.batches.push_back((now, batch));
        while self.rows > self.max_rows {
            let excess = self.rows - self.max_rows;
            let Some((_, front)) = self.batches.front_mut() else {
                break;
            };
            if front.num_rows() <= excess {
                self.rows -= front.num_rows();
                self.batches.pop_front();
            } else {
                *front = front.slice(excess, front.num_rows() - excess);
                self.rows -= excess;
            }
        }
        self.expire(now);
    }

    /// Drops rows older than the age bound; true if any were dropped.
    pub fn expire(&mut self, now: Instant) -> bool {
        let Some(age) = self.max_age else {
            return false;
        };
        let mut dropped = false;
        while let Some((at, b)) = self.batches.front() {
            if now.saturating_duration_since(*at) <= age {
                break;
            }
            self.rows -= b.num_rows();
            self.batches.pop_front();
            dropped = true;
        }
        dropped
    }

    /// The rows, oldest first.
    pub fn batches(&self) -> Vec<RecordBatch> {
        self.batches.iter().map(|(_, b)| b.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};

    use super::*;

    fn batch(values: std::ops::Range<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(values))]).unwrap()
    }

    fn values(r: &RowRing) -> Vec<i64> {
        r.batches()
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect()
    }

    #[test]
    fn keeps_the_last_rows_across_batch_boundaries() {
        let mut r = RowRing::new(5, None);
        let t = Instant::now();
        r.push(&batch(0..3), t);
        r.push(&batch(3..7), t);
        assert_eq!(values(&r), vec![2, 3, 4, 5, 6]);
        r.push(&batch(7..20), t);
        assert_eq!(values(&r), (15..20).collect::<Vec<_>>());
    }

    #[test]
    fn drops_rows_older_than_the_age_bound() {
        let mut r = RowRing::new(100, Some(Duration::from_secs(10)));
        let t = Instant::now();
        r.push(&batch(0..3), t);
        r.push(&batch(3..5), t + Duration::from_secs(6));
        assert!(r.expire(t + Duration::from_secs(11)));
        assert_eq!(values(&r), vec![3, 4]);
        assert!(!r.expire(t + Duration::from_secs(12)));
        assert!(r.expire(t + Duration::from_secs(17)));
        assert!(values(&r).is_empty());
    }
}
