//! Object keys: `PREFIX/pipeline=NAME/dt=YYYY-MM-DD/hour=HH/part-START-END-SEQ.parquet`, derived
//! from the sink's name, the window range of the rows in the file, and a sequence number, so
//! that a retried or replayed upload of a file overwrites the same key.

use arrow::array::AsArray;
use arrow::compute::kernels::aggregate::{max, min};
use arrow::datatypes::{DataType, TimeUnit, TimestampNanosecondType};
use arrow::record_batch::RecordBatch;

/// The event-time range of the rows written to one file, in nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    /// Earliest `window_start` (or earliest time of the first timestamp column).
    pub start: Option<i64>,
    /// Latest `window_end` (or latest time of the first timestamp column).
    pub end: Option<i64>,
}

fn nanos_column(batch: &RecordBatch, name: Option<&str>) -> Option<arrow::array::ArrayRef> {
    let schema = batch.schema();
    let i = match name {
        Some(n) => schema
            .fields()
            .iter()
            .position(|f| f.name() == n && matches!(f.data_type(), DataType::Timestamp(..)))?,
        None => schema
            .fields()
            .iter()
            .position(|f| matches!(f.data_type(), DataType::Timestamp(..)))?,
    };
    arrow::compute::cast(
        batch.column(i),
        &DataType::Timestamp(TimeUnit::Nanosecond, None),
    )
    .ok()
}

impl TimeRange {
    /// Widens the range by `batch`: its `window_start`/`window_end` columns, else its first
    /// timestamp column.
    pub fn add(&mut self, batch: &RecordBatch) {
        let (lo, hi) = match (
            nanos_column(batch, Some("window_start")),
            nanos_column(batch, Some("window_end")),
        ) {
            (Some(s), Some(e)) => (s, e),
            _ => match nanos_column(batch, None) {
                Some(t) => (t.clone(), t),
                None => return,
            },
        };
        let lo = min(lo.as_primitive::<TimestampNanosecondType>());
        let hi = max(hi.as_primitive::<TimestampNanosecondType>());
        if let Some(lo) = lo {
            self.start = Some(self.start.map_or(lo, |s| s.min(lo)));
        }
        if let Some(hi) = hi {
            self.end = Some(self.end.map_or(hi, |e| e.max(hi)));
        }
    }
}

fn utc(ns: i64) -> chrono::NaiveDateTime {
    arrow::temporal_conversions::timestamp_ns_to_datetime(ns).unwrap_or_default()
}

/// The key of file number `seq` of sink `pipeline` holding rows of `range`; `fallback_ns`
/// (when the file was opened) stands in for a range the rows do not give.
pub fn object_key(
    prefix: &str,
    pipeline: &str,
    range: TimeRange,
    seq: u64,
    fallback_ns: i64,
) -> String {
    let start = range.start.unwrap_or(fallback_ns);
    let end = range.end.unwrap_or(start);
    let (s, e) = (utc(start), utc(end));
    let mut key = String::new();
    if !prefix.is_empty() {
        key.push_str(prefix.trim_matches('/'));
        key.push('/');
    }
    key.push_str(&format!(
        "pipeline={pipeline}/dt={}/hour={}/part-{}-{}-{seq:06}.parquet",
        s.format("%Y-%m-%d"),
        s.format("%H"),
        s.format("%Y%m%dT%H%M%S%.3fZ"),
        e.format("%Y%m%dT%H%M%S%.3fZ"),
    ));
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, TimestampMillisecondArray};
    use arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    #[test]
    fn keys_follow_the_window_range() {
        let t = DataType::Timestamp(TimeUnit::Millisecond, None);
        let schema = Arc::new(Schema::new(vec![
            Field::new("window_start", t.clone(), false),
            Field::new("window_end", t, false),
            Field::new("v", DataType::Float64, false),
        ]));
        let base = 1_767_225_600_000i64; // 2026-01-01T00:00:00Z
        let b = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(TimestampMillisecondArray::from(vec![base + 60_000, base])),
                Arc::new(TimestampMillisecondArray::from(vec![
                    base + 120_000,
                    base + 60_000,
                ])),
                Arc::new(Float64Array::from(vec![1.0, 2.0])),
            ],
        )
        .unwrap();
        let mut r = TimeRange::default();
        r.add(&b);
        assert_eq!(r.start, Some(base * 1_000_000));
        assert_eq!(
            object_key("edge/site1/", "summaries", r, 7, 0),
            "edge/site1/pipeline=summaries/dt=2026-01-01/hour=00/part-20260101T000000.000Z-20260101T000200.000Z-000007.parquet"
        );
        assert_eq!(
            object_key(
                "",
                "s",
                TimeRange::default(),
                0,
                base * 1_000_000 + 3_600_000_000_000
            ),
            "pipeline=s/dt=2026-01-01/hour=01/part-20260101T010000.000Z-20260101T010000.000Z-000000.parquet"
        );
    }
}
