//! Column buffers filled value by value (from JSON values or text) and turned into Arrow
//! arrays of the declared types. Values are coerced only where nothing is lost: `"42"` fills
//! an integer column, `42.5` does not; numbers fill text columns as written.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Float64Array, Int64Array, StringArray, StringViewBuilder,
    TimestampNanosecondArray, UInt64Array,
};
use arrow::compute::cast;
use arrow::compute::kernels::cast_utils::string_to_timestamp_nanos;
use arrow::datatypes::DataType;
use serde_json::Value;

/// Unit of epoch numbers in timestamp columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochUnit {
    /// Seconds.
    Seconds,
    /// Milliseconds.
    Millis,
    /// Microseconds.
    Micros,
    /// Nanoseconds.
    Nanos,
}

impl EpochUnit {
    /// Parses `s`, `ms`, `us` or `ns`.
    pub fn parse(s: &str) -> Option<EpochUnit> {
        match s {
            "s" => Some(EpochUnit::Seconds),
            "ms" => Some(EpochUnit::Millis),
            "us" => Some(EpochUnit::Micros),
            "ns" => Some(EpochUnit::Nanos),
            _ => None,
        }
    }

    /// Nanoseconds in one unit.
    pub fn nanos(self) -> i64 {
        match self {
            EpochUnit::Seconds => 1_000_000_000,
            EpochUnit::Millis => 1_000_000,
            EpochUnit::Micros => 1_000,
            EpochUnit::Nanos => 1,
        }
    }
}

/// A number read from a payload or a device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// A whole number.
    Int(i128),
    /// Any other number.
    Float(f64),
}

impl std::fmt::Display for Number {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Number::Int(i) => write!(f, "{i}"),
            // as JSON writes it (`3.0`, `1e300`)
            Number::Float(x) => match serde_json::Number::from_f64(*x) {
                Some(n) => write!(f, "{n}"),
                None => write!(f, "{x}"),
            },
        }
    }
}

/// Text values in one buffer (no allocation per value), with where each ends.
#[derive(Debug, Default)]
struct TextValues {
    data: String,
    ends: Vec<usize>,
    valid: Vec<bool>,
}

impl TextValues {
    fn push(&mut self, s: Option<&str>) {
        if let Some(s) = s {
            self.data.push_str(s);
        }
        self.ends.push(self.data.len());
        self.valid.push(s.is_some());
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn truncate(&mut self, n: usize) {
        self.ends.truncate(n);
        self.valid.truncate(n);
        self.data.truncate(self.ends.last().copied().unwrap_or(0));
    }

    fn last_is_null(&self) -> bool {
        self.valid.last() == Some(&false)
    }

    fn values(&self) -> impl Iterator<Item = Option<&str>> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .zip(&self.valid)
            .map(|((a, b), ok)| ok.then(|| &self.data[a..*b]))
    }

    /// The values as a `Utf8View` array for that type, else as `Utf8`; empty afterwards.
    fn finish(&mut self, t: &DataType) -> ArrayRef {
        let a: ArrayRef = if t == &DataType::Utf8View {
            let mut b = StringViewBuilder::with_capacity(self.len());
            self.values().for_each(|v| b.append_option(v));
            Arc::new(b.finish())
        } else {
            Arc::new(StringArray::from_iter(self.values()))
        };
        self.data.clear();
        self.ends.clear();
        self.valid.clear();
        a
    }
}

/// Values of one column, before they become an Arrow array.
#[derive(Debug)]
enum Values {
    Int(Vec<Option<i64>>, i64, i64),
    UInt(Vec<Option<u64>>, u64),
    Float(Vec<Option<f64>>),
    Bool(Vec<Option<bool>>),
    Text(TextValues),
    Binary(Vec<Option<Vec<u8>>>),
    Time(Vec<Option<i64>>),
}

/// One column being filled.
#[derive(Debug)]
pub struct ColumnBuffer {
    data_type: DataType,
    values: Values,
}

/// The index of the column called `name` (ignoring case and surrounding spaces).
pub fn column_index(schema: &arrow::datatypes::SchemaRef, name: &str) -> Option<usize> {
    schema
        .fields()
        .iter()
        .position(|f| f.name().eq_ignore_ascii_case(name.trim()))
}

/// The names of `schema`'s columns, comma-separated, for messages about a missing one.
pub fn column_names(schema: &arrow::datatypes::SchemaRef) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The column types a buffer can fill.
pub fn supported(t: &DataType) -> bool {
    ColumnBuffer::new(t).is_some()
}

fn int_range(t: &DataType) -> Option<(i64, i64)> {
    Some(match t {
        DataType::Int8 => (i8::MIN as i64, i8::MAX as i64),
        DataType::Int16 => (i16::MIN as i64, i16::MAX as i64),
        DataType::Int32 => (i32::MIN as i64, i32::MAX as i64),
        DataType::Int64 => (i64::MIN, i64::MAX),
        _ => return None,
    })
}

fn uint_max(t: &DataType) -> Option<u64> {
    Some(match t {
        DataType::UInt8 => u8::MAX as u64,
        DataType::UInt16 => u16::MAX as u64,
        DataType::UInt32 => u32::MAX as u64,
        DataType::UInt64 => u64::MAX,
        _ => return None,
    })
}

/// A whole number from a JSON number, if it is one exactly.
fn exact_integer(n: &serde_json::Number) -> Option<i128> {
    if let Some(i) = n.as_i64() {
        return Some(i as i128);
    }
    if let Some(u) = n.as_u64() {
        return Some(u as i128);
    }
    let f = n.as_f64()?;
    (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i128)
}

fn describe(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 40 {
        format!("{}…", &s[..s.floor_char_boundary(40)])
    } else {
        s
    }
}

impl ColumnBuffer {
    /// A buffer for a column of type `t`, or `None` when the type is not supported.
    pub fn new(t: &DataType) -> Option<ColumnBuffer> {
        let values = if let Some((lo, hi)) = int_range(t) {
            Values::Int(vec![], lo, hi)
        } else if let Some(max) = uint_max(t) {
            Values::UInt(vec![], max)
        } else {
            match t {
                DataType::Float32 | DataType::Float64 => Values::Float(vec![]),
                DataType::Boolean => Values::Bool(vec![]),
                DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => {
                    Values::Text(TextValues::default())
                }
                DataType::Binary | DataType::BinaryView | DataType::LargeBinary => {
                    Values::Binary(vec![])
                }
                DataType::Timestamp(..) => Values::Time(vec![]),
                _ => return None,
            }
        };
        Some(ColumnBuffer {
            data_type: t.clone(),
            values,
        })
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        match &self.values {
            Values::Int(v, ..) | Values::Time(v) => v.len(),
            Values::UInt(v, _) => v.len(),
            Values::Float(v) => v.len(),
            Values::Bool(v) => v.len(),
            Values::Text(v) => v.len(),
            Values::Binary(v) => v.len(),
        }
    }

    /// True without values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops values after the first `n` (undoes a partly decoded message).
    pub fn truncate(&mut self, n: usize) {
        match &mut self.values {
            Values::Int(v, ..) | Values::Time(v) => v.truncate(n),
            Values::UInt(v, _) => v.truncate(n),
            Values::Float(v) => v.truncate(n),
            Values::Bool(v) => v.truncate(n),
            Values::Text(v) => v.truncate(n),
            Values::Binary(v) => v.truncate(n),
        }
    }

    /// Appends a null.
    pub fn push_null(&mut self) {
        match &mut self.values {
            Values::Int(v, ..) | Values::Time(v) => v.push(None),
            Values::UInt(v, _) => v.push(None),
            Values::Float(v) => v.push(None),
            Values::Bool(v) => v.push(None),
            Values::Text(v) => v.push(None),
            Values::Binary(v) => v.push(None),
        }
    }

    /// Appends a timestamp in nanoseconds since the epoch (for arrival times); only for
    /// timestamp columns.
    pub fn push_time(&mut self, nanos: i64) {
        if let Values::Time(v) = &mut self.values {
            v.push(Some(nanos));
        } else {
            self.push_null();
        }
    }

    /// Appends a JSON value, coerced losslessly; the error says why it does not fit.
    pub fn push_json(&mut self, v: &Value, unit: EpochUnit) -> Result<(), String> {
        match v {
            Value::Null => {
                self.push_null();
                Ok(())
            }
            Value::String(s) => self.push_text(s, unit),
            Value::Number(n) if !matches!(self.values, Values::Text(_) | Values::Binary(_)) => {
                let n = match exact_integer(n) {
                    Some(i) => Number::Int(i),
                    None => Number::Float(n.as_f64().unwrap_or(f64::NAN)),
                };
                self.push_number(n, unit)
            }
            Value::Bool(b) if !matches!(self.values, Values::Text(_) | Values::Binary(_)) => {
                self.push_bool(*b)
            }
            v => match &mut self.values {
                Values::Text(out) => {
                    out.push(Some(&v.to_string()));
                    Ok(())
                }
                Values::Binary(out) => {
                    out.push(Some(v.to_string().into_bytes()));
                    Ok(())
                }
                _ => Err(format!(
                    "{} does not fit a {} column",
                    describe(v),
                    self.data_type
                )),
            },
        }
    }

    /// Appends a boolean: only boolean and text columns take one.
    pub fn push_bool(&mut self, b: bool) -> Result<(), String> {
        match &mut self.values {
            Values::Bool(out) => out.push(Some(b)),
            Values::Text(out) => out.push(Some(if b { "true" } else { "false" })),
            Values::Binary(out) => out.push(Some(b.to_string().into_bytes())),
            _ => return Err(format!("{b} does not fit a {} column", self.data_type)),
        }
        Ok(())
    }

    /// Appends a number, coerced losslessly (a whole float fills an integer column; an
    /// epoch number of `unit` fills a timestamp column).
    pub fn push_number(&mut self, n: Number, unit: EpochUnit) -> Result<(), String> {
        let t = &self.data_type;
        let wrong = || format!("{n} does not fit a {t} column");
        let whole = match n {
            Number::Int(i) => Some(i),
            Number::Float(f) => (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i128),
        };
        match &mut self.values {
            Values::Int(out, lo, hi) => {
                let i = whole.filter(|i| (*lo as i128..=*hi as i128).contains(i));
                out.push(Some(i.ok_or_else(wrong)? as i64));
            }
            Values::UInt(out, max) => {
                let i = whole.filter(|i| (0..=*max as i128).contains(i));
                out.push(Some(i.ok_or_else(wrong)? as u64));
            }
            Values::Float(out) => out.push(Some(match n {
                Number::Int(i) => i as f64,
                Number::Float(f) => f,
            })),
            Values::Text(out) => out.push(Some(&n.to_string())),
            Values::Binary(out) => out.push(Some(n.to_string().into_bytes())),
            Values::Time(out) => {
                let scale = unit.nanos();
                let ns = match n {
                    Number::Int(i) => i
                        .checked_mul(scale as i128)
                        .and_then(|x| i64::try_from(x).ok()),
                    // whole and fractional parts apart: epoch nanoseconds exceed f64's
                    // 53-bit mantissa
                    Number::Float(f) => {
                        let whole = f.trunc();
                        let frac = ((f - whole) * scale as f64).round() as i128;
                        (whole.abs() < 9.2e18)
                            .then(|| whole as i128 * scale as i128 + frac)
                            .and_then(|x| i64::try_from(x).ok())
                    }
                };
                out.push(Some(ns.ok_or_else(wrong)?));
            }
            Values::Bool(_) => return Err(wrong()),
        }
        Ok(())
    }

    /// Appends text (a JSON string or a topic level), parsed for non-text columns.
    pub fn push_text(&mut self, s: &str, unit: EpochUnit) -> Result<(), String> {
        let t = &self.data_type;
        let wrong = || {
            let shown: String = s.chars().take(40).collect();
            format!("\"{shown}\" does not fit a {t} column")
        };
        let trimmed = s.trim();
        match &mut self.values {
            Values::Text(out) => out.push(Some(s)),
            Values::Binary(out) => out.push(Some(s.as_bytes().to_vec())),
            Values::Int(out, lo, hi) => {
                let i = trimmed
                    .parse::<i64>()
                    .ok()
                    .filter(|i| (*lo..=*hi).contains(i));
                out.push(Some(i.ok_or_else(wrong)?));
            }
            Values::UInt(out, max) => {
                let i = trimmed.parse::<u64>().ok().filter(|i| i <= max);
                out.push(Some(i.ok_or_else(wrong)?));
            }
            Values::Float(out) => {
                let f = trimmed.parse::<f64>().map_err(|_| wrong())?;
                out.push(Some(f));
            }
            Values::Bool(out) => {
                let b = match trimmed.to_ascii_lowercase().as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(wrong()),
                };
                out.push(Some(b));
            }
            Values::Time(_) => {
                if let Ok(i) = trimmed.parse::<i128>() {
                    return self.push_number(Number::Int(i), unit);
                }
                if let Ok(f) = trimmed.parse::<f64>() {
                    return self.push_number(Number::Float(f), unit);
                }
                let ns = string_to_timestamp_nanos(trimmed)
                    .map_err(|_| format!("{}: expected RFC 3339 time or epoch number", wrong()))?;
                if let Values::Time(out) = &mut self.values {
                    out.push(Some(ns));
                }
            }
        }
        Ok(())
    }

    /// Appends raw bytes (a raw payload): bytes for binary columns, UTF-8 text otherwise.
    pub fn push_bytes(&mut self, b: &[u8], unit: EpochUnit) -> Result<(), String> {
        if let Values::Binary(out) = &mut self.values {
            out.push(Some(b.to_vec()));
            return Ok(());
        }
        let s = std::str::from_utf8(b).map_err(|e| format!("payload is not UTF-8 text: {e}"))?;
        self.push_text(s, unit)
    }

    /// The last value is null.
    pub fn last_is_null(&self) -> bool {
        match &self.values {
            Values::Int(v, ..) | Values::Time(v) => v.last().is_some_and(Option::is_none),
            Values::UInt(v, _) => v.last().is_some_and(Option::is_none),
            Values::Float(v) => v.last().is_some_and(Option::is_none),
            Values::Bool(v) => v.last().is_some_and(Option::is_none),
            Values::Text(v) => v.last_is_null(),
            Values::Binary(v) => v.last().is_some_and(Option::is_none),
        }
    }

    /// The values as an array of the declared type; the buffer is empty afterwards.
    pub fn finish(&mut self) -> arrow::error::Result<ArrayRef> {
        let a: ArrayRef = match &mut self.values {
            Values::Int(v, ..) => Arc::new(Int64Array::from(std::mem::take(v))),
            Values::UInt(v, _) => Arc::new(UInt64Array::from(std::mem::take(v))),
            Values::Float(v) => Arc::new(Float64Array::from(std::mem::take(v))),
            Values::Bool(v) => Arc::new(BooleanArray::from(std::mem::take(v))),
            Values::Text(v) => v.finish(&self.data_type),
            Values::Binary(v) => {
                let v = std::mem::take(v);
                Arc::new(BinaryArray::from_iter(v))
            }
            Values::Time(v) => Arc::new(TimestampNanosecondArray::from(std::mem::take(v))),
        };
        if a.data_type() == &self.data_type {
            Ok(a)
        } else {
            cast(&a, &self.data_type)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int16Type, TimeUnit, TimestampMillisecondType};
    use serde_json::json;

    #[test]
    fn integers_take_only_exact_values_in_range() {
        let mut c = ColumnBuffer::new(&DataType::Int16).unwrap();
        let u = EpochUnit::Millis;
        c.push_json(&json!(7), u).unwrap();
        c.push_json(&json!(8.0), u).unwrap();
        c.push_json(&json!("9"), u).unwrap();
        c.push_json(&json!(null), u).unwrap();
        assert!(c.push_json(&json!(8.5), u).is_err());
        assert!(c.push_json(&json!(70000), u).is_err());
        assert!(c.push_json(&json!("x"), u).is_err());
        assert!(c.push_json(&json!(true), u).is_err());
        let a = c.finish().unwrap();
        let a = a.as_primitive::<Int16Type>();
        assert_eq!(a.len(), 4);
        assert_eq!(a.values()[..3], [7, 8, 9]);
        assert!(a.is_null(3));
    }

    #[test]
    fn timestamps_from_epochs_and_rfc3339() {
        let t = DataType::Timestamp(TimeUnit::Millisecond, None);
        let mut c = ColumnBuffer::new(&t).unwrap();
        c.push_json(&json!(1_700_000_000), EpochUnit::Seconds)
            .unwrap();
        c.push_json(&json!(1_700_000_000_123i64), EpochUnit::Millis)
            .unwrap();
        c.push_json(&json!(1_700_000_000.5), EpochUnit::Seconds)
            .unwrap();
        c.push_json(&json!("2023-11-14T22:13:20.25Z"), EpochUnit::Millis)
            .unwrap();
        c.push_json(&json!("1700000000000"), EpochUnit::Millis)
            .unwrap();
        assert!(c.push_json(&json!("yesterday"), EpochUnit::Millis).is_err());
        let a = c.finish().unwrap();
        let a = a.as_primitive::<TimestampMillisecondType>();
        assert_eq!(
            a.values().to_vec(),
            vec![
                1_700_000_000_000,
                1_700_000_000_123,
                1_700_000_000_500,
                1_700_000_000_250,
                1_700_000_000_000
            ]
        );
    }

    #[test]
    fn text_takes_numbers_as_written_and_truncate_undoes() {
        let mut c = ColumnBuffer::new(&DataType::Utf8View).unwrap();
        c.push_json(&json!("a"), EpochUnit::Millis).unwrap();
        c.push_json(&json!(1.5), EpochUnit::Millis).unwrap();
        c.push_json(&json!("b"), EpochUnit::Millis).unwrap();
        c.truncate(2);
        let a = c.finish().unwrap();
        assert_eq!(a.data_type(), &DataType::Utf8View);
        let a = arrow::compute::cast(&a, &DataType::Utf8).unwrap();
        let a = a.as_string::<i32>();
        assert_eq!((a.value(0), a.value(1), a.len()), ("a", "1.5", 2));
        assert!(ColumnBuffer::new(&DataType::Date32).is_none());
    }

    #[test]
    fn text_values_truncate_and_finish_as_views_or_strings() {
        for t in [DataType::Utf8View, DataType::Utf8] {
            let mut c = ColumnBuffer::new(&t).unwrap();
            c.push_text("M1", EpochUnit::Millis).unwrap();
            c.push_null();
            c.push_text("a much longer value than twelve bytes", EpochUnit::Millis)
                .unwrap();
            c.push_text("dropped", EpochUnit::Millis).unwrap();
            c.truncate(3);
            assert!(!c.last_is_null());
            let a = c.finish().unwrap();
            assert_eq!(a.data_type(), &t);
            let a = arrow::compute::cast(&a, &DataType::Utf8).unwrap();
            let a = a.as_string::<i32>();
            assert_eq!(a.len(), 3);
            assert_eq!(a.value(0), "M1");
            assert!(a.is_null(1));
            assert_eq!(a.value(2), "a much longer value than twelve bytes");
            assert!(c.is_empty());
        }
    }
}
