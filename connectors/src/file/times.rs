//! Event times in files: text columns read as RFC 3339 or as epoch numbers in the source's
//! `timestamp_unit`, integer and float columns of Parquet files scaled from that unit, and a
//! warning when the times of a file are implausible (a unit mismatch, which would otherwise
//! pass silently: epoch milliseconds taken as nanoseconds land in January 1970).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use crate::columns::{ColumnBuffer, EpochUnit};

/// 1990-01-01T00:00:00Z in nanoseconds: earlier event times are implausible.
const PLAUSIBLE_FROM: i64 = 631_152_000 * 1_000_000_000;
/// 2100-01-01T00:00:00Z in nanoseconds: later event times are implausible.
const PLAUSIBLE_UNTIL: i64 = 4_102_444_800 * 1_000_000_000;

fn is_time(t: &DataType) -> bool {
    matches!(t, DataType::Timestamp(..))
}

/// `schema` with its `TIMESTAMP` columns read as text (they are converted by
/// [`parse_times`]).
pub fn text_schema(schema: &SchemaRef) -> SchemaRef {
    if !schema.fields().iter().any(|f| is_time(f.data_type())) {
        return Arc::clone(schema);
    }
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| {
                if is_time(f.data_type()) {
                    Arc::new(Field::new(f.name(), DataType::Utf8, true))
                } else {
                    Arc::clone(f)
                }
            })
            .collect::<Vec<_>>(),
    ))
}

/// A batch decoded with [`text_schema`] converted to `schema`: each time is RFC 3339 text
/// or an epoch number of `unit`. The first value that is neither is an error.
pub fn parse_times(
    batch: RecordBatch,
    schema: &SchemaRef,
    unit: EpochUnit,
) -> Result<RecordBatch, ArrowError> {
    if !schema.fields().iter().any(|f| is_time(f.data_type())) {
        return Ok(batch);
    }
    let mut cols = batch.columns().to_vec();
    for (i, f) in schema.fields().iter().enumerate() {
        if !is_time(f.data_type()) {
            continue;
        }
        let text = cast(&cols[i], &DataType::Utf8)?;
        let text = text.as_string::<i32>();
        if let Some(times) = integer_epochs(text, unit) {
            cols[i] = cast(&times, f.data_type())?;
            continue;
        }
        let mut out = ColumnBuffer::new(f.data_type()).expect("timestamps are supported");
        for v in text.iter() {
            match v {
                None => out.push_null(),
                Some(s) if s.trim().is_empty() => out.push_null(),
                Some(s) => out.push_text(s, unit).map_err(|e| {
                    ArrowError::ParseError(format!("cannot parse column {}: {e}", f.name()))
                })?,
            }
        }
        cols[i] = out.finish()?;
    }
    RecordBatch::try_new(Arc::clone(schema), cols)
}

/// The times of `text` when every one is a plain integer (epoch numbers of `unit`, as machines
/// write them) scaled to nanoseconds in one pass; `None` when any is not (RFC 3339 text,
/// fractions, blanks, white space, nulls, overflow): the row-by-row parser takes those.
fn integer_epochs(text: &arrow::array::StringArray, unit: EpochUnit) -> Option<ArrayRef> {
    if text.null_count() > 0 {
        return None;
    }
    let scale = unit.nanos();
    let ns = text
        .iter()
        .map(|v| v?.parse::<i64>().ok()?.checked_mul(scale))
        .collect::<Option<Vec<i64>>>()?;
    Some(Arc::new(arrow::array::TimestampNanosecondArray::from(ns)))
}

/// Integer and float columns of a Parquet batch that fill declared `TIMESTAMP` columns,
/// scaled from `unit` to nanoseconds (Parquet timestamp columns keep their own unit).
pub fn scale_epochs(
    batch: RecordBatch,
    schema: &SchemaRef,
    unit: EpochUnit,
) -> Result<RecordBatch, ArrowError> {
    let have = batch.schema();
    let mut cols = batch.columns().to_vec();
    let mut fields: Vec<Arc<Field>> = have.fields().iter().cloned().collect();
    let mut changed = false;
    for f in schema.fields().iter().filter(|f| is_time(f.data_type())) {
        let Some(i) = have
            .fields()
            .iter()
            .position(|h| h.name().eq_ignore_ascii_case(f.name()))
        else {
            continue;
        };
        let c = &cols[i];
        let scaled: ArrayRef = if c.data_type().is_integer() {
            let v = cast(c, &DataType::Int64)?;
            let scale = unit.nanos();
            let v: Int64Array = v.as_primitive::<Int64Type>().try_unary(|x: i64| {
                x.checked_mul(scale).ok_or_else(|| {
                    ArrowError::ComputeError(format!(
                        "epoch time {x} in column {} is too large in {unit:?}",
                        f.name()
                    ))
                })
            })?;
            Arc::new(v)
        } else if c.data_type().is_floating() {
            let v = cast(c, &DataType::Float64)?;
            let scale = unit.nanos() as f64;
            let v: &Float64Array = v.as_primitive();
            Arc::new(v.unary::<_, Int64Type>(|x| (x * scale).round() as i64))
        } else {
            continue;
        };
        cols[i] = cast(&scaled, &DataType::Timestamp(TimeUnit::Nanosecond, None))?;
        fields[i] = Arc::new(Field::new(
            have.field(i).name(),
            cols[i].data_type().clone(),
            true,
        ));
        changed = true;
    }
    if !changed {
        return Ok(batch);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)
}

/// The first implausible event time of a batch (before 1990 or from 2100), if any.
pub fn implausible(batch: &RecordBatch, col: usize) -> Option<i64> {
    let times = batch
        .column(col)
        .as_primitive_opt::<arrow::datatypes::TimestampNanosecondType>()?;
    times
        .iter()
        .flatten()
        .find(|t| !(PLAUSIBLE_FROM..PLAUSIBLE_UNTIL).contains(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{StringArray, TimestampNanosecondArray};

    fn declared() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
            Field::new("v", DataType::Int64, true),
        ]))
    }

    #[test]
    fn text_times_are_rfc3339_or_epochs_in_the_unit() {
        let s = declared();
        let b = RecordBatch::try_new(
            text_schema(&s),
            vec![
                Arc::new(StringArray::from(vec![
                    Some("1700000000000"),
                    Some("1700000000000.5"),
                    Some("2023-11-14T22:13:20Z"),
                    None,
                ])),
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
            ],
        )
        .unwrap();
        let got = parse_times(b, &s, EpochUnit::Millis).unwrap();
        let t = got
            .column(0)
            .as_primitive::<arrow::datatypes::TimestampNanosecondType>();
        let ms = 1_700_000_000_000i64 * 1_000_000;
        assert_eq!(t.value(0), ms);
        assert_eq!(t.value(1), ms + 500_000);
        assert_eq!(t.value(2), ms);
        assert!(t.is_null(3));
        let bad = RecordBatch::try_new(
            text_schema(&s),
            vec![
                Arc::new(StringArray::from(vec!["soon"])),
                Arc::new(Int64Array::from(vec![1])),
            ],
        )
        .unwrap();
        let e = parse_times(bad, &s, EpochUnit::Millis).unwrap_err();
        assert!(e.to_string().contains("cannot parse column ts"), "{e}");
    }

    /// Integer epochs take the one-pass path; a column with anything else in it takes the
    /// row-by-row parser; both give the same times, and overflow is still an error.
    #[test]
    fn integer_epochs_take_the_fast_path_with_the_same_result() {
        let s = declared();
        let times = |values: Vec<&str>, unit| {
            let n = values.len() as i64;
            let b = RecordBatch::try_new(
                text_schema(&s),
                vec![
                    Arc::new(StringArray::from(values)),
                    Arc::new(Int64Array::from((0..n).collect::<Vec<_>>())),
                ],
            )
            .unwrap();
            parse_times(b, &s, unit).map(|b| {
                let t = b
                    .column(0)
                    .as_primitive::<arrow::datatypes::TimestampNanosecondType>();
                t.iter().collect::<Vec<_>>()
            })
        };
        let ints = vec!["1700000000", "-5", "+7", "0"];
        assert!(integer_epochs(&StringArray::from(ints.clone()), EpochUnit::Seconds).is_some());
        let fast = times(ints.clone(), EpochUnit::Seconds).unwrap();
        let s_ns = 1_000_000_000;
        assert_eq!(
            fast,
            vec![
                Some(1_700_000_000 * s_ns),
                Some(-5 * s_ns),
                Some(7 * s_ns),
                Some(0)
            ]
        );
        // the same integers with white space or a blank among them: the slow path
        let mixed = vec![" 1700000000", "-5", "+7", "0 ", ""];
        assert!(integer_epochs(&StringArray::from(mixed.clone()), EpochUnit::Seconds).is_none());
        let slow = times(mixed, EpochUnit::Seconds).unwrap();
        assert_eq!(slow[..4], fast[..]);
        assert_eq!(slow[4], None);
        // epoch seconds beyond what nanoseconds hold
        let e = times(vec!["9300000000000"], EpochUnit::Seconds).unwrap_err();
        assert!(e.to_string().contains("cannot parse column ts"), "{e}");
    }

    #[test]
    fn parquet_epochs_are_scaled_and_implausible_times_found() {
        let have = RecordBatch::try_from_iter([
            (
                "ts",
                Arc::new(Int64Array::from(vec![1_700_000_000_000, 1_700_000_000_500])) as _,
            ),
            ("v", Arc::new(Int64Array::from(vec![1, 2])) as _),
        ])
        .unwrap();
        let got = scale_epochs(have.clone(), &declared(), EpochUnit::Millis).unwrap();
        let t = got
            .column(0)
            .as_primitive::<arrow::datatypes::TimestampNanosecondType>();
        assert_eq!(t.value(1), 1_700_000_000_500 * 1_000_000);
        assert_eq!(implausible(&got, 0), None);
        let as_ns = scale_epochs(have, &declared(), EpochUnit::Nanos).unwrap();
        assert_eq!(implausible(&as_ns, 0), Some(1_700_000_000_000));
        let already = RecordBatch::try_from_iter([(
            "ts",
            Arc::new(TimestampNanosecondArray::from(vec![5])) as _,
        )])
        .unwrap();
        let same = scale_epochs(already.clone(), &declared(), EpochUnit::Millis).unwrap();
        assert_eq!(same.column(0).as_ref(), already.column(0).as_ref());
        let too_big = RecordBatch::try_from_iter([(
            "ts",
            Arc::new(Int64Array::from(vec![i64::MAX / 10])) as _,
        )])
        .unwrap();
        assert!(scale_epochs(too_big, &declared(), EpochUnit::Seconds).is_err());
    }
}
