//! Conversions of argument columns shared by the aggregate functions.

use datafusion::arrow::array::{ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::common::Result;

/// The column as `f64` values (nulls kept as `None`).
pub fn floats(a: &ArrayRef) -> Result<Vec<Option<f64>>> {
    let f = datafusion::arrow::compute::cast(a, &DataType::Float64)?;
    Ok(f.as_primitive::<Float64Type>().iter().collect())
}

/// The column as `i64` keys that sort like its values: timestamps, dates and integers by their
/// integer value, floats by their IEEE total order. Nulls sort first.
pub fn sort_keys(a: &ArrayRef) -> Result<Vec<i64>> {
    let keys = match a.data_type() {
        DataType::Float16 | DataType::Float32 | DataType::Float64 | DataType::Decimal128(..) => {
            floats(a)?
                .into_iter()
                .map(|v| v.map_or(i64::MIN, orderable_bits))
                .collect()
        }
        _ => {
            let as_int = match a.data_type() {
                DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => {
                    datafusion::arrow::compute::cast(a, &DataType::Int64)?
                }
                _ => ArrayRef::clone(a),
            };
            let i = datafusion::arrow::compute::cast(&as_int, &DataType::Int64)?;
            i.as_primitive::<Int64Type>()
                .iter()
                .map(|v| v.unwrap_or(i64::MIN))
                .collect()
        }
    };
    Ok(keys)
}

/// An `i64` whose signed order is the IEEE total order of `x`.
fn orderable_bits(x: f64) -> i64 {
    let b = x.to_bits() as i64;
    b ^ (((b >> 63) as u64) >> 1) as i64
}

#[cfg(test)]
mod tests {
    use super::orderable_bits;

    #[test]
    fn float_keys_sort_like_floats() {
        let xs = [-1e300, -2.5, -0.0, 0.0, 1e-300, 3.0, f64::INFINITY];
        for w in xs.windows(2) {
            assert!(orderable_bits(w[0]) <= orderable_bits(w[1]), "{w:?}");
        }
    }
}
