//! The Sparkplug B payload as Rust types for prost, written from the Sparkplug 3.0
//! specification (Eclipse Foundation; its `sparkplug_b.proto` is EPL-2.0 — nothing of it is
//! vendored here: these are the fields the specification's chapter "Sparkplug B Payload"
//! defines, with its field numbers). Fields Weir does not use (metadata, properties, data
//! sets' contents, template parameters) are left out: protobuf skips unknown fields.

/// A Sparkplug B message body: metrics with a timestamp and a sequence number.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Payload {
    /// When the message was made (ms since the epoch, UTC).
    #[prost(uint64, optional, tag = "1")]
    pub timestamp: Option<u64>,
    /// The metrics.
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
    /// The edge node's message sequence number (0–255), absent in NDEATH and commands.
    #[prost(uint64, optional, tag = "3")]
    pub seq: Option<u64>,
    /// Optional UUID of the body's format.
    #[prost(string, optional, tag = "4")]
    pub uuid: Option<String>,
    /// Optional opaque body.
    #[prost(bytes = "vec", optional, tag = "5")]
    pub body: Option<Vec<u8>>,
}

/// One metric: a name (in births and commands) or an alias (data, after a birth), a
/// datatype (births), a timestamp and a value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    /// The metric's name (`Motor/Speed`).
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// The alias a birth assigned to the name.
    #[prost(uint64, optional, tag = "2")]
    pub alias: Option<u64>,
    /// When the value was taken (ms since the epoch, UTC).
    #[prost(uint64, optional, tag = "3")]
    pub timestamp: Option<u64>,
    /// [`DataType`] number.
    #[prost(uint32, optional, tag = "4")]
    pub datatype: Option<u32>,
    /// Store-and-forward data sent after a reconnect.
    #[prost(bool, optional, tag = "5")]
    pub is_historical: Option<bool>,
    /// Not to be stored by a historian.
    #[prost(bool, optional, tag = "6")]
    pub is_transient: Option<bool>,
    /// The value is null.
    #[prost(bool, optional, tag = "7")]
    pub is_null: Option<bool>,
    /// The value.
    #[prost(oneof = "Value", tags = "10, 11, 12, 13, 14, 15, 16, 17, 18, 19")]
    pub value: Option<Value>,
}

/// A metric's value, by the field that holds it.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Value {
    /// Int8, Int16, Int32 (two's complement in 32 bits), UInt8, UInt16, UInt32.
    #[prost(uint32, tag = "10")]
    IntValue(u32),
    /// Int64 (two's complement), UInt64, DateTime (ms since the epoch).
    #[prost(uint64, tag = "11")]
    LongValue(u64),
    /// Float.
    #[prost(float, tag = "12")]
    FloatValue(f32),
    /// Double.
    #[prost(double, tag = "13")]
    DoubleValue(f64),
    /// Boolean.
    #[prost(bool, tag = "14")]
    BooleanValue(bool),
    /// String, Text, UUID.
    #[prost(string, tag = "15")]
    StringValue(String),
    /// Bytes, File, and the array types (packed little-endian).
    #[prost(bytes = "vec", tag = "16")]
    BytesValue(Vec<u8>),
    /// DataSet (not read by Weir).
    #[prost(message, tag = "17")]
    DatasetValue(Opaque),
    /// Template: a definition (in a birth) or an instance with member metrics.
    #[prost(message, tag = "18")]
    TemplateValue(Template),
    /// An extension (not read by Weir).
    #[prost(message, tag = "19")]
    ExtensionValue(Opaque),
}

/// A message whose fields Weir does not read.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Opaque {}

/// A template (a UDT): a definition, or an instance whose member metrics carry values.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Template {
    /// The definition's version.
    #[prost(string, optional, tag = "1")]
    pub version: Option<String>,
    /// Member metrics.
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
    /// The definition an instance is of.
    #[prost(string, optional, tag = "4")]
    pub template_ref: Option<String>,
    /// A definition (in an NBIRTH), not an instance.
    #[prost(bool, optional, tag = "5")]
    pub is_definition: Option<bool>,
}

/// Sparkplug B datatypes (the specification's numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum DataType {
    /// 1
    Int8 = 1,
    /// 2
    Int16 = 2,
    /// 3
    Int32 = 3,
    /// 4
    Int64 = 4,
    /// 5
    UInt8 = 5,
    /// 6
    UInt16 = 6,
    /// 7
    UInt32 = 7,
    /// 8
    UInt64 = 8,
    /// 9
    Float = 9,
    /// 10
    Double = 10,
    /// 11
    Boolean = 11,
    /// 12
    String = 12,
    /// 13: ms since the epoch
    DateTime = 13,
    /// 14
    Text = 14,
    /// 15
    Uuid = 15,
    /// 16
    DataSet = 16,
    /// 17
    Bytes = 17,
    /// 18
    File = 18,
    /// 19
    Template = 19,
}

impl DataType {
    /// The datatype of number `n`; `None` for Unknown (0), property sets, arrays and numbers
    /// the specification does not define.
    pub fn from_number(n: u32) -> Option<DataType> {
        use DataType::*;
        Some(match n {
            1 => Int8,
            2 => Int16,
            3 => Int32,
            4 => Int64,
            5 => UInt8,
            6 => UInt16,
            7 => UInt32,
            8 => UInt64,
            9 => Float,
            10 => Double,
            11 => Boolean,
            12 => String,
            13 => DateTime,
            14 => Text,
            15 => Uuid,
            16 => DataSet,
            17 => Bytes,
            18 => File,
            19 => Template,
            _ => return None,
        })
    }

    /// The specification's name (`Int32`, `DateTime`, ...), as the `datatype` column shows it.
    pub fn name(self) -> &'static str {
        use DataType::*;
        match self {
            Int8 => "Int8",
            Int16 => "Int16",
            Int32 => "Int32",
            Int64 => "Int64",
            UInt8 => "UInt8",
            UInt16 => "UInt16",
            UInt32 => "UInt32",
            UInt64 => "UInt64",
            Float => "Float",
            Double => "Double",
            Boolean => "Boolean",
            String => "String",
            DateTime => "DateTime",
            Text => "Text",
            Uuid => "UUID",
            DataSet => "DataSet",
            Bytes => "Bytes",
            File => "File",
            Template => "Template",
        }
    }

    /// The datatype a value field implies when a metric declares none (data without a birth).
    pub fn of_value(v: &Value) -> DataType {
        match v {
            Value::IntValue(_) => DataType::Int32,
            Value::LongValue(_) => DataType::Int64,
            Value::FloatValue(_) => DataType::Float,
            Value::DoubleValue(_) => DataType::Double,
            Value::BooleanValue(_) => DataType::Boolean,
            Value::StringValue(_) => DataType::String,
            Value::BytesValue(_) => DataType::Bytes,
            Value::DatasetValue(_) => DataType::DataSet,
            Value::TemplateValue(_) => DataType::Template,
            Value::ExtensionValue(_) => DataType::Bytes,
        }
    }
}
