//! Weir as a Sparkplug B edge node (the MQTT sink with `format = 'sparkplug_b'`): the
//! query's columns are metrics (aliases 1, 2, ... in column order, datatypes from the column
//! types), each value of `device_column` a device. On every connect: NBIRTH (`bdSeq`,
//! `Node Control/Rebirth`, and the metrics themselves when there is no device column),
//! then a DBIRTH per device seen, with its last values; a new device's DBIRTH comes before
//! its first row. Every row is one DDATA (NDATA without a device column) with aliases (no
//! names) and datatypes, and the node's sequence number; the NDEATH is the connection's will. Rows that come while
//! no birth is out wait (bounded) and go after the births, flagged historical when the node
//! had been born before.

use std::collections::{BTreeMap, VecDeque};

use anyhow::Context;
use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{self as adt, DataType as Arrow, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use prost::Message as _;

use super::proto::{DataType, Metric, Payload, Value};
use super::topic::NAMESPACE;
use crate::mqtt::settings::Will;

/// Rows kept while they cannot be published (no connection); older ones are dropped beyond
/// it (counted as lost rows).
pub const MAX_WAITING_ROWS: usize = 10_000;

/// Devices the sink publishes at most (each keeps its last values for the births); rows of
/// further devices are dropped (counted as lost rows).
pub const MAX_DEVICES: usize = 10_000;

/// Where the sink publishes and what its rows hold.
#[derive(Debug, Clone)]
pub struct EdgeSetup {
    /// Group id.
    pub group: String,
    /// Edge node id.
    pub edge_node: String,
    /// The column whose values are device ids (none: the metrics are the node's).
    pub device_column: Option<String>,
    /// The column whose values are the metrics' timestamps (none: the time of publishing).
    pub time_column: Option<String>,
    /// The birth/death sequence number of this process's connection.
    pub bd_seq: u64,
}

impl EdgeSetup {
    /// The NDEATH, as the connection's will.
    pub fn will(&self) -> Will {
        let payload = Payload {
            timestamp: Some(now_ms()),
            metrics: vec![bd_seq_metric(self.bd_seq)],
            ..Payload::default()
        };
        Will {
            topic: self.topic("NDEATH", None),
            payload: payload.encode_to_vec(),
            qos: 1,
            retain: false,
        }
    }

    /// `spBv1.0/{group}/{kind}/{edge_node}[/{device}]`.
    pub fn topic(&self, kind: &str, device: Option<&str>) -> String {
        match device {
            Some(d) => format!("{NAMESPACE}/{}/{kind}/{}/{d}", self.group, self.edge_node),
            None => format!("{NAMESPACE}/{}/{kind}/{}", self.group, self.edge_node),
        }
    }

    /// The topic Rebirth commands come on.
    pub fn command_topic(&self) -> String {
        self.topic("NCMD", None)
    }
}

/// A column published as a metric.
#[derive(Debug, Clone)]
struct MetricColumn {
    index: usize,
    name: String,
    alias: u64,
    datatype: DataType,
}

/// A message to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// Its topic.
    pub topic: String,
    /// Its encoded payload.
    pub payload: Vec<u8>,
}

/// What waits to be published, in order.
#[derive(Debug, Clone)]
enum Pending {
    /// The NBIRTH (sequence number 0).
    NodeBirth,
    /// A device's DBIRTH, with its last values.
    DeviceBirth(String),
    /// A row.
    Data(String, Vec<Metric>),
}

/// The edge node's state. The connection task publishes what [`Edge::next`] gives it.
#[derive(Debug)]
pub struct Edge {
    setup: EdgeSetup,
    metrics: Vec<MetricColumn>,
    device: Option<usize>,
    time: Option<usize>,
    seq: u64,
    /// Births are out on the current connection (or queued before anything else).
    born: bool,
    /// An NBIRTH went out on some connection.
    born_before: bool,
    /// Each device's (or, without devices, the node's: key "") last values.
    last: BTreeMap<String, Vec<Metric>>,
    /// Messages to publish, in order.
    outbox: VecDeque<Pending>,
    /// Rows in the outbox.
    rows_waiting: usize,
}

fn now_ms() -> u64 {
    (weir_engine::clock::now_nanos() / 1_000_000).max(0) as u64
}

fn bd_seq_metric(v: u64) -> Metric {
    Metric {
        name: Some("bdSeq".into()),
        datatype: Some(DataType::UInt64 as u32),
        value: Some(Value::LongValue(v)),
        ..Metric::default()
    }
}

/// The Sparkplug datatype a column type is published as (other types as their text).
fn datatype(t: &Arrow) -> DataType {
    match t {
        Arrow::Int8 => DataType::Int8,
        Arrow::Int16 => DataType::Int16,
        Arrow::Int32 => DataType::Int32,
        Arrow::Int64 => DataType::Int64,
        Arrow::UInt8 => DataType::UInt8,
        Arrow::UInt16 => DataType::UInt16,
        Arrow::UInt32 => DataType::UInt32,
        Arrow::UInt64 => DataType::UInt64,
        Arrow::Float16 | Arrow::Float32 => DataType::Float,
        Arrow::Float64 => DataType::Double,
        Arrow::Boolean => DataType::Boolean,
        Arrow::Timestamp(..) => DataType::DateTime,
        Arrow::Binary | Arrow::LargeBinary | Arrow::BinaryView => DataType::Bytes,
        _ => DataType::String,
    }
}

/// A topic level made of a value (`/`, `+` and `#` become `_`).
fn level(v: &str) -> String {
    v.replace(['/', '+', '#'], "_")
}

/// Milliseconds since the epoch of a timestamp array's value.
fn timestamp_ms(a: &ArrayRef, row: usize) -> Option<i64> {
    if a.is_null(row) {
        return None;
    }
    let (ns_per, v) = match a.data_type() {
        Arrow::Timestamp(TimeUnit::Second, _) => (
            1_000_000_000,
            a.as_primitive::<adt::TimestampSecondType>().value(row),
        ),
        Arrow::Timestamp(TimeUnit::Millisecond, _) => (
            1_000_000,
            a.as_primitive::<adt::TimestampMillisecondType>().value(row),
        ),
        Arrow::Timestamp(TimeUnit::Microsecond, _) => (
            1_000,
            a.as_primitive::<adt::TimestampMicrosecondType>().value(row),
        ),
        Arrow::Timestamp(TimeUnit::Nanosecond, _) => (
            1,
            a.as_primitive::<adt::TimestampNanosecondType>().value(row),
        ),
        _ => return None,
    };
    Some(((v as i128 * ns_per) / 1_000_000) as i64)
}

/// The value of `a` at `row` as Sparkplug publishes a `t` metric (`a` is text for String).
fn value(a: &ArrayRef, row: usize, t: DataType) -> Option<Value> {
    if a.is_null(row) {
        return None;
    }
    Some(match t {
        DataType::Int8 => {
            Value::IntValue(a.as_primitive::<adt::Int8Type>().value(row) as i32 as u32)
        }
        DataType::Int16 => {
            Value::IntValue(a.as_primitive::<adt::Int16Type>().value(row) as i32 as u32)
        }
        DataType::Int32 => Value::IntValue(a.as_primitive::<adt::Int32Type>().value(row) as u32),
        DataType::Int64 => Value::LongValue(a.as_primitive::<adt::Int64Type>().value(row) as u64),
        DataType::UInt8 => Value::IntValue(a.as_primitive::<adt::UInt8Type>().value(row).into()),
        DataType::UInt16 => Value::IntValue(a.as_primitive::<adt::UInt16Type>().value(row).into()),
        DataType::UInt32 => Value::IntValue(a.as_primitive::<adt::UInt32Type>().value(row)),
        DataType::UInt64 => Value::LongValue(a.as_primitive::<adt::UInt64Type>().value(row)),
        DataType::Float => Value::FloatValue(match a.data_type() {
            Arrow::Float16 => a.as_primitive::<adt::Float16Type>().value(row).to_f32(),
            _ => a.as_primitive::<adt::Float32Type>().value(row),
        }),
        DataType::Double => Value::DoubleValue(a.as_primitive::<adt::Float64Type>().value(row)),
        DataType::Boolean => Value::BooleanValue(a.as_boolean().value(row)),
        DataType::DateTime => Value::LongValue(timestamp_ms(a, row)?.max(0) as u64),
        DataType::Bytes => Value::BytesValue(match a.data_type() {
            Arrow::LargeBinary => a.as_binary::<i64>().value(row).to_vec(),
            Arrow::BinaryView => a.as_binary_view().value(row).to_vec(),
            _ => a.as_binary::<i32>().value(row).to_vec(),
        }),
        _ => Value::StringValue(a.as_string::<i32>().value(row).to_string()),
    })
}

impl Edge {
    /// The edge node for rows of `schema`.
    pub fn new(setup: EdgeSetup, schema: &SchemaRef) -> anyhow::Result<Edge> {
        let find = |what: &str, name: &Option<String>| -> anyhow::Result<Option<usize>> {
            name.as_ref()
                .map(|n| {
                    schema
                        .fields()
                        .iter()
                        .position(|f| f.name().eq_ignore_ascii_case(n))
                        .with_context(|| {
                            let have: Vec<&str> =
                                schema.fields().iter().map(|f| f.name().as_str()).collect();
                            format!(
                                "{what} '{n}' is not a column of the rows (they have: {})",
                                have.join(", ")
                            )
                        })
                })
                .transpose()
        };
        let device = find("device_column", &setup.device_column)?;
        let time = find("time_column", &setup.time_column)?;
        if let Some(t) = time
            && !matches!(schema.field(t).data_type(), Arrow::Timestamp(..))
        {
            anyhow::bail!(
                "time_column '{}' is {}, not a timestamp",
                schema.field(t).name(),
                schema.field(t).data_type()
            );
        }
        let metrics: Vec<MetricColumn> = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != device && Some(*i) != time)
            .enumerate()
            .map(|(n, (index, f))| MetricColumn {
                index,
                name: f.name().clone(),
                alias: n as u64 + 1,
                datatype: datatype(f.data_type()),
            })
            .collect();
        if metrics.is_empty() {
            anyhow::bail!(
                "the rows have no column to publish as a metric besides the device and time columns"
            );
        }
        Ok(Edge {
            setup,
            metrics,
            device,
            time,
            seq: 0,
            born: false,
            born_before: false,
            last: BTreeMap::new(),
            outbox: VecDeque::new(),
            rows_waiting: 0,
        })
    }

    fn payload(&self, seq: u64, metrics: Vec<Metric>) -> Vec<u8> {
        Payload {
            timestamp: Some(now_ms()),
            metrics,
            seq: Some(seq),
            ..Payload::default()
        }
        .encode_to_vec()
    }

    /// Birth metrics: names, aliases and datatypes, with `values` (or null).
    fn declared(&self, values: Option<&Vec<Metric>>) -> Vec<Metric> {
        self.metrics
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let v = values.map(|v| &v[i]);
                Metric {
                    name: Some(c.name.clone()),
                    alias: Some(c.alias),
                    datatype: Some(c.datatype as u32),
                    timestamp: v.and_then(|v| v.timestamp),
                    is_null: v.map_or(Some(true), |v| v.is_null),
                    value: v.and_then(|v| v.value.clone()),
                    ..Metric::default()
                }
            })
            .collect()
    }

    /// The connection came up, or a host asked for a rebirth: NBIRTH and a DBIRTH per
    /// device go out before the rows that wait.
    pub fn born(&mut self) {
        self.outbox.retain(|p| matches!(p, Pending::Data(..)));
        let mut births = vec![Pending::NodeBirth];
        if self.device.is_some() {
            births.extend(self.last.keys().map(|d| Pending::DeviceBirth(d.clone())));
        }
        for b in births.into_iter().rev() {
            self.outbox.push_front(b);
        }
        self.born = true;
    }

    /// The connection was lost: rows wait for the next births, as historical data.
    pub fn lost(&mut self) {
        self.born = false;
        if self.born_before {
            for p in &mut self.outbox {
                if let Pending::Data(_, metrics) = p {
                    for m in metrics {
                        m.is_historical = Some(true);
                    }
                }
            }
        }
    }

    /// Rows not yet published.
    pub fn waiting_rows(&self) -> usize {
        self.rows_waiting
    }

    /// Nothing waits to be published.
    pub fn is_idle(&self) -> bool {
        self.outbox.is_empty()
    }

    /// The next message to publish, if the connection is up; call [`Edge::sent`] once it
    /// is queued for the broker (its sequence number is then used).
    pub fn next(&self) -> Option<Outgoing> {
        if !self.born {
            return None;
        }
        Some(match self.outbox.front()? {
            Pending::NodeBirth => {
                let mut node = vec![
                    bd_seq_metric(self.setup.bd_seq),
                    Metric {
                        name: Some("Node Control/Rebirth".into()),
                        datatype: Some(DataType::Boolean as u32),
                        value: Some(Value::BooleanValue(false)),
                        ..Metric::default()
                    },
                ];
                if self.device.is_none() {
                    node.extend(self.declared(self.last.get("")));
                }
                Outgoing {
                    topic: self.setup.topic("NBIRTH", None),
                    payload: self.payload(0, node),
                }
            }
            Pending::DeviceBirth(d) => Outgoing {
                topic: self.setup.topic("DBIRTH", Some(d)),
                payload: self.payload(self.seq, self.declared(self.last.get(d))),
            },
            Pending::Data(d, metrics) => {
                let topic = match self.device {
                    Some(_) => self.setup.topic("DDATA", Some(d)),
                    None => self.setup.topic("NDATA", None),
                };
                Outgoing {
                    topic,
                    payload: self.payload(self.seq, metrics.clone()),
                }
            }
        })
    }

    /// The message [`Edge::next`] gave is on its way: the sequence number moves on.
    pub fn sent(&mut self) {
        let seq = match self.outbox.pop_front() {
            Some(Pending::NodeBirth) => {
                self.born_before = true;
                0
            }
            Some(Pending::Data(..)) => {
                self.rows_waiting -= 1;
                self.seq
            }
            Some(Pending::DeviceBirth(_)) => self.seq,
            None => return,
        };
        self.seq = (seq + 1) % 256;
    }

    /// Queues `batch`'s rows (a DBIRTH before a device's first row); returns the rows
    /// dropped because more than [`MAX_WAITING_ROWS`] waited or they named a device beyond
    /// [`MAX_DEVICES`].
    pub fn rows(&mut self, batch: &RecordBatch) -> anyhow::Result<u64> {
        // text for the metrics published as String, and for the device ids
        let columns: Vec<ArrayRef> = self
            .metrics
            .iter()
            .map(|c| {
                let a = batch.column(c.index);
                if c.datatype == DataType::String {
                    arrow::compute::cast(a, &Arrow::Utf8)
                } else {
                    Ok(a.clone())
                }
            })
            .collect::<Result<_, _>>()?;
        let devices = self
            .device
            .map(|i| arrow::compute::cast(batch.column(i), &Arrow::Utf8))
            .transpose()?;
        let times = self.time.map(|i| batch.column(i).clone());
        let historical = !self.born && self.born_before;
        let mut dropped = 0;
        for row in 0..batch.num_rows() {
            let at = times
                .as_ref()
                .and_then(|t| timestamp_ms(t, row))
                .map_or_else(now_ms, |ms| ms.max(0) as u64);
            let metrics: Vec<Metric> = self
                .metrics
                .iter()
                .zip(&columns)
                .map(|(c, a)| {
                    let v = value(a, row, c.datatype);
                    Metric {
                        alias: Some(c.alias),
                        // the specification lets data leave it out, but hosts built on
                        // Eclipse Tahu's libraries cannot read a value without it
                        datatype: Some(c.datatype as u32),
                        timestamp: Some(at),
                        is_null: v.is_none().then_some(true),
                        is_historical: historical.then_some(true),
                        value: v,
                        ..Metric::default()
                    }
                })
                .collect();
            let device = match &devices {
                Some(d) => {
                    let d = d.as_string::<i32>();
                    level(if d.is_null(row) { "null" } else { d.value(row) })
                }
                None => String::new(),
            };
            let new_device = self.device.is_some() && !self.last.contains_key(&device);
            if new_device && self.last.len() >= MAX_DEVICES {
                dropped += 1;
                continue;
            }
            self.last.insert(device.clone(), metrics.clone());
            // births still to go out carry the device
            if new_device && self.born {
                self.outbox.push_back(Pending::DeviceBirth(device.clone()));
            }
            if self.rows_waiting >= MAX_WAITING_ROWS
                && let Some(oldest) = self
                    .outbox
                    .iter()
                    .position(|p| matches!(p, Pending::Data(..)))
            {
                self.outbox.remove(oldest);
                self.rows_waiting -= 1;
                dropped += 1;
            }
            self.outbox.push_back(Pending::Data(device, metrics));
            self.rows_waiting += 1;
        }
        Ok(dropped)
    }
}

/// Whether `payload` (an NCMD) asks for a rebirth.
pub fn asks_rebirth(payload: &[u8]) -> bool {
    Payload::decode(payload).is_ok_and(|p| {
        p.metrics.iter().any(|m| {
            m.name.as_deref() == Some("Node Control/Rebirth")
                && m.value == Some(Value::BooleanValue(true))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    fn edge() -> Edge {
        let schema = Arc::new(Schema::new(vec![
            Field::new("machine", Arrow::Utf8, true),
            Field::new("v", Arrow::Float64, true),
        ]));
        let setup = EdgeSetup {
            group: "G".into(),
            edge_node: "E".into(),
            device_column: Some("machine".into()),
            time_column: None,
            bd_seq: 7,
        };
        Edge::new(setup, &schema).unwrap()
    }

    fn batch(devices: impl Iterator<Item = String>) -> RecordBatch {
        let d: Vec<String> = devices.collect();
        let n = d.len();
        RecordBatch::try_from_iter([
            ("machine", Arc::new(StringArray::from(d)) as ArrayRef),
            ("v", Arc::new(Float64Array::from(vec![1.5; n])) as ArrayRef),
        ])
        .unwrap()
    }

    #[test]
    fn births_sequence_numbers_and_bounds() {
        let mut e = edge();
        e.born();
        // NBIRTH (seq 0), then per new device a DBIRTH and its DDATA
        e.rows(&batch(["M1".to_string()].into_iter())).unwrap();
        let mut got = Vec::new();
        while let Some(m) = e.next() {
            let p = Payload::decode(m.payload.as_slice()).unwrap();
            got.push((m.topic, p.seq.unwrap()));
            e.sent();
        }
        assert_eq!(
            got,
            [
                ("spBv1.0/G/NBIRTH/E".to_string(), 0),
                ("spBv1.0/G/DBIRTH/E/M1".to_string(), 1),
                ("spBv1.0/G/DDATA/E/M1".to_string(), 2),
            ]
        );
        // devices beyond the bound are refused; rows beyond the waiting bound drop the oldest
        let dropped = e
            .rows(&batch((0..MAX_DEVICES + 4).map(|i| format!("D{i}"))))
            .unwrap();
        assert_eq!(dropped, 5, "M1 and 9,999 new devices fit");
        assert_eq!(e.waiting_rows(), MAX_WAITING_ROWS - 1);
        let dropped = e.rows(&batch((0..3).map(|_| "M1".to_string()))).unwrap();
        assert_eq!((dropped, e.waiting_rows()), (2, MAX_WAITING_ROWS));
        e.lost();
        assert!(e.next().is_none(), "nothing goes out without a connection");
    }
}
