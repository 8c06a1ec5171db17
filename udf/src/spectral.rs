//! `band_energy(value, sample_rate_hz, low_hz, high_hz ORDER BY ts)` and
//! `dominant_frequency(value, sample_rate_hz ORDER BY ts)`: the power spectrum of a window's
//! samples, taken in time order (`ORDER BY`) or in arrival order without it.
//!
//! A spectrum needs every sample, so these keep the window's samples: their state is bounded by
//! window length × sampling rate × groups, not by rows seen over time.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, ListArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};
use rustfft::FftPlanner;
use rustfft::num_complex::Complex;

use crate::arrays::{floats, sort_keys};

/// Which spectral statistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpectralKind {
    /// Power between two frequencies (inclusive), in value units squared.
    BandEnergy,
    /// Frequency of the strongest spectral line above 0 Hz.
    DominantFrequency,
}

impl SpectralKind {
    /// Both kinds, with SQL call form and description.
    pub const ALL: [(SpectralKind, &'static str, &'static str); 2] = [
        (
            SpectralKind::BandEnergy,
            "band_energy(value, sample_rate_hz, low_hz, high_hz ORDER BY ts)",
            "power of the window's samples between low_hz and high_hz (a tone of amplitude A gives A²/2)",
        ),
        (
            SpectralKind::DominantFrequency,
            "dominant_frequency(value, sample_rate_hz ORDER BY ts)",
            "frequency in Hz of the strongest spectral line above 0 Hz",
        ),
    ];

    fn name(self) -> &'static str {
        match self {
            SpectralKind::BandEnergy => "band_energy",
            SpectralKind::DominantFrequency => "dominant_frequency",
        }
    }

    /// Number of arguments before any `ORDER BY` key.
    fn arity(self) -> usize {
        match self {
            SpectralKind::BandEnergy => 4,
            SpectralKind::DominantFrequency => 2,
        }
    }

    /// The statistic of samples `x`, `params` being the arguments after the value.
    fn finish(self, x: &[f64], params: &[f64]) -> Option<f64> {
        if x.len() < 2 {
            return None;
        }
        let spectrum = power_spectrum(x, params[0]);
        match self {
            SpectralKind::BandEnergy => {
                let (low, high) = (params[1], params[2]);
                Some(
                    spectrum
                        .iter()
                        .filter(|(f, _)| *f >= low && *f <= high)
                        .map(|(_, p)| p)
                        .sum(),
                )
            }
            SpectralKind::DominantFrequency => spectrum
                .iter()
                .skip(1)
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .filter(|(_, p)| *p > 0.0)
                .map(|(f, _)| *f),
        }
    }
}

/// One-sided power spectrum of `x` sampled at `rate` Hz: `(frequency, power)` per line from
/// 0 Hz to the Nyquist frequency, the powers summing to the mean square of `x` (Parseval).
pub fn power_spectrum(x: &[f64], rate: f64) -> Vec<(f64, f64)> {
    let n = x.len();
    if n == 0 {
        return vec![];
    }
    let mut buf: Vec<Complex<f64>> = x.iter().map(|&v| Complex::new(v, 0.0)).collect();
    FftPlanner::new().plan_fft_forward(n).process(&mut buf);
    let nf = n as f64;
    (0..=n / 2)
        .map(|k| {
            let p = buf[k].norm_sqr() / (nf * nf);
            let mirrored = k != 0 && !(n.is_multiple_of(2) && k == n / 2);
            (k as f64 * rate / nf, if mirrored { 2.0 * p } else { p })
        })
        .collect()
}

/// `band_energy` or `dominant_frequency` as a DataFusion aggregate.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SpectralFunction {
    kind: SpectralKind,
    signature: Signature,
}

impl SpectralFunction {
    /// The function of `kind`.
    pub fn new(kind: SpectralKind) -> Self {
        Self {
            kind,
            signature: Signature::numeric(kind.arity(), Volatility::Immutable),
        }
    }
}

fn list_field(name: String, item: DataType) -> FieldRef {
    Arc::new(Field::new(
        name,
        DataType::List(Arc::new(Field::new_list_field(item, true))),
        true,
    ))
}

impl AggregateUDFImpl for SpectralFunction {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        AggregateOrderSensitivity::HardRequirement
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(SpectralAccumulator {
            kind: self.kind,
            order_keys: args.order_bys.len(),
            values: Vec::new(),
            keys: Vec::new(),
            params: Vec::new(),
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            list_field(format!("{}[values]", args.name), DataType::Float64),
            list_field(format!("{}[order]", args.name), DataType::Int64),
            list_field(format!("{}[params]", args.name), DataType::Float64),
        ])
    }
}

/// The samples of one group and window, with their `ORDER BY` keys.
#[derive(Debug)]
struct SpectralAccumulator {
    kind: SpectralKind,
    /// Number of `ORDER BY` expressions (0: arrival order).
    order_keys: usize,
    values: Vec<f64>,
    /// `order_keys` sort keys per sample, sample after sample.
    keys: Vec<i64>,
    params: Vec<f64>,
}

impl SpectralAccumulator {
    /// Takes the constant arguments from the first row that has them all.
    fn take_params(&mut self, columns: &[ArrayRef]) -> Result<()> {
        let name = self.kind.name();
        let params: Vec<Vec<Option<f64>>> = columns.iter().map(floats).collect::<Result<_>>()?;
        let Some(row) = (0..columns[0].len()).find(|&r| params.iter().all(|p| p[r].is_some()))
        else {
            return exec_err!("the arguments of {name} after the value must not be null");
        };
        self.params = params.iter().map(|p| p[row].unwrap_or_default()).collect();
        if !(self.params[0] > 0.0 && self.params[0].is_finite()) {
            return exec_err!(
                "{name}: sample_rate_hz must be a positive number of samples per second, got {}",
                self.params[0]
            );
        }
        Ok(())
    }

    /// The samples in `ORDER BY` order.
    fn samples(&self) -> Vec<f64> {
        let k = self.order_keys;
        if k == 0 || self.keys.len() != k * self.values.len() {
            return self.values.clone();
        }
        let mut idx: Vec<usize> = (0..self.values.len()).collect();
        idx.sort_by(|&a, &b| self.keys[a * k..(a + 1) * k].cmp(&self.keys[b * k..(b + 1) * k]));
        idx.iter().map(|&i| self.values[i]).collect()
    }
}

fn float_list(v: &[f64]) -> ScalarValue {
    let items: Vec<ScalarValue> = v.iter().map(|x| ScalarValue::Float64(Some(*x))).collect();
    ScalarValue::List(ScalarValue::new_list_nullable(&items, &DataType::Float64))
}

fn int_list(v: &[i64]) -> ScalarValue {
    let items: Vec<ScalarValue> = v.iter().map(|x| ScalarValue::Int64(Some(*x))).collect();
    ScalarValue::List(ScalarValue::new_list_nullable(&items, &DataType::Int64))
}

impl Accumulator for SpectralAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let arity = self.kind.arity();
        if values[0].is_empty() {
            return Ok(());
        }
        if self.params.is_empty() {
            self.take_params(&values[1..arity])?;
        }
        let keys: Vec<Vec<i64>> = values[arity..arity + self.order_keys]
            .iter()
            .map(sort_keys)
            .collect::<Result<_>>()?;
        for (i, x) in floats(&values[0])?.into_iter().enumerate() {
            if let Some(x) = x {
                self.values.push(x);
                self.keys.extend(keys.iter().map(|k| k[i]));
            }
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let lists: Vec<&ListArray> = states.iter().map(|s| s.as_list::<i32>()).collect();
        for row in 0..states[0].len() {
            if lists[0].is_null(row) {
                continue;
            }
            let values = floats(&lists[0].value(row))?;
            self.values.extend(values.into_iter().flatten());
            self.keys.extend(sort_keys(&lists[1].value(row))?);
            if self.params.is_empty() {
                self.params = floats(&lists[2].value(row))?
                    .into_iter()
                    .flatten()
                    .collect();
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![
            float_list(&self.values),
            int_list(&self.keys),
            float_list(&self.params),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        if self.params.is_empty() {
            return Ok(ScalarValue::Float64(None));
        }
        Ok(ScalarValue::Float64(
            self.kind.finish(&self.samples(), &self.params),
        ))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + 8 * (self.values.capacity() + self.keys.capacity() + self.params.capacity())
    }
}

#[cfg(test)]
mod tests {
    use super::power_spectrum;

    #[test]
    fn parseval_holds_for_odd_and_even_lengths() {
        for n in [7usize, 8, 100, 101] {
            let x: Vec<f64> = (0..n).map(|i| ((i * 7919) % 13) as f64 - 6.0).collect();
            let total: f64 = power_spectrum(&x, 1.0).iter().map(|(_, p)| p).sum();
            let mean_square = x.iter().map(|v| v * v).sum::<f64>() / n as f64;
            assert!((total - mean_square).abs() < 1e-9 * mean_square, "n {n}");
        }
    }
}
