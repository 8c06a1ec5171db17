//! The plant's values as functions of the tick: what every variable holds at tick `k` (the
//! instant `k × tick`), so tests compute what they expect without asking the server.
//! Every value changes from one tick to the next, so a subscription reports every tick.

/// The machine variables, by browse name.
pub const MACHINE_VARIABLES: [&str; 5] = ["Temperature", "Speed", "Running", "Pressure", "Counter"];

/// The variables of the `Types` folder, one per OPC UA type.
pub const TYPE_VARIABLES: [&str; 15] = [
    "Bool",
    "SByte",
    "Byte",
    "Int16",
    "UInt16",
    "Int32",
    "UInt32",
    "Int64",
    "UInt64",
    "Float",
    "Double",
    "String",
    "DateTime",
    "DoubleArray",
    "Int32Array",
];

/// A value of the schedule, typed as the server publishes it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Boolean
    Bool(bool),
    /// Any signed integer type (the variable's own type is in [`type_value`]'s name)
    Int(i64),
    /// Any unsigned integer type
    UInt(u64),
    /// Float or Double (a Float is exactly representable as f64)
    Float(f64),
    /// String
    Text(String),
    /// DateTime, milliseconds since the Unix epoch
    TimeMs(i64),
    /// Array of Double
    Floats(Vec<f64>),
    /// Array of Int32
    Ints(Vec<i64>),
}

/// `Machine<m>.Temperature` (Double) at tick `k`.
pub fn temperature(m: u32, k: i64) -> f64 {
    20.0 + m as f64 + (k % 50) as f64 * 0.5
}

/// `Machine<m>.Speed` (Int32) at tick `k`.
pub fn speed(m: u32, k: i64) -> i32 {
    1000 * m as i32 + (k % 1000) as i32
}

/// `Machine<m>.Running` (Boolean) at tick `k`.
pub fn running(_m: u32, k: i64) -> bool {
    k % 2 == 0
}

/// `Machine<m>.Pressure` (Float) at tick `k`.
pub fn pressure(m: u32, k: i64) -> f32 {
    m as f32 + (k % 10) as f32 / 4.0
}

/// `Machine<m>.Pressure`'s status at tick `k` is Uncertain (`UncertainLastUsableValue`)
/// every fifth tick, Good otherwise.
pub fn pressure_uncertain(k: i64) -> bool {
    k % 5 == 0
}

/// `Machine<m>.Counter` (UInt32, numeric NodeId `ns=2;i=<1000·m + 1>`) at tick `k`.
pub fn counter(m: u32, k: i64) -> u32 {
    (k as u32).wrapping_add(m)
}

/// The numeric identifier of `Machine<m>.Counter`.
pub fn counter_id(m: u32) -> u32 {
    1000 * m + 1
}

/// A machine variable at tick `k`.
pub fn machine_value(name: &str, m: u32, k: i64) -> Value {
    match name {
        "Temperature" => Value::Float(temperature(m, k)),
        "Speed" => Value::Int(speed(m, k).into()),
        "Running" => Value::Bool(running(m, k)),
        "Pressure" => Value::Float(pressure(m, k).into()),
        "Counter" => Value::UInt(counter(m, k).into()),
        other => panic!("no machine variable {other}"),
    }
}

/// `Types.<name>` at tick `k`, at the edge of each type's range where that is sensible.
pub fn type_value(name: &str, k: i64, tick_ms: i64) -> Value {
    let s = k % 100;
    match name {
        "Bool" => Value::Bool(k % 2 == 1),
        "SByte" => Value::Int(-100 + s),
        "Byte" => Value::UInt(150 + s as u64),
        "Int16" => Value::Int(-30_000 - s),
        "UInt16" => Value::UInt(60_000 + s as u64),
        "Int32" => Value::Int(-2_000_000_000 - s),
        "UInt32" => Value::UInt(4_000_000_000 + s as u64),
        "Int64" => Value::Int(-9_000_000_000_000_000_000 - s),
        "UInt64" => Value::UInt(18_000_000_000_000_000_000 + s as u64),
        "Float" => Value::Float((s as f32 * 0.25 - 3.5) as f64),
        "Double" => Value::Float(s as f64 * 0.125 + 12_345.5),
        "String" => Value::Text(format!("batch-{k}")),
        "DateTime" => Value::TimeMs(k * tick_ms - 3_600_000),
        "DoubleArray" => Value::Floats(vec![k as f64, k as f64 + 0.5, -(k as f64)]),
        "Int32Array" => Value::Ints(vec![s, -s, 7]),
        other => panic!("no type variable {other}"),
    }
}

/// `Bulk.<i>` (Double, the benchmark's variables) at tick `k`.
pub fn bulk(i: u32, k: i64) -> f64 {
    k as f64 + i as f64 * 1e-4
}
