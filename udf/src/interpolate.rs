//! `interpolate(value, time, max_gap) OVER (PARTITION BY key ORDER BY time)`: a null value
//! between two known values of its key becomes the straight line between them, by time — when
//! the two known values are at most `max_gap` apart; otherwise it stays null. A batch query
//! sees the whole partition; a streaming pipeline holds the rows of a gap until the value after
//! it arrives (or until the watermark shows it cannot arrive within `max_gap`).

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, Float64Array};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Int64Type, TimeUnit};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion::logical_expr::{PartitionEvaluator, Signature, Volatility, WindowUDFImpl};

/// The value at `t` on the line from `(t0, v0)` to `(t1, v1)`.
pub fn linear(t0: i64, v0: f64, t1: i64, v1: f64, t: i64) -> f64 {
    if t1 == t0 {
        return v0;
    }
    v0 + (v1 - v0) * ((t - t0) as f64 / (t1 - t0) as f64)
}

/// An interval (without months) or a duration constant in nanoseconds, possibly negative.
pub fn interval_ns(v: &ScalarValue) -> Option<i64> {
    const DAY: i64 = 86_400_000_000_000;
    match v {
        ScalarValue::IntervalMonthDayNano(Some(i)) if i.months == 0 => {
            (i.days as i64).checked_mul(DAY)?.checked_add(i.nanoseconds)
        }
        ScalarValue::IntervalDayTime(Some(i)) => (i.days as i64)
            .checked_mul(DAY)?
            .checked_add(i.milliseconds as i64 * 1_000_000),
        ScalarValue::DurationNanosecond(Some(n)) => Some(*n),
        ScalarValue::DurationMicrosecond(Some(n)) => n.checked_mul(1_000),
        ScalarValue::DurationMillisecond(Some(n)) => n.checked_mul(1_000_000),
        ScalarValue::DurationSecond(Some(n)) => n.checked_mul(1_000_000_000),
        _ => None,
    }
}

/// A positive duration constant in nanoseconds: an interval, or a number of seconds.
pub fn gap_ns(v: &ScalarValue) -> Option<i64> {
    interval_ns(v)
        .or_else(|| match v.cast_to(&DataType::Float64).ok()? {
            ScalarValue::Float64(Some(f)) if f.is_finite() => Some((f * 1e9) as i64),
            _ => None,
        })
        .filter(|g| *g > 0)
}

/// Times as nanoseconds (a timestamp of any unit).
pub fn times_ns(a: &ArrayRef) -> Result<Vec<Option<i64>>> {
    let t = datafusion::arrow::compute::cast(a, &DataType::Timestamp(TimeUnit::Nanosecond, None))?;
    let t = datafusion::arrow::compute::cast(&t, &DataType::Int64)?;
    Ok(t.as_primitive::<Int64Type>().iter().collect())
}

/// `interpolate` as a DataFusion window function (batch queries over a whole partition).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Interpolate {
    signature: Signature,
}

impl Default for Interpolate {
    fn default() -> Self {
        Self {
            signature: Signature::any(3, Volatility::Immutable),
        }
    }
}

impl WindowUDFImpl for Interpolate {
    fn name(&self) -> &str {
        "interpolate"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn partition_evaluator(
        &self,
        _args: PartitionEvaluatorArgs,
    ) -> Result<Box<dyn PartitionEvaluator>> {
        Ok(Box::new(Evaluator))
    }

    fn field(&self, args: WindowUDFFieldArgs) -> Result<FieldRef> {
        Ok(Arc::new(Field::new(args.name(), DataType::Float64, true)))
    }
}

#[derive(Debug)]
struct Evaluator;

impl PartitionEvaluator for Evaluator {
    fn evaluate_all(&mut self, values: &[ArrayRef], n: usize) -> Result<ArrayRef> {
        let x = crate::across_windows::values_f64(&values[0])?;
        let t = times_ns(&values[1])?;
        let Some(max_gap) = (n > 0)
            .then(|| ScalarValue::try_from_array(&values[2], 0).ok())
            .flatten()
            .and_then(|v| gap_ns(&v))
        else {
            return if n == 0 {
                Ok(Arc::new(Float64Array::from(Vec::<f64>::new())))
            } else {
                exec_err!("interpolate(value, time, max_gap): max_gap must be a positive interval")
            };
        };
        let known: Vec<Option<(i64, f64)>> = x
            .iter()
            .zip(&t)
            .map(|(x, t)| Some(((*t)?, (*x)?)))
            .collect();
        let out: Float64Array = (0..n)
            .map(|i| {
                if let Some((_, v)) = known[i] {
                    return Some(v);
                }
                let ti = t[i]?;
                let (t0, v0) = known[..i].iter().rev().flatten().next().copied()?;
                let (t1, v1) = known[i + 1..].iter().flatten().next().copied()?;
                (t1 - t0 <= max_gap).then(|| linear(t0, v0, t1, v1, ti))
            })
            .collect();
        Ok(Arc::new(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_between_known_values_within_the_gap() {
        assert_eq!(linear(0, 1.0, 10, 3.0, 5), 2.0);
        assert_eq!(linear(0, 1.0, 10, 3.0, 10), 3.0);
        let x: ArrayRef = Arc::new(Float64Array::from(vec![
            Some(1.0),
            None,
            None,
            Some(4.0),
            None,
            Some(9.0),
        ]));
        let t: ArrayRef = Arc::new(datafusion::arrow::array::TimestampNanosecondArray::from(
            vec![0, 1, 2, 3, 4, 10],
        ));
        let g: ArrayRef = Arc::new(datafusion::arrow::array::Int64Array::from(vec![3; 6]));
        // gap 3 s in nanoseconds would be huge; use 3 ns via seconds = 3e-9
        let g3: ArrayRef = Arc::new(Float64Array::from(vec![3e-9; 6]));
        let out = Evaluator
            .evaluate_all(&[x.clone(), t.clone(), g3], 6)
            .unwrap();
        let out: Vec<Option<f64>> = out
            .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
            .iter()
            .collect();
        // 1 and 2 between (0, 1) and (3, 4); 4 between (3, 4) and (10, 9): 7 apart > 3
        assert_eq!(
            out,
            vec![Some(1.0), Some(2.0), Some(3.0), Some(4.0), None, Some(9.0)]
        );
        let out = Evaluator.evaluate_all(&[x, t, g], 6).unwrap();
        assert_eq!(out.null_count(), 0, "3 s is wider than every gap");
    }
}
