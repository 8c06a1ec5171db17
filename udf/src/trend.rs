//! `trend_slope(ts, value)` and `time_to_threshold(ts, value, threshold)`: a least-squares
//! line through (time, value), kept as mergeable co-moments.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, TimeUnit};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};

use crate::arrays::floats;

/// Partial state of a least-squares fit: count, means, co-moments, latest time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LineFit {
    /// Number of points.
    pub n: f64,
    /// Mean time (s since the epoch).
    pub mean_t: f64,
    /// Mean value.
    pub mean_v: f64,
    /// Σ(t − mean_t)².
    pub ctt: f64,
    /// Σ(t − mean_t)(v − mean_v).
    pub ctv: f64,
    /// Latest time (s).
    pub last_t: f64,
}

impl Default for LineFit {
    fn default() -> Self {
        Self {
            n: 0.0,
            mean_t: 0.0,
            mean_v: 0.0,
            ctt: 0.0,
            ctv: 0.0,
            last_t: f64::NEG_INFINITY,
        }
    }
}

impl LineFit {
    const FIELDS: [&'static str; 6] = ["n", "mean_t", "mean_v", "ctt", "ctv", "last_t"];

    fn to_array(self) -> [f64; 6] {
        [
            self.n,
            self.mean_t,
            self.mean_v,
            self.ctt,
            self.ctv,
            self.last_t,
        ]
    }

    /// Adds one point.
    pub fn add(&mut self, t: f64, v: f64) {
        self.merge(&LineFit {
            n: 1.0,
            mean_t: t,
            mean_v: v,
            ctt: 0.0,
            ctv: 0.0,
            last_t: t,
        });
    }

    /// Merges another partial fit (Chan et al.'s pairwise co-moment update).
    pub fn merge(&mut self, b: &LineFit) {
        if b.n == 0.0 {
            return;
        }
        if self.n == 0.0 {
            *self = *b;
            return;
        }
        let a = *self;
        let n = a.n + b.n;
        let dt = b.mean_t - a.mean_t;
        let dv = b.mean_v - a.mean_v;
        self.n = n;
        self.mean_t = a.mean_t + dt * b.n / n;
        self.mean_v = a.mean_v + dv * b.n / n;
        self.ctt = a.ctt + b.ctt + dt * dt * a.n * b.n / n;
        self.ctv = a.ctv + b.ctv + dt * dv * a.n * b.n / n;
        self.last_t = a.last_t.max(b.last_t);
    }

    /// Slope in value units per second; `None` with fewer than two distinct times.
    pub fn slope(&self) -> Option<f64> {
        (self.n >= 2.0 && self.ctt > 0.0).then(|| self.ctv / self.ctt)
    }

    /// Seconds from the latest point until the fitted line reaches `threshold`; `None` when
    /// the trend is flat or does not approach it (the line met it before the latest point,
    /// or never will).
    pub fn time_to(&self, threshold: f64) -> Option<f64> {
        let slope = self.slope()?;
        if slope == 0.0 {
            return None;
        }
        let at_last = self.mean_v + slope * (self.last_t - self.mean_t);
        let dt = (threshold - at_last) / slope;
        (dt >= 0.0).then_some(dt)
    }
}

/// Which of the two line-fit functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrendKind {
    /// Slope per second.
    Slope,
    /// Seconds until a threshold.
    TimeToThreshold,
}

/// `trend_slope` or `time_to_threshold`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TrendFunction {
    kind: TrendKind,
    signature: Signature,
}

impl TrendFunction {
    /// The function of `kind`.
    pub fn new(kind: TrendKind) -> Self {
        let arity = match kind {
            TrendKind::Slope => 2,
            TrendKind::TimeToThreshold => 3,
        };
        Self {
            kind,
            signature: Signature::any(arity, Volatility::Immutable),
        }
    }
}

/// Times as seconds since the epoch: timestamps of any unit, or plain numbers (seconds).
fn seconds(a: &ArrayRef) -> Result<Vec<Option<f64>>> {
    match a.data_type() {
        DataType::Timestamp(..) => {
            let ns = datafusion::arrow::compute::cast(
                a,
                &DataType::Timestamp(TimeUnit::Nanosecond, None),
            )?;
            let ns = datafusion::arrow::compute::cast(&ns, &DataType::Int64)?;
            Ok(ns
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .iter()
                .map(|v| v.map(|x| x as f64 / 1e9))
                .collect())
        }
        _ => floats(a),
    }
}

impl AggregateUDFImpl for TrendFunction {
    fn name(&self) -> &str {
        match self.kind {
            TrendKind::Slope => "trend_slope",
            TrendKind::TimeToThreshold => "time_to_threshold",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        let numeric_or_time = |t: &DataType| t.is_numeric() || matches!(t, DataType::Timestamp(..));
        if !numeric_or_time(&args[0]) || !args[1..].iter().all(DataType::is_numeric) {
            return exec_err!(
                "{}(ts, value{}) takes a timestamp (or seconds) and numbers, not {args:?}",
                self.name(),
                if self.kind == TrendKind::TimeToThreshold {
                    ", threshold"
                } else {
                    ""
                }
            );
        }
        Ok(DataType::Float64)
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(TrendAccumulator {
            kind: self.kind,
            fit: LineFit::default(),
            threshold: None,
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let mut f: Vec<FieldRef> = LineFit::FIELDS
            .iter()
            .map(|n| {
                Arc::new(Field::new(
                    format!("{}[{n}]", args.name),
                    DataType::Float64,
                    true,
                ))
            })
            .collect();
        f.push(Arc::new(Field::new(
            format!("{}[threshold]", args.name),
            DataType::Float64,
            true,
        )));
        Ok(f)
    }
}

#[derive(Debug)]
struct TrendAccumulator {
    kind: TrendKind,
    fit: LineFit,
    threshold: Option<f64>,
}

impl Accumulator for TrendAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let t = seconds(&values[0])?;
        let v = floats(&values[1])?;
        if self.kind == TrendKind::TimeToThreshold && self.threshold.is_none() {
            self.threshold = floats(&values[2])?.into_iter().flatten().next();
        }
        for (t, v) in t.into_iter().zip(v) {
            if let (Some(t), Some(v)) = (t, v) {
                self.fit.add(t, v);
            }
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let cols: Vec<Vec<Option<f64>>> = states.iter().map(floats).collect::<Result<_>>()?;
        let rows = states.first().map_or(0, |s| s.len());
        #[allow(clippy::needless_range_loop)] // one row across seven state columns
        for row in 0..rows {
            let g = |i: usize| cols[i][row].unwrap_or(0.0);
            self.fit.merge(&LineFit {
                n: g(0),
                mean_t: g(1),
                mean_v: g(2),
                ctt: g(3),
                ctv: g(4),
                last_t: cols[5][row].unwrap_or(f64::NEG_INFINITY),
            });
            if self.threshold.is_none() {
                self.threshold = cols[6][row];
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let mut s: Vec<ScalarValue> = self
            .fit
            .to_array()
            .iter()
            .map(|v| ScalarValue::Float64(Some(*v)))
            .collect();
        s.push(ScalarValue::Float64(self.threshold));
        Ok(s)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Float64(match self.kind {
            TrendKind::Slope => self.fit.slope(),
            TrendKind::TimeToThreshold => self.threshold.and_then(|th| self.fit.time_to(th)),
        }))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_through_points() {
        let mut f = LineFit::default();
        for i in 0..10 {
            f.add(1_700_000_000.0 + i as f64, 5.0 + 0.5 * i as f64);
        }
        assert!((f.slope().unwrap() - 0.5).abs() < 1e-9);
        // last point at 9.5, rising 0.5/s: reaches 12 in 5 s
        assert!((f.time_to(12.0).unwrap() - 5.0).abs() < 1e-6);
        assert_eq!(f.time_to(1.0), None, "met long before the last point");
        assert_eq!(f.time_to(7.0), None, "rising past it already");
        let mut flat = LineFit::default();
        flat.add(0.0, 1.0);
        flat.add(1.0, 1.0);
        assert_eq!(flat.time_to(2.0), None, "flat");
    }
}
