//! The inverse of [`super::decode`]: a value for one point turned into what is written to
//! the device — its registers in the point's byte/word order, or a bit. Scale and offset are
//! undone (`(value − offset) / scale`), integers are rounded to the nearest; a null, NaN,
//! infinite or out-of-range value is refused with the reason, never clamped.

use std::fmt;

use super::register_map::{Point, ValueType};

/// A value taken from a row, before encoding.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer beyond `i64`.
    UInt(u64),
    /// A float.
    Float(f64),
    /// Text.
    Text(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::UInt(u) => write!(f, "{u}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Text(t) => write!(f, "{t:?}"),
        }
    }
}

/// What goes to the device for one point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Registers, in the order they are written (from the point's address on).
    Words(Vec<u16>),
    /// A coil, or one bit of a holding register.
    Bit(bool),
}

/// Registers holding the big-endian bytes `be` as a device of the point's order expects them:
/// the inverse of [`super::decode`]'s ordering.
fn device_words(point: &Point, be: &[u8]) -> Vec<u16> {
    let mut words: Vec<u16> = be
        .chunks(2)
        .map(|c| {
            let (hi, lo) = (c[0], c.get(1).copied().unwrap_or(0));
            if point.order.bytes_swapped() {
                u16::from_be_bytes([lo, hi])
            } else {
                u16::from_be_bytes([hi, lo])
            }
        })
        .collect();
    if point.order.words_swapped() {
        words.reverse();
    }
    words
}

/// The raw number to store: scale and offset undone.
fn raw(point: &Point, v: &Value) -> Result<f64, String> {
    let x = match v {
        Value::Int(i) => *i as f64,
        Value::UInt(u) => *u as f64,
        Value::Float(x) => *x,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::Text(t) => return Err(format!("text {t:?} for a numeric register")),
    };
    if !x.is_finite() {
        return Err(format!("{x} is not a number that can be written"));
    }
    Ok((x - point.offset.unwrap_or(0.0)) / point.scale.unwrap_or(1.0))
}

/// An integer of `lo..=hi` from `v` (exactly, for integers without scale or offset; else
/// rounded to the nearest).
fn integer(point: &Point, v: &Value, lo: i128, hi: i128) -> Result<i128, String> {
    let exact = point.scale.is_none() && point.offset.is_none();
    let n = match v {
        Value::Int(i) if exact => i128::from(*i),
        Value::UInt(u) if exact => i128::from(*u),
        _ => {
            let x = raw(point, v)?.round();
            if x < lo as f64 || x > hi as f64 {
                return Err(format!(
                    "{v} is out of range for {:?} ({lo} to {hi}{})",
                    point.value_type,
                    if exact { "" } else { " after scale/offset" }
                ));
            }
            x as i128
        }
    };
    if n < lo || n > hi {
        return Err(format!(
            "{v} is out of range for {:?} ({lo} to {hi})",
            point.value_type
        ));
    }
    Ok(n)
}

/// Encodes `v` for `point`; `Err` says why it cannot be written.
pub fn encode(point: &Point, v: &Value) -> Result<Payload, String> {
    if point.value_type == ValueType::Bool {
        return match v {
            Value::Bool(b) => Ok(Payload::Bit(*b)),
            Value::Int(0) | Value::UInt(0) => Ok(Payload::Bit(false)),
            Value::Int(1) | Value::UInt(1) => Ok(Payload::Bit(true)),
            other => Err(format!("{other} for a bit (expected true/false, 0 or 1)")),
        };
    }
    let be: Vec<u8> = match point.value_type {
        ValueType::Int16 => (integer(point, v, i16::MIN.into(), i16::MAX.into())? as i16)
            .to_be_bytes()
            .to_vec(),
        ValueType::UInt16 => (integer(point, v, 0, u16::MAX.into())? as u16)
            .to_be_bytes()
            .to_vec(),
        ValueType::Int32 => (integer(point, v, i32::MIN.into(), i32::MAX.into())? as i32)
            .to_be_bytes()
            .to_vec(),
        ValueType::UInt32 => (integer(point, v, 0, u32::MAX.into())? as u32)
            .to_be_bytes()
            .to_vec(),
        ValueType::Int64 => (integer(point, v, i64::MIN.into(), i64::MAX.into())? as i64)
            .to_be_bytes()
            .to_vec(),
        ValueType::UInt64 => (integer(point, v, 0, u64::MAX.into())? as u64)
            .to_be_bytes()
            .to_vec(),
        ValueType::Float32 => {
            let x = raw(point, v)?;
            if x.abs() > f64::from(f32::MAX) {
                return Err(format!("{v} is out of range for Float32"));
            }
            (x as f32).to_be_bytes().to_vec()
        }
        ValueType::Float64 => raw(point, v)?.to_be_bytes().to_vec(),
        ValueType::String(n) => {
            let Value::Text(t) = v else {
                return Err(format!("{v} for a text register (expected text)"));
            };
            let room = usize::from(n) * 2;
            if t.len() > room {
                return Err(format!(
                    "text of {} bytes does not fit in {n} registers ({room} bytes)",
                    t.len()
                ));
            }
            let mut bytes = t.as_bytes().to_vec();
            bytes.resize(room, 0);
            // text runs in register order; only the byte order inside a register varies
            let mut words = device_words(point, &bytes);
            if point.order.words_swapped() {
                words.reverse();
            }
            return Ok(Payload::Words(words));
        }
        ValueType::Bool => unreachable!("handled above"),
    };
    Ok(Payload::Words(device_words(point, &be)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::columns::Number;
    use crate::modbus::decode::{self, Reading};
    use crate::modbus::register_map::parse_inline;

    fn point(spec: &str) -> Point {
        parse_inline(&format!("c = {spec}")).unwrap().remove(0)
    }

    /// Encoding then decoding gives the value back, for every type and order.
    #[test]
    fn decode_undoes_encode() {
        for order in ["ABCD", "CDAB", "BADC", "DCBA"] {
            for (ty, v, back) in [
                ("int16", Value::Int(-1234), Number::Int(-1234)),
                ("uint16", Value::Int(65535), Number::Int(65535)),
                ("int32", Value::Int(-70000), Number::Int(-70000)),
                (
                    "uint32",
                    Value::Int(4_000_000_000),
                    Number::Int(4_000_000_000),
                ),
                ("int64", Value::Int(i64::MIN), Number::Int(i64::MIN.into())),
                ("float32", Value::Float(1.5), Number::Float(1.5)),
                ("float64", Value::Float(-2.25e300), Number::Float(-2.25e300)),
            ] {
                let p = point(&format!("holding 0 {ty} {order}"));
                let Payload::Words(w) = encode(&p, &v).unwrap() else {
                    panic!("words")
                };
                assert_eq!(
                    decode::registers(&p, &w).unwrap(),
                    Reading::Number(back),
                    "{ty} {order}"
                );
            }
            let p = point(&format!("holding 0 string(3) {order}"));
            let Payload::Words(w) = encode(&p, &Value::Text("ABCDE".into())).unwrap() else {
                panic!("words")
            };
            assert_eq!(
                decode::registers(&p, &w).unwrap(),
                Reading::Text("ABCDE".into())
            );
        }
    }

    #[test]
    fn scale_is_undone_and_bad_values_are_refused() {
        let p = point("holding 0 int16 scale=0.1 offset=-5");
        // 23.4 = raw × 0.1 − 5 → raw 284
        assert_eq!(
            encode(&p, &Value::Float(23.4)).unwrap(),
            Payload::Words(vec![284])
        );
        for (spec, v, why) in [
            ("holding 0 int16", Value::Int(40000), "out of range"),
            ("holding 0 uint16", Value::Int(-1), "out of range"),
            ("holding 0 uint16", Value::Float(f64::NAN), "not a number"),
            ("holding 0 float32", Value::Float(1e39), "out of range"),
            (
                "holding 0 int16 scale=0.1",
                Value::Float(4000.0),
                "after scale",
            ),
            (
                "holding 0 string(1)",
                Value::Text("abc".into()),
                "does not fit",
            ),
            ("coil 0", Value::Int(2), "for a bit"),
        ] {
            let e = encode(&point(spec), &v).unwrap_err();
            assert!(e.contains(why), "{spec} {v}: {e}");
        }
    }
}
