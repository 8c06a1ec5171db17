//! `iso10816_zone(rms_velocity_mm_s, machine_class)`: the ISO 10816-3 evaluation zone of a
//! vibration severity (RMS velocity, mm/s, 10–1000 Hz).
//!
//! | machine_class | machines | A/B | B/C | C/D |
//! |---|---|---|---|---|
//! | `group1_rigid` | large, 300 kW–50 MW, rigid foundation | 2.3 | 4.5 | 7.1 |
//! | `group1_flexible` | large, 300 kW–50 MW, flexible foundation | 3.5 | 7.1 | 11.0 |
//! | `group2_rigid` | medium, 15–300 kW, rigid foundation | 1.4 | 2.8 | 4.5 |
//! | `group2_flexible` | medium, 15–300 kW, flexible foundation | 2.3 | 4.5 | 7.1 |
//!
//! Zone A: newly commissioned; B: unrestricted long-term operation; C: restricted operation,
//! plan maintenance; D: damage likely. A value on a boundary belongs to the higher zone.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

/// Zone boundaries A/B, B/C, C/D (mm/s RMS) of a machine class.
pub fn boundaries(class: &str) -> Option<[f64; 3]> {
    match class.trim().to_ascii_lowercase().as_str() {
        "group1_rigid" => Some([2.3, 4.5, 7.1]),
        "group1_flexible" => Some([3.5, 7.1, 11.0]),
        "group2_rigid" => Some([1.4, 2.8, 4.5]),
        "group2_flexible" => Some([2.3, 4.5, 7.1]),
        _ => None,
    }
}

/// The zone letter of `v` mm/s for `b` boundaries.
pub fn zone(v: f64, b: [f64; 3]) -> &'static str {
    if v < b[0] {
        "A"
    } else if v < b[1] {
        "B"
    } else if v < b[2] {
        "C"
    } else {
        "D"
    }
}

/// The scalar function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Iso10816Zone {
    signature: Signature,
}

impl Default for Iso10816Zone {
    fn default() -> Self {
        Self {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for Iso10816Zone {
    fn name(&self) -> &str {
        "iso10816_zone"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        if !args[0].is_numeric() && args[0] != DataType::Null {
            return exec_err!(
                "iso10816_zone(rms_velocity_mm_s, machine_class): the velocity must be a number, not {}",
                args[0]
            );
        }
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let v = datafusion::arrow::compute::cast(&arrays[0], &DataType::Float64)?;
        let v = v.as_primitive::<Float64Type>();
        let c = datafusion::arrow::compute::cast(&arrays[1], &DataType::Utf8)?;
        let c = c.as_string::<i32>();
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            if v.is_null(i) || c.is_null(i) {
                out.push(None);
                continue;
            }
            let Some(b) = boundaries(c.value(i)) else {
                return exec_err!(
                    "iso10816_zone: unknown machine class '{}' (use group1_rigid, group1_flexible, group2_rigid or group2_flexible)",
                    c.value(i)
                );
            };
            out.push(Some(zone(v.value(i), b)));
        }
        Ok(ColumnarValue::Array(
            Arc::new(StringArray::from(out)) as ArrayRef
        ))
    }
}
