//! `ewma(value, alpha)`, `zscore(value, n)` and `locf(value)`: per key, over the stream of
//! window results,
//! written as window functions: `ewma(vib_rms, 0.3) OVER (PARTITION BY machine ORDER BY
//! window_end)`. State per key is one value (ewma) or the last `n` values (zscore).
//!
//! In a streaming pipeline the engine keeps [`Running`] state per partition key across
//! batches; in a batch query DataFusion evaluates the same [`Running`] over each partition.

use std::collections::VecDeque;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, Float64Array};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion::logical_expr::{PartitionEvaluator, Signature, Volatility, WindowUDFImpl};

/// Largest history `zscore` keeps per key.
pub const MAX_HISTORY: usize = 100_000;

/// Which running statistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunningKind {
    /// Exponentially weighted moving average.
    Ewma,
    /// Standard score against the previous n values.
    Zscore,
    /// Last observation carried forward: the value, or the key's last non-null one.
    Locf,
}

impl RunningKind {
    /// SQL name.
    pub fn name(self) -> &'static str {
        match self {
            RunningKind::Ewma => "ewma",
            RunningKind::Zscore => "zscore",
            RunningKind::Locf => "locf",
        }
    }

    /// True when the function takes a second argument (its parameter).
    pub fn has_parameter(self) -> bool {
        self != RunningKind::Locf
    }

    /// State for parameter `p` (alpha for ewma, n for zscore; locf has none).
    pub fn start(self, p: f64) -> Result<Running> {
        match self {
            RunningKind::Locf => Ok(Running::Locf { value: None }),
            RunningKind::Ewma if p > 0.0 && p <= 1.0 => Ok(Running::Ewma {
                alpha: p,
                value: None,
            }),
            RunningKind::Ewma => exec_err!("ewma(value, alpha): alpha must be in (0, 1], got {p}"),
            RunningKind::Zscore if p >= 2.0 && p <= MAX_HISTORY as f64 => Ok(Running::Zscore {
                n: p as usize,
                history: VecDeque::new(),
            }),
            RunningKind::Zscore => {
                exec_err!("zscore(value, n): n must be between 2 and {MAX_HISTORY}, got {p}")
            }
        }
    }
}

/// Running state of one key.
#[derive(Debug, Clone, PartialEq)]
pub enum Running {
    /// ewma: the current average.
    Ewma {
        /// Weight of the newest value.
        alpha: f64,
        /// Current average.
        value: Option<f64>,
    },
    /// zscore: the previous values.
    Zscore {
        /// History length.
        n: usize,
        /// Up to n previous values, oldest first.
        history: VecDeque<f64>,
    },
    /// locf: the last non-null value.
    Locf {
        /// The last non-null value.
        value: Option<f64>,
    },
}

impl Running {
    /// Feeds the next value (nulls are skipped); returns the statistic for it.
    pub fn next(&mut self, x: Option<f64>) -> Option<f64> {
        match self {
            Running::Ewma { alpha, value } => {
                if let Some(x) = x {
                    *value = Some(match *value {
                        None => x,
                        Some(v) => *alpha * x + (1.0 - *alpha) * v,
                    });
                }
                *value
            }
            Running::Locf { value } => {
                if x.is_some() {
                    *value = x;
                }
                *value
            }
            Running::Zscore { n, history } => {
                let x = x?;
                let k = history.len() as f64;
                let score = if history.len() >= 2 {
                    let mean = history.iter().sum::<f64>() / k;
                    let var = history.iter().map(|h| (h - mean).powi(2)).sum::<f64>() / (k - 1.0);
                    (var > 0.0).then(|| (x - mean) / var.sqrt())
                } else {
                    None
                };
                history.push_back(x);
                if history.len() > *n {
                    history.pop_front();
                }
                score
            }
        }
    }
}

/// `ewma` or `zscore` as a DataFusion window function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct RunningFunction {
    /// Which one.
    pub kind: RunningKind,
    signature: Signature,
}

impl RunningFunction {
    /// The function of `kind`.
    pub fn new(kind: RunningKind) -> Self {
        let args = if kind.has_parameter() { 2 } else { 1 };
        Self {
            kind,
            signature: Signature::numeric(args, Volatility::Immutable),
        }
    }
}

/// The parameter (second argument) from its evaluated column.
pub fn parameter(kind: RunningKind, a: &ArrayRef) -> Result<f64> {
    let f = datafusion::arrow::compute::cast(a, &DataType::Float64)?;
    match f.as_primitive::<Float64Type>().iter().flatten().next() {
        Some(p) => Ok(p),
        None => exec_err!("{}: the second argument must be a constant", kind.name()),
    }
}

/// Values as `f64`.
pub fn values_f64(a: &ArrayRef) -> Result<Vec<Option<f64>>> {
    let f = datafusion::arrow::compute::cast(a, &DataType::Float64)?;
    Ok(f.as_primitive::<Float64Type>().iter().collect())
}

impl WindowUDFImpl for RunningFunction {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn partition_evaluator(
        &self,
        _args: PartitionEvaluatorArgs,
    ) -> Result<Box<dyn PartitionEvaluator>> {
        Ok(Box::new(RunningEvaluator { kind: self.kind }))
    }

    fn field(&self, args: WindowUDFFieldArgs) -> Result<FieldRef> {
        Ok(Arc::new(Field::new(args.name(), DataType::Float64, true)))
    }
}

#[derive(Debug)]
struct RunningEvaluator {
    kind: RunningKind,
}

impl PartitionEvaluator for RunningEvaluator {
    fn evaluate_all(&mut self, values: &[ArrayRef], _num_rows: usize) -> Result<ArrayRef> {
        let p = match values.get(1) {
            Some(v) if self.kind.has_parameter() => parameter(self.kind, v)?,
            _ => 0.0,
        };
        let mut state = self.kind.start(p)?;
        let out: Float64Array = values_f64(&values[0])?
            .into_iter()
            .map(|x| state.next(x))
            .collect();
        Ok(Arc::new(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ewma_and_zscore_by_hand() {
        let mut e = RunningKind::Ewma.start(0.5).unwrap();
        let got: Vec<_> = [Some(2.0), Some(4.0), None, Some(8.0)]
            .into_iter()
            .map(|x| e.next(x))
            .collect();
        assert_eq!(got, vec![Some(2.0), Some(3.0), Some(3.0), Some(5.5)]);
        let mut z = RunningKind::Zscore.start(3.0).unwrap();
        let got: Vec<_> = [1.0, 3.0, 5.0, 7.0, 100.0]
            .into_iter()
            .map(|x| z.next(Some(x)))
            .collect();
        // 5 against [1, 3]: mean 2, sd √2; 7 against [1, 3, 5]: mean 3, sd 2; 100 against [3, 5, 7]
        assert_eq!(got[..2], [None, None]);
        assert!((got[2].unwrap() - 3.0 / 2f64.sqrt()).abs() < 1e-12);
        assert!((got[3].unwrap() - 2.0).abs() < 1e-12);
        assert!((got[4].unwrap() - 95.0 / 2.0).abs() < 1e-12);
        assert!(RunningKind::Ewma.start(1.5).is_err());
        let mut l = RunningKind::Locf.start(0.0).unwrap();
        let got: Vec<_> = [None, Some(2.0), None, None, Some(5.0), None]
            .into_iter()
            .map(|x| l.next(x))
            .collect();
        assert_eq!(
            got,
            vec![None, Some(2.0), Some(2.0), Some(2.0), Some(5.0), Some(5.0)]
        );
    }
}
