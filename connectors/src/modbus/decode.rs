//! Turns the registers or bits of one point into a value: byte/word order, data type, bit
//! extraction, scale and offset.

use super::register_map::{Order, Point, ValueType};
use crate::columns::Number;

/// A decoded value.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// A bit.
    Bool(bool),
    /// A number.
    Number(Number),
    /// Text.
    Text(String),
}

/// The value's bytes, most significant first, from registers sent in `order`.
fn ordered_bytes(words: &[u16], order: Order) -> Vec<u8> {
    let mut out = Vec::with_capacity(words.len() * 2);
    let mut push = |w: u16| {
        let [hi, lo] = w.to_be_bytes();
        if order.bytes_swapped() {
            out.extend([lo, hi]);
        } else {
            out.extend([hi, lo]);
        }
    };
    if order.words_swapped() {
        words.iter().rev().copied().for_each(&mut push);
    } else {
        words.iter().copied().for_each(&mut push);
    }
    out
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut a = [0; N];
    a.copy_from_slice(&bytes[..N]);
    a
}

/// Decodes `point` from the registers it spans (`words.len() == point.len()`).
pub fn registers(point: &Point, words: &[u16]) -> Result<Reading, String> {
    if let Some(bit) = point.bit {
        return Ok(Reading::Bool(words[0] >> bit & 1 == 1));
    }
    if let ValueType::String(_) = point.value_type {
        // text runs in register order; only the byte order inside a register varies
        let order = if point.order.bytes_swapped() {
            Order::Badc
        } else {
            Order::Abcd
        };
        let bytes = ordered_bytes(words, order);
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| format!("registers at {} are not UTF-8 text", point.address))?;
        return Ok(Reading::Text(
            text.trim_end_matches(['\0', ' ']).to_string(),
        ));
    }
    let b = ordered_bytes(words, point.order);
    let n = match point.value_type {
        ValueType::Int16 => Number::Int(i16::from_be_bytes(array(&b)).into()),
        ValueType::UInt16 => Number::Int(u16::from_be_bytes(array(&b)).into()),
        ValueType::Int32 => Number::Int(i32::from_be_bytes(array(&b)).into()),
        ValueType::UInt32 => Number::Int(u32::from_be_bytes(array(&b)).into()),
        ValueType::Int64 => Number::Int(i64::from_be_bytes(array(&b)).into()),
        ValueType::UInt64 => Number::Int(u64::from_be_bytes(array(&b)).into()),
        ValueType::Float32 => Number::Float(f32::from_be_bytes(array(&b)).into()),
        ValueType::Float64 => Number::Float(f64::from_be_bytes(array(&b))),
        ValueType::Bool | ValueType::String(_) => {
            return Err(format!(
                "{} at {} holds bits, not registers",
                point.table, point.address
            ));
        }
    };
    Ok(Reading::Number(scaled(point, n)))
}

/// `n × scale + offset`; the number is unchanged without either.
fn scaled(point: &Point, n: Number) -> Number {
    if point.scale.is_none() && point.offset.is_none() {
        return n;
    }
    let x = match n {
        Number::Int(i) => i as f64,
        Number::Float(f) => f,
    };
    Number::Float(x * point.scale.unwrap_or(1.0) + point.offset.unwrap_or(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::register_map::parse_inline;

    fn point(spec: &str) -> Point {
        parse_inline(&format!("c = {spec}")).unwrap().remove(0)
    }

    #[test]
    fn orders_of_a_32_bit_value() {
        // 0x11223344 as sent by devices of each order
        for (order, words) in [
            ("ABCD", [0x1122, 0x3344]),
            ("CDAB", [0x3344, 0x1122]),
            ("BADC", [0x2211, 0x4433]),
            ("DCBA", [0x4433, 0x2211]),
        ] {
            let p = point(&format!("holding 0 uint32 {order}"));
            assert_eq!(
                registers(&p, &words).unwrap(),
                Reading::Number(Number::Int(0x11223344)),
                "{order}"
            );
        }
    }

    #[test]
    fn bits_strings_and_scaling() {
        let p = point("holding 0 bit=15");
        assert_eq!(registers(&p, &[0x8000]).unwrap(), Reading::Bool(true));
        let p = point("holding 0 string(3)");
        let words = [u16::from_be_bytes(*b"AB"), u16::from_be_bytes(*b"C\0"), 0];
        assert_eq!(registers(&p, &words).unwrap(), Reading::Text("ABC".into()));
        let p = point("holding 0 int16 scale=0.5 offset=10");
        assert_eq!(
            registers(&p, &[(-4i16) as u16]).unwrap(),
            Reading::Number(Number::Float(8.0))
        );
    }
}
