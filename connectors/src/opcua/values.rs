//! OPC UA values into Arrow columns: Boolean, every integer width, Float, Double, String,
//! DateTime, ByteString and LocalizedText, and arrays of them into list columns
//! (`DOUBLE[]`). A value whose type does not fit the declared column is refused with a
//! message naming both, never cast into something else.

use std::sync::Arc;

use arrow::array::{ArrayRef, ListArray};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, FieldRef};
use opcua::types::{DateTime, Variant};

use crate::columns::{ColumnBuffer, EpochUnit, Number};

/// 100 ns ticks from 1601-01-01 (OPC UA's epoch) to 1970-01-01.
pub const UNIX_EPOCH_TICKS: i64 = 116_444_736_000_000_000;

/// Nanoseconds since the Unix epoch of an OPC UA time.
pub fn unix_nanos(t: &DateTime) -> i64 {
    t.checked_ticks()
        .saturating_sub(UNIX_EPOCH_TICKS)
        .saturating_mul(100)
}

/// What a column takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Int,
    Float,
    Text,
    Binary,
    Time,
}

fn kind(t: &DataType) -> Option<Kind> {
    Some(match t {
        DataType::Boolean => Kind::Bool,
        t if t.is_integer() => Kind::Int,
        DataType::Float32 | DataType::Float64 => Kind::Float,
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => Kind::Text,
        DataType::Binary | DataType::BinaryView | DataType::LargeBinary => Kind::Binary,
        DataType::Timestamp(..) => Kind::Time,
        _ => return None,
    })
}

/// The OPC UA type name of a value, for messages.
pub fn type_name(v: &Variant) -> &'static str {
    match v {
        Variant::Empty => "Null",
        Variant::Boolean(_) => "Boolean",
        Variant::SByte(_) => "SByte",
        Variant::Byte(_) => "Byte",
        Variant::Int16(_) => "Int16",
        Variant::UInt16(_) => "UInt16",
        Variant::Int32(_) => "Int32",
        Variant::UInt32(_) => "UInt32",
        Variant::Int64(_) => "Int64",
        Variant::UInt64(_) => "UInt64",
        Variant::Float(_) => "Float",
        Variant::Double(_) => "Double",
        Variant::String(_) => "String",
        Variant::DateTime(_) => "DateTime",
        Variant::ByteString(_) => "ByteString",
        Variant::LocalizedText(_) => "LocalizedText",
        Variant::Array(_) => "array",
        _ => "structured value",
    }
}

/// One column being filled from OPC UA values.
#[derive(Debug)]
pub struct ValueColumn {
    data_type: DataType,
    kind: Kind,
    values: ColumnBuffer,
    /// For list columns: the element field, offsets into `values` and validity.
    list: Option<(FieldRef, Vec<i32>, Vec<bool>)>,
}

impl ValueColumn {
    /// A column of type `t`, or `None` when OPC UA values cannot fill it.
    pub fn new(t: &DataType) -> Option<ValueColumn> {
        let (element, list) = match t {
            DataType::List(f) => (f.data_type(), Some((f.clone(), vec![0], vec![]))),
            t => (t, None),
        };
        Some(ValueColumn {
            data_type: t.clone(),
            kind: kind(element)?,
            values: ColumnBuffer::new(element)?,
            list,
        })
    }

    /// Appends a null.
    pub fn push_null(&mut self) {
        match &mut self.list {
            Some((_, offsets, valid)) => {
                offsets.push(*offsets.last().expect("starts with 0"));
                valid.push(false);
            }
            None => self.values.push_null(),
        }
    }

    /// Appends text (a name or status) to a text column.
    pub fn push_str(&mut self, s: &str) {
        if self.values.push_text(s, EpochUnit::Seconds).is_err() {
            self.push_null();
        }
    }

    /// Appends a time in nanoseconds since the epoch to a timestamp column.
    pub fn push_time(&mut self, nanos: i64) {
        self.values.push_time(nanos);
    }

    /// Appends a value; on error nothing is appended and the message says what did not fit.
    pub fn push(&mut self, v: &Variant) -> Result<(), String> {
        let t = &self.data_type;
        match (&mut self.list, v) {
            (Some((_, offsets, valid)), Variant::Array(a)) => {
                let before = self.values.len();
                for item in &a.values {
                    if let Err(e) = push_scalar(self.kind, &mut self.values, item) {
                        self.values.truncate(before);
                        return Err(format!("array element: {e}"));
                    }
                }
                offsets.push(self.values.len() as i32);
                valid.push(true);
                Ok(())
            }
            (Some(_), Variant::Empty) => {
                self.push_null();
                Ok(())
            }
            (Some(_), v) => Err(format!(
                "a scalar {} does not fit the {t} column",
                type_name(v)
            )),
            (None, Variant::Array(a)) => Err(format!(
                "an array of {} values does not fit the {t} column (declare it as a list, e.g. DOUBLE[])",
                a.values.len()
            )),
            (None, v) => push_scalar(self.kind, &mut self.values, v)
                .map_err(|e| format!("{e} does not fit the {t} column")),
        }
    }

    /// The values as an array of the declared type; the column is empty afterwards.
    pub fn finish(&mut self) -> arrow::error::Result<ArrayRef> {
        let values = self.values.finish()?;
        Ok(match &mut self.list {
            Some((field, offsets, valid)) => {
                let offsets = std::mem::replace(offsets, vec![0]);
                let valid = std::mem::take(valid);
                Arc::new(ListArray::try_new(
                    field.clone(),
                    OffsetBuffer::new(offsets.into()),
                    values,
                    Some(NullBuffer::from(valid)),
                )?)
            }
            None => values,
        })
    }
}

/// An OPC UA Variant in its binary encoding into a column of every type the source fills
/// (for fuzzing): whatever the bytes, it ends without panicking.
pub fn fuzz_variant(bytes: &[u8]) {
    use opcua::types::{BinaryDecodable, ContextOwned};
    let context = ContextOwned::default();
    let Ok(v) = Variant::decode(&mut std::io::Cursor::new(bytes), &context.context()) else {
        return;
    };
    let element = |t: DataType| Arc::new(arrow::datatypes::Field::new("item", t, true));
    for t in [
        DataType::Boolean,
        DataType::Int8,
        DataType::UInt64,
        DataType::Int64,
        DataType::Float32,
        DataType::Float64,
        DataType::Utf8,
        DataType::Binary,
        DataType::Timestamp(arrow::datatypes::TimeUnit::Nanosecond, None),
        DataType::List(element(DataType::Float64)),
        DataType::List(element(DataType::Utf8)),
    ] {
        if let Some(mut c) = ValueColumn::new(&t) {
            let _ = c.push(&v);
            c.push_null();
            let _ = c.finish();
        }
    }
    let _ = type_name(&v);
}

/// Pushes one scalar; the error describes the value (the caller adds the column).
fn push_scalar(kind: Kind, out: &mut ColumnBuffer, v: &Variant) -> Result<(), String> {
    let int = |i: i128| match kind {
        Kind::Int | Kind::Float | Kind::Text => Some(Number::Int(i)),
        _ => None,
    };
    let number = match v {
        Variant::Empty => {
            out.push_null();
            return Ok(());
        }
        Variant::Boolean(b) if matches!(kind, Kind::Bool | Kind::Text) => {
            return out.push_bool(*b);
        }
        Variant::SByte(i) => int((*i).into()),
        Variant::Byte(i) => int((*i).into()),
        Variant::Int16(i) => int((*i).into()),
        Variant::UInt16(i) => int((*i).into()),
        Variant::Int32(i) => int((*i).into()),
        Variant::UInt32(i) => int((*i).into()),
        Variant::Int64(i) => int((*i).into()),
        Variant::UInt64(i) => int((*i).into()),
        Variant::Float(f) if matches!(kind, Kind::Float | Kind::Text) => {
            Some(Number::Float((*f).into()))
        }
        Variant::Double(f) if matches!(kind, Kind::Float | Kind::Text) => Some(Number::Float(*f)),
        Variant::String(s) if matches!(kind, Kind::Text | Kind::Binary) => {
            return out.push_text(s.as_ref(), EpochUnit::Seconds);
        }
        Variant::LocalizedText(t) if kind == Kind::Text => {
            return out.push_text(t.text.as_ref(), EpochUnit::Seconds);
        }
        Variant::ByteString(b) if kind == Kind::Binary => {
            return out.push_bytes(b.value.as_deref().unwrap_or_default(), EpochUnit::Seconds);
        }
        Variant::DateTime(t) if kind == Kind::Time => {
            out.push_time(unix_nanos(t));
            return Ok(());
        }
        Variant::DateTime(t) if kind == Kind::Text => {
            let s = t
                .as_chrono()
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
            return out.push_text(&s, EpochUnit::Seconds);
        }
        _ => None,
    };
    let shown = || {
        let s = format!("{v}");
        let s: String = s.chars().take(40).collect();
        format!("{} {s}", type_name(v))
    };
    match number {
        Some(n) => out.push_number(n, EpochUnit::Seconds).map_err(|_| shown()),
        None => Err(shown()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Field, Float64Type, Int64Type, TimeUnit};

    #[test]
    fn scalars_fit_or_are_refused() {
        let mut c = ValueColumn::new(&DataType::Int32).unwrap();
        c.push(&Variant::UInt16(60_000)).unwrap();
        c.push(&Variant::Empty).unwrap();
        let e = c.push(&Variant::Double(1.5)).unwrap_err();
        assert!(e.contains("Double 1.5") && e.contains("Int32"), "{e}");
        assert!(c.push(&Variant::UInt32(4_000_000_000)).is_err());
        assert!(c.push(&Variant::from("12")).is_err());
        assert!(c.push(&Variant::Boolean(true)).is_err());
        let a = c.finish().unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(
            a.as_primitive::<arrow::datatypes::Int32Type>().value(0),
            60_000
        );
        assert!(a.is_null(1));

        let mut t = ValueColumn::new(&DataType::Timestamp(TimeUnit::Nanosecond, None)).unwrap();
        let when = DateTime::from(UNIX_EPOCH_TICKS + 15_000_000_000);
        t.push(&Variant::from(when)).unwrap();
        assert!(t.push(&Variant::Int64(5)).is_err());
        let a = t.finish().unwrap();
        assert_eq!(
            a.as_primitive::<arrow::datatypes::TimestampNanosecondType>()
                .value(0),
            1_500_000_000_000
        );

        let mut s = ValueColumn::new(&DataType::Utf8).unwrap();
        s.push(&Variant::from("batch-7")).unwrap();
        s.push(&Variant::Boolean(false)).unwrap();
        s.push(&Variant::Float(0.25)).unwrap();
        let a = s.finish().unwrap();
        let a = a.as_string::<i32>();
        assert_eq!(
            (a.value(0), a.value(1), a.value(2)),
            ("batch-7", "false", "0.25")
        );
    }

    #[test]
    fn arrays_fill_list_columns() {
        let t = DataType::List(Arc::new(Field::new("item", DataType::Float64, true)));
        let mut c = ValueColumn::new(&t).unwrap();
        c.push(&Variant::from(vec![1.0f64, 2.5])).unwrap();
        c.push_null();
        c.push(&Variant::from(vec![3i32])).unwrap();
        assert!(c.push(&Variant::Double(1.0)).is_err());
        assert!(c.push(&Variant::from(vec!["x".to_string()])).is_err());
        let a = c.finish().unwrap();
        let l = a.as_list::<i32>();
        assert_eq!(l.len(), 3);
        assert_eq!(
            l.value(0).as_primitive::<Float64Type>().values(),
            &[1.0, 2.5]
        );
        assert!(l.is_null(1));
        assert_eq!(l.value(2).as_primitive::<Float64Type>().values(), &[3.0]);

        let mut scalar = ValueColumn::new(&DataType::Int64).unwrap();
        let e = scalar.push(&Variant::from(vec![1i64, 2])).unwrap_err();
        assert!(e.contains("array of 2"), "{e}");
        assert_eq!(
            scalar.finish().unwrap().as_primitive::<Int64Type>().len(),
            0
        );
    }
}
