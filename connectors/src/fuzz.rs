//! Entry points for fuzzing: each takes arbitrary bytes, exercises one place where input from
//! outside is read, and must return without panicking whatever the bytes. The fuzz targets in
//! `fuzz/` call them; the test suite replays the committed corpora through them and runs a
//! short random smoke run of each (`tests/fuzz.rs`).

use std::cell::RefCell;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;

use crate::columns::EpochUnit;
use crate::modbus::decode;
use crate::modbus::register_map::{self, Point};
use crate::mqtt::decode::{Decoder, Fill, Format};

/// A fuzz entry point: takes any bytes, must not panic.
pub type Target = fn(&[u8]);

/// Every fuzz target: its name (the directory of its corpus) and its entry point.
pub const TARGETS: &[(&str, Target)] = &[
    ("pipeline_file", pipeline_file),
    ("pipeline_mutation", pipeline_mutation),
    ("flight_statement", flight_statement),
    ("mqtt_json", mqtt_json),
    ("mqtt_packets", mqtt_packets),
    ("sparkplug_payload", sparkplug_payload),
    ("modbus_registers", modbus_registers),
    ("modbus_response", modbus_response),
    ("opcua_variant", opcua_variant),
    ("spill_file", spill_file),
];

thread_local! {
    static RUNTIME: RefCell<Option<tokio::runtime::Runtime>> = const { RefCell::new(None) };
}

/// Runs `f` to completion on this thread's runtime (made on first use).
fn block_on<T>(f: impl Future<Output = T>) -> T {
    RUNTIME.with(|r| {
        let mut r = r.borrow_mut();
        let rt = r.get_or_insert_with(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime")
        });
        rt.block_on(f)
    })
}

/// `weir check` on arbitrary bytes: read as a pipeline file (UTF-8 or not), parsed and
/// compiled with every connector.
pub fn pipeline_file(bytes: &[u8]) {
    let Ok(text) = weir_engine::files::pipeline_text(bytes) else {
        return;
    };
    let env = |name: &str| (name == "HOST").then(|| "127.0.0.1".to_string());
    let Ok(file) = weir_engine::parse::parse_file("fuzz.sql", &text, &env) else {
        return;
    };
    let connectors = crate::all();
    let _ = block_on(weir_engine::compile(vec![file], &connectors, true));
}

/// The example pipelines of the repository, the seeds of [`pipeline_mutation`].
const SEEDS: &[&str] = &[
    include_str!("../../queries/demo.sql"),
    include_str!("../../queries/bearing_health.sql"),
    include_str!("../../queries/mqtt_gateway.sql"),
    include_str!("../../queries/power_meter_modbus.sql"),
    include_str!("../../queries/line_opcua.sql"),
    include_str!("../../queries/energy_meter.sql"),
    include_str!("../../queries/motor_temperature.sql"),
];

/// Tokens mutations may put anywhere.
const VOCABULARY: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP",
    "BY",
    "TUMBLE",
    "HOP",
    "SESSION",
    "(",
    ")",
    ",",
    ";",
    "'",
    "=",
    "OR",
    "AND",
    "NOT",
    "CREATE",
    "VIEW",
    "SOURCE",
    "SINK",
    "WITH",
    "INSERT",
    "INTO",
    "AS",
    "window_start",
    "window_end",
    "INTERVAL",
    "'1' SECOND",
    "count(*)",
    "avg(",
    "ewma(",
    "zscore(",
    "OVER",
    "PARTITION",
    "UNION",
    "ALL",
    "NULL",
    "CAST(",
    "1e309",
    "-1",
    "0",
    "'${HOST}'",
    "'${NOPE}'",
    "\"",
    "/*",
    "--",
    "\n",
    "é",
    "\u{0}",
    "::",
    "[",
    "]",
    "{",
    "}",
];

/// Grammar-aware mutations of the example pipelines: the bytes choose a seed and edit its
/// tokens (replace, delete, repeat, insert from a vocabulary of SQL), then the result goes
/// through [`pipeline_file`].
pub fn pipeline_mutation(bytes: &[u8]) {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::Tokenizer;
    let Some((&pick, edits)) = bytes.split_first() else {
        return;
    };
    let seed = SEEDS[usize::from(pick) % SEEDS.len()];
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, seed).tokenize() else {
        return;
    };
    let mut words: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
    for e in edits.chunks(3) {
        if words.is_empty() {
            break;
        }
        let [op, a, b] = [e[0], *e.get(1).unwrap_or(&0), *e.get(2).unwrap_or(&0)];
        let at = (usize::from(a) << 8 | usize::from(b)) % words.len();
        let word = VOCABULARY[usize::from(b) % VOCABULARY.len()].to_string();
        match op % 5 {
            0 => words[at] = word,
            1 => {
                words.remove(at);
            }
            2 => {
                let n = usize::from(b % 8) + 1;
                let end = (at + n).min(words.len());
                let copy: Vec<String> = words[at..end].to_vec();
                for (i, w) in copy.into_iter().enumerate() {
                    words.insert(end + i, w);
                }
            }
            3 => words.insert(at, word),
            _ => {
                let other = usize::from(a) % words.len();
                words.swap(at, other);
            }
        }
    }
    pipeline_file(words.concat().as_bytes());
}

/// A Flight SQL statement on arbitrary bytes, over a snapshot with a few tables.
pub fn flight_statement(bytes: &[u8]) {
    let sql = String::from_utf8_lossy(bytes);
    let _ = block_on(weir_engine::live::fuzz_query(&sql));
}

/// The columns the MQTT JSON decoder fills in [`mqtt_json`]: one of each kind it supports.
fn mqtt_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("machine", DataType::Utf8, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
        Field::new("value", DataType::Float64, true),
        Field::new("count", DataType::Int64, true),
        Field::new("small", DataType::Int8, true),
        Field::new("flag", DataType::Boolean, true),
        Field::new("blob", DataType::Binary, true),
        Field::new("deep", DataType::Utf8, true),
    ]))
}

/// An MQTT JSON payload through the source's decoder (fields by name and by a nested path,
/// a required event time).
pub fn mqtt_json(bytes: &[u8]) {
    let schema = mqtt_schema();
    let mut fills: Vec<Fill> = schema
        .fields()
        .iter()
        .map(|f| Fill::Field(vec![f.name().to_string()]))
        .collect();
    fills[7] = Fill::Field(vec!["a".into(), "b".into(), "c".into()]);
    let mut required = vec![false; schema.fields().len()];
    required[1] = true;
    let mut d = Decoder::new(
        schema.clone(),
        Format::Json,
        EpochUnit::Millis,
        fills,
        required,
    );
    let captured = vec![None; schema.fields().len()];
    let _ = d.decode("plant/M1", &captured, bytes, 0);
    let _ = d.finish();
}

/// A Sparkplug B payload through the source's decoder as each message type in turn (an
/// NBIRTH first, so data can resolve its aliases), into text and number value columns.
pub fn sparkplug_payload(bytes: &[u8]) {
    use crate::mqtt::sparkplug::decode::{Behaviour, SparkplugDecoder, parts};
    for value in [DataType::Utf8, DataType::Float64] {
        let schema = Arc::new(Schema::new(vec![
            Field::new("group", DataType::Utf8, true),
            Field::new("device", DataType::Utf8, true),
            Field::new("metric", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            Field::new("value", value, true),
            Field::new("datatype", DataType::Utf8, true),
            Field::new("stale", DataType::Boolean, true),
            Field::new("seq", DataType::Int64, true),
        ]));
        let parts = parts(&schema, &[]).expect("row shape columns");
        let behaviour = Behaviour {
            rebirth: true,
            death_rows: true,
        };
        let mut d = SparkplugDecoder::new(schema, parts, behaviour);
        for topic in [
            "spBv1.0/G/NBIRTH/E",
            "spBv1.0/G/DBIRTH/E/D",
            "spBv1.0/G/NDATA/E",
            "spBv1.0/G/DDATA/E/D",
            "spBv1.0/G/DDEATH/E/D",
            "spBv1.0/G/NDEATH/E",
        ] {
            let _ = d.decode(topic, bytes, 0);
        }
        let _ = d.finish();
    }
}

/// Bytes from an MQTT broker through the source's packet guard (framing, oversized
/// messages, QoS 2 bookkeeping).
pub fn mqtt_packets(bytes: &[u8]) {
    block_on(crate::mqtt::guard::fuzz_frames(bytes));
}

/// A register-map entry (the first line) and register contents (the rest) through the map
/// parser and the value decoder.
pub fn modbus_registers(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let (spec, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let _ = register_map::parse_inline(spec);
    let Ok(point) = Point::parse("c", spec) else {
        return;
    };
    let raw = rest.as_bytes();
    let words: Vec<u16> = (0..usize::from(point.len()))
        .map(|i| {
            let hi = raw.get(2 * i).copied().unwrap_or(0);
            let lo = raw.get(2 * i + 1).copied().unwrap_or(0);
            u16::from_be_bytes([hi, lo])
        })
        .collect();
    let _ = decode::registers(&point, &words);
}

/// Bytes from a Modbus TCP server, as the answer to a read of holding registers and of
/// coils, through tokio-modbus' client and Weir's checks of the answer.
pub fn modbus_response(bytes: &[u8]) {
    block_on(crate::modbus::request::fuzz_answer(bytes));
}

/// An OPC UA Variant in its binary encoding, into a column of every type the source fills.
pub fn opcua_variant(bytes: &[u8]) {
    crate::opcua::values::fuzz_variant(bytes);
}

/// A spill file's bytes through the reader that decides whether it can be uploaded.
pub fn spill_file(bytes: &[u8]) {
    let _ = crate::object_store::spill::inspect(&Bytes::copy_from_slice(bytes));
}
