//! The moment-based aggregate functions (`rms`, `crest_factor`, `kurtosis`, ...): one
//! DataFusion UDAF type whose kind picks the final formula over shared, mergeable
//! [`Moments`] state.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};

use crate::moments::Moments;

/// Which statistic a moment function returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MomentKind {
    /// √(Σx²/n).
    Rms,
    /// max − min.
    PeakToPeak,
    /// max|x| / rms.
    CrestFactor,
    /// Pearson kurtosis n·M4/M2² (3 for a normal distribution, 1.5 for a sine).
    Kurtosis,
    /// Kurtosis − 3.
    ExcessKurtosis,
    /// Population skewness √n·M3/M2^1.5.
    Skewness,
    /// Σ|x|/n.
    MeanAbs,
    /// rms / mean_abs.
    ShapeFactor,
    /// max|x| / mean_abs.
    ImpulseFactor,
}

impl MomentKind {
    /// Every kind, with its SQL name and one-line description.
    pub const ALL: [(MomentKind, &'static str, &'static str); 9] = [
        (
            MomentKind::Rms,
            "rms",
            "root mean square √(Σx²/n), in the unit of the values",
        ),
        (
            MomentKind::PeakToPeak,
            "peak_to_peak",
            "max − min, in the unit of the values",
        ),
        (
            MomentKind::CrestFactor,
            "crest_factor",
            "peak |x| / RMS (dimensionless; √2 for a sine)",
        ),
        (
            MomentKind::Kurtosis,
            "kurtosis",
            "Pearson kurtosis n·M4/M2² (3 for Gaussian noise, 1.5 for a sine)",
        ),
        (
            MomentKind::ExcessKurtosis,
            "excess_kurtosis",
            "kurtosis − 3 (0 for Gaussian noise)",
        ),
        (
            MomentKind::Skewness,
            "skewness",
            "population skewness √n·M3/M2^1.5 (dimensionless)",
        ),
        (
            MomentKind::MeanAbs,
            "mean_abs",
            "mean of |x|, in the unit of the values",
        ),
        (
            MomentKind::ShapeFactor,
            "shape_factor",
            "RMS / mean |x| (dimensionless; π/(2√2) for a sine)",
        ),
        (
            MomentKind::ImpulseFactor,
            "impulse_factor",
            "peak |x| / mean |x| (dimensionless; π/2 for a sine)",
        ),
    ];

    /// The statistic of `m`, or `None` when it is undefined (no values, zero spread).
    pub fn finish(self, m: &Moments) -> Option<f64> {
        if m.n == 0.0 {
            return None;
        }
        let rms = (m.sum_sq / m.n).sqrt();
        let peak = m.max.abs().max(m.min.abs());
        let mean_abs = m.sum_abs / m.n;
        let ratio = |a: f64, b: f64| (b != 0.0).then(|| a / b);
        match self {
            MomentKind::Rms => Some(rms),
            MomentKind::PeakToPeak => Some(m.max - m.min),
            MomentKind::CrestFactor => ratio(peak, rms),
            MomentKind::Kurtosis => ratio(m.n * m.m4, m.m2 * m.m2),
            MomentKind::ExcessKurtosis => ratio(m.n * m.m4, m.m2 * m.m2).map(|k| k - 3.0),
            MomentKind::Skewness => ratio(m.n.sqrt() * m.m3, m.m2.powf(1.5)),
            MomentKind::MeanAbs => Some(mean_abs),
            MomentKind::ShapeFactor => ratio(rms, mean_abs),
            MomentKind::ImpulseFactor => ratio(peak, mean_abs),
        }
    }
}

/// A moment-based aggregate function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct MomentFunction {
    kind: MomentKind,
    name: &'static str,
    signature: Signature,
}

impl MomentFunction {
    /// The function of `kind`, called `name`.
    pub fn new(kind: MomentKind, name: &'static str) -> Self {
        Self {
            kind,
            name,
            signature: Signature::numeric(1, Volatility::Immutable),
        }
    }
}

fn as_f64(a: &ArrayRef) -> Result<Float64Array> {
    Ok(datafusion::arrow::compute::cast(a, &DataType::Float64)?
        .as_primitive::<Float64Type>()
        .clone())
}

impl AggregateUDFImpl for MomentFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(MomentsAccumulator {
            kind: self.kind,
            state: Moments::default(),
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(Moments::FIELDS
            .iter()
            .map(|f| {
                Arc::new(Field::new(
                    format!("{}[{f}]", args.name),
                    DataType::Float64,
                    true,
                ))
            })
            .collect())
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        _args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(MomentsGroups {
            kind: self.kind,
            groups: Vec::new(),
        }))
    }
}

/// Row accumulator (used where DataFusion needs one, e.g. for `DISTINCT`).
#[derive(Debug)]
struct MomentsAccumulator {
    kind: MomentKind,
    state: Moments,
}

fn state_scalars(m: &Moments) -> Vec<ScalarValue> {
    m.to_array()
        .iter()
        .map(|v| ScalarValue::Float64(Some(*v)))
        .collect()
}

fn read_state(states: &[ArrayRef], row: usize) -> Moments {
    let mut a = [0.0; 9];
    for (i, s) in states.iter().enumerate() {
        a[i] = s.as_primitive::<Float64Type>().value(row);
    }
    Moments::from_array(a)
}

impl Accumulator for MomentsAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let v = as_f64(&values[0])?;
        self.state.merge(&Moments::of(v.iter().flatten()));
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        for row in 0..states[0].len() {
            self.state.merge(&read_state(states, row));
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(state_scalars(&self.state))
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Float64(self.kind.finish(&self.state)))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }
}

/// Sums of powers of (x − k), k being the group's first value: cheap to update row by row
/// and accurate because k is close to the mean.
#[derive(Debug, Clone, Copy, Default)]
struct Shifted {
    k: f64,
    n: f64,
    s1: f64,
    s2: f64,
    s3: f64,
    s4: f64,
    min: f64,
    max: f64,
    sum_abs: f64,
    sum_sq: f64,
}

impl Shifted {
    #[inline]
    fn add(&mut self, x: f64) {
        if self.n == 0.0 {
            *self = Shifted {
                k: x,
                min: x,
                max: x,
                ..Default::default()
            };
        }
        let d = x - self.k;
        let d2 = d * d;
        self.n += 1.0;
        self.s1 += d;
        self.s2 += d2;
        self.s3 += d2 * d;
        self.s4 += d2 * d2;
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        self.sum_abs += x.abs();
        self.sum_sq += x * x;
    }

    /// The same values as central moments.
    fn moments(&self) -> Moments {
        if self.n == 0.0 {
            return Moments::default();
        }
        let n = self.n;
        let mu = self.s1 / n;
        let mu2 = mu * mu;
        Moments {
            n,
            mean: self.k + mu,
            m2: self.s2 - n * mu2,
            m3: self.s3 - 3.0 * mu * self.s2 + 2.0 * n * mu2 * mu,
            m4: self.s4 - 4.0 * mu * self.s3 + 6.0 * mu2 * self.s2 - 3.0 * n * mu2 * mu2,
            min: self.min,
            max: self.max,
            sum_abs: self.sum_abs,
            sum_sq: self.sum_sq,
        }
    }
}

/// Per group: merged partial states and rows added since.
#[derive(Debug, Clone, Copy, Default)]
struct GroupState {
    merged: Moments,
    fresh: Shifted,
}

impl GroupState {
    fn moments(&self) -> Moments {
        let mut m = self.merged;
        m.merge(&self.fresh.moments());
        m
    }
}

/// Vectorized accumulator over many groups.
#[derive(Debug)]
struct MomentsGroups {
    kind: MomentKind,
    groups: Vec<GroupState>,
}

impl MomentsGroups {
    fn take(&mut self, emit_to: EmitTo) -> Vec<Moments> {
        emit_to
            .take_needed(&mut self.groups)
            .iter()
            .map(GroupState::moments)
            .collect()
    }
}

impl GroupsAccumulator for MomentsGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize(total_num_groups, GroupState::default());
        let v = as_f64(&values[0])?;
        let keep =
            |i: usize| v.is_valid(i) && opt_filter.is_none_or(|f| f.is_valid(i) && f.value(i));
        if v.null_count() == 0 && opt_filter.is_none() {
            for (&g, &x) in group_indices.iter().zip(v.values().iter()) {
                self.groups[g].fresh.add(x);
            }
        } else {
            for (i, &g) in group_indices.iter().enumerate() {
                if keep(i) {
                    self.groups[g].fresh.add(v.value(i));
                }
            }
        }
        Ok(())
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize(total_num_groups, GroupState::default());
        for (row, &g) in group_indices.iter().enumerate() {
            let m = read_state(values, row);
            self.groups[g].merged.merge(&m);
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let kind = self.kind;
        let out: Float64Array = self.take(emit_to).iter().map(|m| kind.finish(m)).collect();
        Ok(Arc::new(out))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(state_columns(&self.take(emit_to)))
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let v = as_f64(&values[0])?;
        let ms: Vec<Moments> = (0..v.len())
            .map(|i| {
                let keep = v.is_valid(i) && opt_filter.is_none_or(|f| f.is_valid(i) && f.value(i));
                if keep {
                    Moments::of(std::iter::once(v.value(i)))
                } else {
                    Moments::default()
                }
            })
            .collect();
        Ok(state_columns(&ms))
    }

    fn size(&self) -> usize {
        self.groups.capacity() * std::mem::size_of::<GroupState>()
    }
}

/// Partial states as the nine state columns.
fn state_columns(ms: &[Moments]) -> Vec<ArrayRef> {
    (0..Moments::FIELDS.len())
        .map(|f| {
            Arc::new(Float64Array::from_iter_values(
                ms.iter().map(|m| m.to_array()[f]),
            )) as ArrayRef
        })
        .collect()
}
