//! The register map: which Modbus table, address and data type fills each column. Written
//! inline in the `registers` option or in a YAML/JSON file named by `register_map`.
//!
//! One entry, inline or as a string in a map file:
//! `column = table address [type] [order] [scale=x] [offset=y] [bit=n]`, e.g.
//! `voltage = holding 3000 float32 CDAB scale=0.1`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;

/// A Modbus data table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Read/write bits (function 1).
    Coil,
    /// Read-only bits (function 2).
    DiscreteInput,
    /// Read/write 16-bit registers (function 3).
    Holding,
    /// Read-only 16-bit registers (function 4).
    Input,
}

impl Table {
    fn parse(s: &str) -> Result<Table, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "coil" | "coils" => Table::Coil,
            "discrete" | "discrete_input" | "discrete_inputs" => Table::DiscreteInput,
            "holding" | "holding_register" | "holding_registers" => Table::Holding,
            "input" | "input_register" | "input_registers" => Table::Input,
            _ => {
                return Err(format!(
                    "unknown table '{s}' (expected coil, discrete, holding or input)"
                ));
            }
        })
    }

    /// True for the bit tables (coils and discrete inputs).
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::DiscreteInput)
    }

    /// Most items one request may read: 2000 bits or 125 registers.
    pub fn max_per_request(self) -> u16 {
        if self.is_bits() { 2000 } else { 125 }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Table::Coil => "coil",
            Table::DiscreteInput => "discrete",
            Table::Holding => "holding",
            Table::Input => "input",
        })
    }
}

/// How a value is stored in its registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// One coil/discrete input, or one bit of a register.
    Bool,
    /// Signed 16 bits.
    Int16,
    /// Unsigned 16 bits.
    UInt16,
    /// Signed 32 bits.
    Int32,
    /// Unsigned 32 bits.
    UInt32,
    /// Signed 64 bits.
    Int64,
    /// Unsigned 64 bits.
    UInt64,
    /// IEEE 754 single precision.
    Float32,
    /// IEEE 754 double precision.
    Float64,
    /// Text in this many registers (two characters each).
    String(u16),
}

impl ValueType {
    fn parse(s: &str) -> Result<ValueType, String> {
        let lower = s.to_ascii_lowercase();
        if let Some(n) = lower
            .strip_prefix("string(")
            .and_then(|r| r.strip_suffix(')'))
        {
            return match n.trim().parse::<u16>() {
                Ok(n) if (1..=125).contains(&n) => Ok(ValueType::String(n)),
                _ => Err(format!(
                    "'{s}': a string spans 1 to 125 registers, e.g. string(8)"
                )),
            };
        }
        Ok(match lower.as_str() {
            "bool" => ValueType::Bool,
            "int16" => ValueType::Int16,
            "uint16" => ValueType::UInt16,
            "int32" => ValueType::Int32,
            "uint32" => ValueType::UInt32,
            "int64" => ValueType::Int64,
            "uint64" => ValueType::UInt64,
            "float32" => ValueType::Float32,
            "float64" => ValueType::Float64,
            _ => {
                return Err(format!(
                    "unknown type '{s}' (expected bool, int16, uint16, int32, uint32, int64, uint64, float32, float64 or string(N))"
                ));
            }
        })
    }

    /// Registers the value spans (1 for a bool).
    pub fn registers(self) -> u16 {
        match self {
            ValueType::Bool | ValueType::Int16 | ValueType::UInt16 => 1,
            ValueType::Int32 | ValueType::UInt32 | ValueType::Float32 => 2,
            ValueType::Int64 | ValueType::UInt64 | ValueType::Float64 => 4,
            ValueType::String(n) => n,
        }
    }
}

/// Byte and word order of a multi-register value, named after where the bytes of the
/// big-endian value `ABCD` end up: `ABCD` (big-endian, the Modbus norm), `CDAB` (words
/// swapped), `BADC` (bytes swapped in each word), `DCBA` (little-endian). For 64-bit values
/// the same rule applies to four words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Big-endian words, big-endian bytes.
    #[default]
    Abcd,
    /// Little-endian words (last word first), big-endian bytes.
    Cdab,
    /// Big-endian words, bytes swapped in each word.
    Badc,
    /// Little-endian words and bytes.
    Dcba,
}

impl Order {
    fn parse(s: &str) -> Option<Order> {
        Some(match s.to_ascii_uppercase().as_str() {
            "ABCD" => Order::Abcd,
            "CDAB" => Order::Cdab,
            "BADC" => Order::Badc,
            "DCBA" => Order::Dcba,
            _ => return None,
        })
    }

    /// The device sends the last word first.
    pub fn words_swapped(self) -> bool {
        matches!(self, Order::Cdab | Order::Dcba)
    }

    /// The device sends the low byte of each word first.
    pub fn bytes_swapped(self) -> bool {
        matches!(self, Order::Badc | Order::Dcba)
    }
}

/// One column's place in the device.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Column name as declared.
    pub column: String,
    /// Table.
    pub table: Table,
    /// Protocol address (0-based; register 40001 in a manual is holding 0).
    pub address: u16,
    /// Data type.
    pub value_type: ValueType,
    /// Byte/word order.
    pub order: Order,
    /// Multiplier applied after decoding.
    pub scale: Option<f64>,
    /// Added after scaling.
    pub offset: Option<f64>,
    /// Bit of a register (0 = least significant) for bool columns on register tables.
    pub bit: Option<u8>,
}

impl Point {
    /// Items of the table the point spans.
    pub fn len(&self) -> u16 {
        if self.table.is_bits() {
            1
        } else {
            self.value_type.registers()
        }
    }

    /// Points always span at least one item.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// One past the last item, as u32 so that the end of the table does not overflow.
    pub fn end(&self) -> u32 {
        self.address as u32 + self.len() as u32
    }

    /// Parses `table address [type] [order] [scale=x] [offset=y] [bit=n]` for `column`.
    pub fn parse(column: &str, spec: &str) -> Result<Point, String> {
        let mut words = spec.split_whitespace();
        let table = Table::parse(words.next().ok_or("expected a table and an address")?)?;
        let address = words.next().ok_or("expected an address after the table")?;
        let address = parse_address(address)?;
        let mut value_type = None;
        let mut order = None;
        let (mut scale, mut offset, mut bit) = (None, None, None);
        for w in words {
            if let Some((k, v)) = w.split_once('=') {
                let number = || {
                    v.parse::<f64>()
                        .ok()
                        .filter(|x| x.is_finite())
                        .ok_or_else(|| format!("{k}={v}: expected a number"))
                };
                match k.to_ascii_lowercase().as_str() {
                    "scale" => scale = Some(number()?),
                    "offset" => offset = Some(number()?),
                    "bit" => {
                        bit = Some(
                            v.parse::<u8>()
                                .ok()
                                .filter(|b| *b < 16)
                                .ok_or_else(|| format!("bit={v}: expected 0 to 15"))?,
                        )
                    }
                    _ => {
                        return Err(format!(
                            "unknown setting '{k}' (expected scale, offset or bit)"
                        ));
                    }
                }
            } else if let Some(o) = Order::parse(w) {
                order = Some(o);
            } else if value_type.is_none() {
                value_type = Some(ValueType::parse(w)?);
            } else {
                return Err(format!("unexpected '{w}'"));
            }
        }
        Point::new(
            column,
            PointSpec {
                table,
                address,
                value_type,
                order,
                scale,
                offset,
                bit,
            },
        )
    }

    fn new(column: &str, s: PointSpec) -> Result<Point, String> {
        let default_type = if s.table.is_bits() || s.bit.is_some() {
            ValueType::Bool
        } else {
            ValueType::UInt16
        };
        let value_type = s.value_type.unwrap_or(default_type);
        if s.table.is_bits() && value_type != ValueType::Bool {
            return Err(format!(
                "a {} holds single bits: its type is bool, not {value_type:?}",
                s.table
            ));
        }
        if s.table.is_bits() && s.bit.is_some() {
            return Err("bit= applies to registers, not to coils or discrete inputs".into());
        }
        if !s.table.is_bits() && value_type == ValueType::Bool && s.bit.is_none() {
            return Err("a bool read from a register needs bit=N (0 to 15)".into());
        }
        if s.bit.is_some() && value_type != ValueType::Bool {
            return Err("bit= extracts a bool: leave the type out or write bool".into());
        }
        let numeric = !matches!(value_type, ValueType::Bool | ValueType::String(_));
        if (s.scale.is_some() || s.offset.is_some()) && !numeric {
            return Err("scale and offset apply to numeric types only".into());
        }
        let point = Point {
            column: column.to_string(),
            table: s.table,
            address: s.address,
            value_type,
            order: s.order.unwrap_or_default(),
            scale: s.scale,
            offset: s.offset,
            bit: s.bit,
        };
        if point.end() > 65536 {
            return Err(format!(
                "{value_type:?} at address {} runs past the end of the table (65535)",
                s.address
            ));
        }
        Ok(point)
    }
}

fn parse_address(s: &str) -> Result<u16, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u16::from_str_radix(hex, 16).ok(),
        None => s.parse::<u16>().ok(),
    };
    parsed.ok_or_else(|| format!("address '{s}': expected 0 to 65535 (or hex such as 0x1F40)"))
}

/// The settings of a point before defaults are applied.
#[derive(Debug)]
struct PointSpec {
    table: Table,
    address: u16,
    value_type: Option<ValueType>,
    order: Option<Order>,
    scale: Option<f64>,
    offset: Option<f64>,
    bit: Option<u8>,
}

/// A map file: `registers:` maps each column to its point, either as the inline text or
/// as fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MapFile {
    registers: BTreeMap<String, FileEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FileEntry {
    Inline(String),
    Fields(FileFields),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFields {
    table: String,
    address: serde_yaml_ng::Value,
    #[serde(rename = "type")]
    value_type: Option<String>,
    order: Option<String>,
    scale: Option<f64>,
    offset: Option<f64>,
    bit: Option<u8>,
}

impl FileFields {
    fn point(self, column: &str) -> Result<Point, String> {
        let address = match &self.address {
            serde_yaml_ng::Value::Number(n) => n
                .as_u64()
                .and_then(|a| u16::try_from(a).ok())
                .ok_or_else(|| format!("address {n}: expected 0 to 65535"))?,
            serde_yaml_ng::Value::String(s) => parse_address(s)?,
            other => return Err(format!("address {other:?}: expected a number")),
        };
        let order = match &self.order {
            None => None,
            Some(o) => Some(
                Order::parse(o)
                    .ok_or_else(|| format!("order '{o}': expected ABCD, CDAB, BADC or DCBA"))?,
            ),
        };
        if let Some(b) = self.bit.filter(|b| *b > 15) {
            return Err(format!("bit {b}: expected 0 to 15"));
        }
        Point::new(
            column,
            PointSpec {
                table: Table::parse(&self.table)?,
                address,
                value_type: self
                    .value_type
                    .as_deref()
                    .map(ValueType::parse)
                    .transpose()?,
                order,
                scale: self.scale,
                offset: self.offset,
                bit: self.bit,
            },
        )
    }
}

/// Parses the inline `registers` option: entries separated by `;` or new lines.
pub fn parse_inline(text: &str) -> Result<Vec<Point>, String> {
    text.split([';', '\n'])
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let (column, spec) = entry.split_once('=').ok_or_else(|| {
                format!(
                    "'{entry}': expected column = table address type, e.g. 'temp = holding 0 int16'"
                )
            })?;
            Point::parse(column.trim(), spec).map_err(|e| format!("'{}': {e}", column.trim()))
        })
        .collect()
}

/// Reads a YAML (or, for `.json` files, JSON) map file.
pub fn load_file(path: &Path) -> Result<Vec<Point>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read register map {}: {e}", path.display()))?;
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let file: MapFile = if is_json {
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
    } else {
        serde_yaml_ng::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
    };
    file.registers
        .into_iter()
        .map(|(column, entry)| {
            match entry {
                FileEntry::Inline(spec) => Point::parse(&column, &spec),
                FileEntry::Fields(fields) => fields.point(&column),
            }
            .map_err(|e| format!("{}: register '{column}': {e}", path.display()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_entries() {
        let points = parse_inline(
            "v = holding 0x10 float32 CDAB scale=0.1 offset=-2; alarm = input 7 bit=3\n run = coil 5",
        )
        .unwrap();
        assert_eq!(points.len(), 3);
        assert_eq!(points[0].address, 16);
        assert_eq!(points[0].value_type, ValueType::Float32);
        assert_eq!(points[0].order, Order::Cdab);
        assert_eq!(points[0].scale, Some(0.1));
        assert_eq!(points[0].offset, Some(-2.0));
        assert_eq!(points[1].value_type, ValueType::Bool);
        assert_eq!(points[1].bit, Some(3));
        assert_eq!(points[2].table, Table::Coil);
        assert_eq!(points[2].value_type, ValueType::Bool);
    }

    #[test]
    fn bad_entries_say_why() {
        for (text, expected) in [
            ("x = holding", "address"),
            ("x = holdings 1", "unknown table"),
            ("x = holding 1 float", "unknown type"),
            ("x = coil 1 int16", "single bits"),
            ("x = holding 1 bool", "bit=N"),
            ("x = holding 65535 int32", "past the end"),
            ("x = holding 1 string(8) scale=2", "numeric"),
            ("x = holding 1 bit=16", "0 to 15"),
            ("x holding 1", "expected column"),
        ] {
            let e = parse_inline(text).unwrap_err();
            assert!(e.contains(expected), "{text}: {e}");
        }
    }
}
