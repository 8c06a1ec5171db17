//! The latest closed window of every group key of a windowed pipeline.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray};
use arrow::compute::interleave_record_batch;
use arrow::datatypes::TimestampNanosecondType;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};

/// Keeps, per group key, the row of the most recent window (by `window_end` when the
/// pipeline outputs it, else by arrival). Its size is bounded by the number of keys.
#[derive(Debug)]
pub struct LatestByKey {
    keys: Vec<usize>,
    end: Option<usize>,
    converter: Option<RowConverter>,
    current: Option<RecordBatch>,
}

/// Where a row of the new table comes from.
#[derive(Clone, Copy)]
struct Pick {
    batch: usize,
    row: usize,
    end: Option<i64>,
}

impl LatestByKey {
    /// Rows keyed by the output columns `keys`, ordered in time by the timestamp column `end`.
    pub fn new(
        schema: &arrow::datatypes::Schema,
        keys: Vec<usize>,
        end: Option<usize>,
    ) -> Result<Self, ArrowError> {
        let converter = if keys.is_empty() {
            None
        } else {
            Some(RowConverter::new(
                keys.iter()
                    .map(|&k| SortField::new(schema.field(k).data_type().clone()))
                    .collect(),
            )?)
        };
        Ok(Self {
            keys,
            end,
            converter,
            current: None,
        })
    }

    /// Takes the rows of newly emitted windows.
    pub fn update(&mut self, batch: &RecordBatch) -> Result<(), ArrowError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let mut picks: BTreeMap<Box<[u8]>, Pick> = BTreeMap::new();
        let sources: Vec<&RecordBatch> = self.current.iter().chain([batch]).collect();
        for (i, b) in sources.iter().enumerate() {
            let keys = self.row_keys(b)?;
            let ends = self
                .end
                .and_then(|c| b.column(c).as_primitive_opt::<TimestampNanosecondType>());
            for (row, key) in keys.into_iter().enumerate() {
                let end = ends.and_then(|e| e.is_valid(row).then(|| e.value(row)));
                let pick = Pick { batch: i, row, end };
                match picks.get_mut(&key) {
                    Some(p) if p.end > end => {}
                    Some(p) => *p = pick,
                    None => {
                        picks.insert(key, pick);
                    }
                }
            }
        }
        let indices: Vec<(usize, usize)> = picks.values().map(|p| (p.batch, p.row)).collect();
        let next = interleave_record_batch(&sources, &indices)?;
        self.current = Some(next);
        Ok(())
    }

    /// One row per key, in key order.
    pub fn batch(&self) -> Option<&RecordBatch> {
        self.current.as_ref()
    }

    fn row_keys(&self, b: &RecordBatch) -> Result<Vec<Box<[u8]>>, ArrowError> {
        let Some(conv) = &self.converter else {
            return Ok(vec![Box::from([] as [u8; 0]); b.num_rows()]);
        };
        let cols: Vec<_> = self.keys.iter().map(|&k| b.column(k).clone()).collect();
        let rows = conv.convert_columns(&cols)?;
        Ok(rows.iter().map(|r| Box::from(r.as_ref())).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, StringArray, TimestampNanosecondArray};
    use arrow::datatypes::{DataType, Field, Float64Type, Schema, TimeUnit};

    use super::*;

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![
            Field::new(
                "window_end",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                false,
            ),
            Field::new("machine", DataType::Utf8, true),
            Field::new("avg", DataType::Float64, true),
        ]))
    }

    fn batch(rows: &[(i64, Option<&str>, f64)]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(TimestampNanosecondArray::from_iter_values(
                    rows.iter().map(|r| r.0),
                )),
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1))),
                Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap()
    }

    fn rows(l: &LatestByKey) -> Vec<(Option<String>, f64)> {
        let b = l.batch().unwrap();
        let m = b.column(1).as_string::<i32>();
        let v = b.column(2).as_primitive::<Float64Type>();
        (0..b.num_rows())
            .map(|i| (m.is_valid(i).then(|| m.value(i).to_string()), v.value(i)))
            .collect()
    }

    #[test]
    fn keeps_the_newest_window_per_key() {
        let mut l = LatestByKey::new(&schema(), vec![1], Some(0)).unwrap();
        l.update(&batch(&[(10, Some("b"), 1.0), (10, Some("a"), 2.0)]))
            .unwrap();
        // a late-emitted older window does not replace a newer one; a null key is a key
        // (ordered first)
        l.update(&batch(&[
            (20, Some("a"), 3.0),
            (5, Some("b"), 9.0),
            (20, None, 4.0),
        ]))
        .unwrap();
        assert_eq!(
            rows(&l),
            vec![
                (None, 4.0),
                (Some("a".into()), 3.0),
                (Some("b".into()), 1.0)
            ]
        );
    }

    #[test]
    fn without_keys_keeps_one_row() {
        let mut l = LatestByKey::new(&schema(), vec![], Some(0)).unwrap();
        l.update(&batch(&[(30, Some("x"), 1.0), (40, Some("y"), 2.0)]))
            .unwrap();
        l.update(&batch(&[(35, Some("z"), 3.0)])).unwrap();
        assert_eq!(rows(&l), vec![(Some("y".into()), 2.0)]);
    }
}
