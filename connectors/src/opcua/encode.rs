//! Arrow values into OPC UA values of a node's DataType, for the sink: which column types
//! each scalar DataType takes (checked once, when the sink learns the node's DataType), and
//! each row's value converted exactly — an integer out of the type's range, a NaN or
//! infinite number, or text that is too long is refused, never wrapped or rounded.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Float32Type, Float64Type};
use opcua::types::{DataTypeId, DateTime, NodeId, Variant};

use super::values::UNIX_EPOCH_TICKS;

/// The scalar built-in DataTypes the sink writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar {
    /// Boolean
    Boolean,
    /// SByte
    SByte,
    /// Byte
    Byte,
    /// Int16
    Int16,
    /// UInt16
    UInt16,
    /// Int32
    Int32,
    /// UInt32
    UInt32,
    /// Int64
    Int64,
    /// UInt64
    UInt64,
    /// Float
    Float,
    /// Double
    Double,
    /// String
    String,
    /// DateTime
    DateTime,
}

impl Scalar {
    /// The scalar of a DataType node id, `None` for any other DataType.
    pub fn of(data_type: &NodeId) -> Option<Scalar> {
        let id = data_type.as_data_type_id().ok()?;
        Some(match id {
            DataTypeId::Boolean => Scalar::Boolean,
            DataTypeId::SByte => Scalar::SByte,
            DataTypeId::Byte => Scalar::Byte,
            DataTypeId::Int16 => Scalar::Int16,
            DataTypeId::UInt16 => Scalar::UInt16,
            DataTypeId::Int32 => Scalar::Int32,
            DataTypeId::UInt32 => Scalar::UInt32,
            DataTypeId::Int64 => Scalar::Int64,
            DataTypeId::UInt64 => Scalar::UInt64,
            DataTypeId::Float => Scalar::Float,
            DataTypeId::Double => Scalar::Double,
            DataTypeId::String => Scalar::String,
            DataTypeId::DateTime | DataTypeId::UtcTime => Scalar::DateTime,
            _ => return None,
        })
    }

    /// The integer range of an integer type.
    fn range(self) -> Option<(i128, i128)> {
        Some(match self {
            Scalar::SByte => (i8::MIN.into(), i8::MAX.into()),
            Scalar::Byte => (0, u8::MAX.into()),
            Scalar::Int16 => (i16::MIN.into(), i16::MAX.into()),
            Scalar::UInt16 => (0, u16::MAX.into()),
            Scalar::Int32 => (i32::MIN.into(), i32::MAX.into()),
            Scalar::UInt32 => (0, u32::MAX.into()),
            Scalar::Int64 => (i64::MIN.into(), i64::MAX.into()),
            Scalar::UInt64 => (0, u64::MAX.into()),
            _ => return None,
        })
    }

    /// Whether a column of type `t` can be written as this type: a boolean as Boolean, an
    /// integer as any integer type (each value's range checked) or Float/Double, a float as
    /// Float/Double, text as String, a timestamp as DateTime.
    pub fn accepts(self, t: &DataType) -> bool {
        match self {
            Scalar::Boolean => t == &DataType::Boolean,
            Scalar::Float | Scalar::Double => t.is_integer() || t.is_floating(),
            Scalar::String => {
                matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
            }
            Scalar::DateTime => matches!(t, DataType::Timestamp(..)),
            _ => t.is_integer(),
        }
    }

    /// The value at `row` of `col` (not null; of a type this scalar [accepts](Self::accepts)).
    pub fn variant(self, col: &ArrayRef, row: usize) -> Result<Variant, String> {
        use arrow::datatypes::*;
        if let Some((lo, hi)) = self.range() {
            let v: i128 = match col.data_type() {
                DataType::Int8 => col.as_primitive::<Int8Type>().value(row).into(),
                DataType::Int16 => col.as_primitive::<Int16Type>().value(row).into(),
                DataType::Int32 => col.as_primitive::<Int32Type>().value(row).into(),
                DataType::Int64 => col.as_primitive::<Int64Type>().value(row).into(),
                DataType::UInt8 => col.as_primitive::<UInt8Type>().value(row).into(),
                DataType::UInt16 => col.as_primitive::<UInt16Type>().value(row).into(),
                DataType::UInt32 => col.as_primitive::<UInt32Type>().value(row).into(),
                DataType::UInt64 => col.as_primitive::<UInt64Type>().value(row).into(),
                t => return Err(format!("a {t} value cannot be written as {self:?}")),
            };
            if v < lo || v > hi {
                return Err(format!(
                    "{v} is out of the range of {self:?} ({lo} to {hi})"
                ));
            }
            // in range: the conversions below are exact
            return Ok(match self {
                Scalar::SByte => Variant::SByte(v as i8),
                Scalar::Byte => Variant::Byte(v as u8),
                Scalar::Int16 => Variant::Int16(v as i16),
                Scalar::UInt16 => Variant::UInt16(v as u16),
                Scalar::Int32 => Variant::Int32(v as i32),
                Scalar::UInt32 => Variant::UInt32(v as u32),
                Scalar::Int64 => Variant::Int64(v as i64),
                _ => Variant::UInt64(v as u64),
            });
        }
        Ok(match self {
            Scalar::Boolean => Variant::Boolean(col.as_boolean().value(row)),
            Scalar::Float | Scalar::Double => {
                let x = float_at(col, row)?;
                if !x.is_finite() {
                    return Err(format!("{x} is not a finite number"));
                }
                if self == Scalar::Double {
                    Variant::Double(x)
                } else if x.abs() > f64::from(f32::MAX) {
                    return Err(format!("{x} is out of the range of Float"));
                } else {
                    Variant::Float(x as f32)
                }
            }
            Scalar::String => Variant::from(match col.data_type() {
                DataType::Utf8 => col.as_string::<i32>().value(row),
                DataType::LargeUtf8 => col.as_string::<i64>().value(row),
                _ => col.as_string_view().value(row),
            }),
            _ => {
                let nanos = match col.data_type() {
                    DataType::Timestamp(unit, _) => {
                        let v = arrow::compute::cast(&col.slice(row, 1), &DataType::Int64)
                            .map_err(|e| e.to_string())?
                            .as_primitive::<Int64Type>()
                            .value(0);
                        let per = match unit {
                            TimeUnit::Second => 1_000_000_000,
                            TimeUnit::Millisecond => 1_000_000,
                            TimeUnit::Microsecond => 1_000,
                            TimeUnit::Nanosecond => 1,
                        };
                        v.checked_mul(per)
                            .ok_or_else(|| format!("{v} {unit:?} is out of range"))?
                    }
                    t => return Err(format!("a {t} value cannot be written as DateTime")),
                };
                let ticks = nanos.div_euclid(100) + UNIX_EPOCH_TICKS;
                if ticks < 0 {
                    return Err("a time before 1601 cannot be written as DateTime".into());
                }
                Variant::from(DateTime::from(ticks))
            }
        })
    }
}

/// A float or integer column's value as f64; an integer beyond 2^53 that f64 cannot hold
/// exactly is refused.
fn float_at(col: &ArrayRef, row: usize) -> Result<f64, String> {
    match col.data_type() {
        DataType::Float64 => Ok(col.as_primitive::<Float64Type>().value(row)),
        DataType::Float32 => Ok(col.as_primitive::<Float32Type>().value(row).into()),
        t if t.is_integer() => {
            let x = arrow::compute::cast(&col.slice(row, 1), &DataType::Float64)
                .map_err(|e| e.to_string())?;
            let f = x.as_primitive::<Float64Type>().value(0);
            let back = arrow::compute::cast(&x, t).map_err(|e| e.to_string())?;
            if back.as_ref() != col.slice(row, 1).as_ref() {
                return Err(format!("{f} is not exactly the integer written"));
            }
            Ok(f)
        }
        t => Err(format!("a {t} value is not a number")),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        BooleanArray, Float64Array, Int64Array, StringArray, TimestampMillisecondArray, UInt64Array,
    };
    use arrow::datatypes::TimeUnit;

    use super::*;

    #[test]
    fn values_convert_exactly_or_are_refused() {
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![-129, 127, 70_000, 1 << 53]));
        assert!(Scalar::SByte.variant(&ints, 0).is_err());
        assert_eq!(Scalar::SByte.variant(&ints, 1), Ok(Variant::SByte(127)));
        assert!(Scalar::UInt16.variant(&ints, 2).is_err());
        assert_eq!(Scalar::Int32.variant(&ints, 2), Ok(Variant::Int32(70_000)));
        assert!(Scalar::Byte.variant(&ints, 0).is_err());
        assert_eq!(
            Scalar::Double.variant(&ints, 3),
            Ok(Variant::Double(9_007_199_254_740_992.0))
        );
        let big: ArrayRef = Arc::new(UInt64Array::from(vec![u64::MAX, (1 << 53) + 1]));
        assert_eq!(
            Scalar::UInt64.variant(&big, 0),
            Ok(Variant::UInt64(u64::MAX))
        );
        assert!(Scalar::Int64.variant(&big, 0).is_err());
        assert!(Scalar::Double.variant(&big, 1).is_err(), "not exact in f64");
        let floats: ArrayRef = Arc::new(Float64Array::from(vec![1.5, f64::NAN, 1e39]));
        assert_eq!(Scalar::Float.variant(&floats, 0), Ok(Variant::Float(1.5)));
        assert!(Scalar::Double.variant(&floats, 1).is_err());
        assert!(Scalar::Float.variant(&floats, 2).is_err());
        assert_eq!(
            Scalar::Double.variant(&floats, 2),
            Ok(Variant::Double(1e39))
        );
        let text: ArrayRef = Arc::new(StringArray::from(vec!["derate"]));
        assert_eq!(
            Scalar::String.variant(&text, 0),
            Ok(Variant::from("derate"))
        );
        let b: ArrayRef = Arc::new(BooleanArray::from(vec![true]));
        assert_eq!(Scalar::Boolean.variant(&b, 0), Ok(Variant::Boolean(true)));
        let t: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![1_700_000_000_123]));
        assert_eq!(
            Scalar::DateTime.variant(&t, 0),
            Ok(Variant::from(DateTime::from(
                1_700_000_000_123 * 10_000 + UNIX_EPOCH_TICKS
            )))
        );
    }

    #[test]
    fn column_types_each_data_type_takes() {
        assert!(Scalar::Int16.accepts(&DataType::Int64));
        assert!(!Scalar::Int16.accepts(&DataType::Float64));
        assert!(Scalar::Double.accepts(&DataType::Int32));
        assert!(!Scalar::Boolean.accepts(&DataType::Int8));
        assert!(!Scalar::String.accepts(&DataType::Int8));
        assert!(Scalar::DateTime.accepts(&DataType::Timestamp(TimeUnit::Millisecond, None)));
        assert_eq!(Scalar::of(&DataTypeId::UInt32.into()), Some(Scalar::UInt32));
        assert_eq!(Scalar::of(&DataTypeId::ByteString.into()), None);
    }
}
