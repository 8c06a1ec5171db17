//! Sparkplug B messages to rows of the long shape — `group, edge_node, device, metric, ts,
//! value` and optionally `datatype, alias, is_historical, is_null, stale, seq,
//! message_type` — keeping each edge node's state ([`super::nodes`]): births name the
//! aliases data carries, deaths turn a node's or device's metrics stale, a sequence gap or
//! data from a node never born makes its state unknown and asks it for a rebirth (with
//! `rebirth = 'true'`).

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use prost::Message as _;

use super::nodes::{Catalog, Known, Life, Node, Nodes};
use super::proto::{DataType, Metric, Payload, Value};
use super::topic::{self, Kind, NAMESPACE, Topic};
use crate::columns::{ColumnBuffer, EpochUnit, Number};
use crate::mqtt::decode::Skip;
pub use crate::mqtt::payloads::Command;

/// Templates nested deeper than this are refused (a hostile payload cannot recurse the
/// decoder to death; protobuf decoding itself stops at 100 levels).
const MAX_TEMPLATE_DEPTH: usize = 16;
/// Minimum time between two rebirth requests to one node (ns).
const REBIRTH_EVERY_NS: i64 = 5_000_000_000;

/// What a column of a Sparkplug source holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The group id.
    Group,
    /// The edge node id.
    EdgeNode,
    /// The device id (null for the node's own metrics).
    Device,
    /// The metric's name (template members as `template.member`).
    Metric,
    /// The metric's timestamp, else the payload's, else the arrival time.
    Ts,
    /// The value, converted to the column's type.
    Value,
    /// The datatype's name (`Double`, `Int32`, ...).
    Datatype,
    /// The alias.
    Alias,
    /// Store-and-forward data.
    IsHistorical,
    /// The value is null (sent so, or stale).
    IsNull,
    /// A row for a metric of a node or device that died: its last value is no longer current.
    Stale,
    /// The payload's sequence number.
    Seq,
    /// `NBIRTH`, `NDATA`, `DBIRTH`, `DDATA`, `NDEATH` or `DDEATH`.
    MessageType,
    /// The message's topic.
    Topic,
    /// When the message arrived.
    Arrival,
}

/// The column names of the row shape and what each holds.
pub const PARTS: &[(&str, Part)] = &[
    ("group", Part::Group),
    ("edge_node", Part::EdgeNode),
    ("device", Part::Device),
    ("metric", Part::Metric),
    ("ts", Part::Ts),
    ("value", Part::Value),
    ("datatype", Part::Datatype),
    ("alias", Part::Alias),
    ("is_historical", Part::IsHistorical),
    ("is_null", Part::IsNull),
    ("stale", Part::Stale),
    ("seq", Part::Seq),
    ("message_type", Part::MessageType),
];

/// The part each column of `schema` holds: by its name, or `extra` (topic, arrival time).
pub fn parts(schema: &SchemaRef, extra: &[(usize, Part)]) -> Result<Vec<Part>, String> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if let Some((_, p)) = extra.iter().find(|(c, _)| *c == i) {
                return Ok(*p);
            }
            let name = f.name().to_ascii_lowercase();
            PARTS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, p)| *p)
                .ok_or_else(|| {
                    format!(
                        "column '{}' is not part of a Sparkplug B row (columns: {})",
                        f.name(),
                        PARTS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                    )
                })
        })
        .collect()
}

/// How the decoder treats node state.
#[derive(Debug, Clone, Copy)]
pub struct Behaviour {
    /// Ask a node whose state is unknown for a rebirth (an NCMD): `rebirth = 'true'`.
    pub rebirth: bool,
    /// A row per metric (null value, `stale` true) when a node or device dies.
    pub death_rows: bool,
}

/// What happened besides rows, for the source to count, log and act on.
#[derive(Debug, Default)]
pub struct Events {
    /// Metrics left out of a message whose other metrics became rows.
    pub skipped: Vec<Skip>,
    /// Rebirth requests to publish.
    pub commands: Vec<Command>,
    /// Nodes asked for a rebirth (or that would have been, without `rebirth`).
    pub rebirths_needed: u64,
    /// Sequence gaps.
    pub seq_errors: u64,
    /// NDEATHs whose bdSeq was not that of the node's last birth (ignored).
    pub stale_deaths: u64,
    /// A node's state changed (the per-state gauge needs a recount).
    pub life_changed: bool,
}

/// Turns Sparkplug B messages into rows, keeping each node's state.
#[derive(Debug)]
pub struct SparkplugDecoder {
    out: Rows,
    behaviour: Behaviour,
    nodes: Nodes,
    /// What the last messages caused besides rows; taken by the source.
    pub events: Events,
}

/// The rows decoded so far.
#[derive(Debug)]
struct Rows {
    schema: SchemaRef,
    parts: Vec<Part>,
    columns: Vec<ColumnBuffer>,
    rows: usize,
}

/// Where a row comes from.
struct RowContext<'m> {
    group: &'m str,
    edge_node: &'m str,
    device: Option<&'m str>,
    kind: Kind,
    seq: Option<u64>,
    topic: &'m str,
    /// The payload's timestamp, else the arrival time (ns).
    default_ns: i64,
    arrival_ns: i64,
}

/// One row's metric part.
struct MetricRow<'v> {
    name: &'v str,
    alias: Option<u64>,
    datatype: Option<DataType>,
    value: Option<&'v Value>,
    ts_ns: i64,
    is_historical: bool,
    is_null: bool,
    stale: bool,
}

fn skip(reason: &'static str, detail: impl Into<String>) -> Skip {
    Skip {
        reason,
        detail: detail.into(),
    }
}

fn ms_to_ns(ms: u64) -> Option<i64> {
    i64::try_from(ms).ok()?.checked_mul(1_000_000)
}

impl SparkplugDecoder {
    /// A decoder for `schema` whose columns hold `parts` (see [`parts`]).
    pub fn new(schema: SchemaRef, parts: Vec<Part>, behaviour: Behaviour) -> Self {
        let columns = schema
            .fields()
            .iter()
            .map(|f| ColumnBuffer::new(f.data_type()).expect("checked column type"))
            .collect();
        SparkplugDecoder {
            out: Rows {
                schema,
                parts,
                columns,
                rows: 0,
            },
            behaviour,
            nodes: Nodes::default(),
            events: Events::default(),
        }
    }

    /// The nodes seen.
    pub fn nodes(&self) -> &Nodes {
        &self.nodes
    }

    /// Rows decoded and not yet taken.
    pub fn rows(&self) -> usize {
        self.out.rows
    }

    /// The decoded rows as a batch; the decoder is empty afterwards.
    pub fn finish(&mut self) -> arrow::error::Result<RecordBatch> {
        let columns = self
            .out
            .columns
            .iter_mut()
            .map(ColumnBuffer::finish)
            .collect::<arrow::error::Result<Vec<_>>>()?;
        self.out.rows = 0;
        RecordBatch::try_new(self.out.schema.clone(), columns)
    }

    /// Decodes one message; returns the rows it added. A message that is not Sparkplug B
    /// (topic, protobuf) is skipped whole; a metric that cannot be read is left out and
    /// reported in [`Self::events`].
    pub fn decode(&mut self, topic: &str, payload: &[u8], arrival_ns: i64) -> Result<usize, Skip> {
        let (group, kind, edge_node, device) = match topic::parse(topic) {
            Ok(Topic::Node {
                group,
                kind,
                edge_node,
                device,
            }) => (group, kind, edge_node, device),
            // a host's state, or a command to a node: nothing to read
            Ok(Topic::State(_)) => return Ok(0),
            Err(e) => return Err(skip("wrong_topic", e)),
        };
        if matches!(kind, Kind::NodeCommand | Kind::DeviceCommand) {
            return Ok(0);
        }
        let p = Payload::decode(payload).map_err(|e| {
            skip(
                "malformed_protobuf",
                format!("not a Sparkplug B payload: {e}"),
            )
        })?;
        let before = self.out.rows;
        let c = RowContext {
            group,
            edge_node,
            device,
            kind,
            seq: p.seq,
            topic,
            default_ns: p.timestamp.and_then(ms_to_ns).unwrap_or(arrival_ns),
            arrival_ns,
        };
        let result = match kind {
            Kind::NodeBirth | Kind::DeviceBirth => self.birth(&c, &p),
            Kind::NodeData | Kind::DeviceData => self.data(&c, &p),
            Kind::NodeDeath | Kind::DeviceDeath => self.death(&c, &p),
            Kind::NodeCommand | Kind::DeviceCommand => Ok(()),
        };
        match result {
            Ok(()) => Ok(self.out.rows - before),
            Err(s) => {
                self.out.truncate(before);
                Err(s)
            }
        }
    }

    fn birth(&mut self, c: &RowContext, p: &Payload) -> Result<(), Skip> {
        let mut catalog = Catalog::default();
        for m in &p.metrics {
            declare(&mut catalog, m, "");
        }
        let freed = self
            .nodes
            .get(c.group, c.edge_node)
            .map_or(0, |n| match c.device {
                None => n.metric_count(),
                Some(d) => n.devices.get(d).map_or(0, |d| d.catalog.len()),
            });
        if !self.nodes.has_room(freed, catalog.len()) {
            return Err(skip(
                "too_many_metrics",
                format!(
                    "the birth declares {} metrics; {} are remembered over all nodes at most",
                    catalog.len(),
                    super::nodes::MAX_METRICS
                ),
            ));
        }
        let node = node_of(&mut self.nodes, &mut self.events, self.behaviour, c)?;
        let mut life_changed = false;
        match c.device {
            None => {
                node.bd_seq = p.metrics.iter().find_map(bd_seq);
                node.seq = c.seq;
                node.catalog = catalog;
                // devices are born again after their node
                node.devices.clear();
                node.births += 1;
                node.last_birth_ns = Some(c.arrival_ns);
                life_changed = node.life != Life::Online;
                node.life = Life::Online;
            }
            Some(d) => {
                if node.births == 0 {
                    // a device of a node never born while Weir listened
                    ask_rebirth(node, c, self.behaviour, &mut self.events);
                }
                let device = node.devices.entry(d.to_string()).or_default();
                device.online = true;
                device.catalog = catalog;
            }
        }
        self.events.life_changed |= life_changed;
        self.nodes.recount();
        for m in &p.metrics {
            self.out.metric_rows(&mut self.events, c, m, None, "", 0);
        }
        Ok(())
    }

    fn data(&mut self, c: &RowContext, p: &Payload) -> Result<(), Skip> {
        let node = node_of(&mut self.nodes, &mut self.events, self.behaviour, c)?;
        // names and datatypes by the births
        let unresolved = p
            .metrics
            .iter()
            .any(|m| m.name.is_none() && resolve(catalog_of(node, c.device), m).is_none());
        let never_born = node.births == 0
            || c.device
                .is_some_and(|d| !node.devices.get(d).is_some_and(|d| d.online));
        if never_born || unresolved {
            if node.life != Life::Unknown && unresolved {
                node.life = Life::Unknown;
                self.events.life_changed = true;
            }
            ask_rebirth(node, c, self.behaviour, &mut self.events);
        }
        let catalog = catalog_of(node, c.device);
        for m in &p.metrics {
            let known = resolve(catalog, m);
            if m.name.is_none() && known.is_none() {
                let why = match m.alias {
                    Some(a) => format!(
                        "{}: alias {a} was not declared by a birth Weir saw (the row is dropped; a rebirth is due)",
                        c.topic
                    ),
                    None => format!("{}: a metric with neither name nor alias", c.topic),
                };
                self.events.skipped.push(skip("unknown_alias", why));
                continue;
            }
            self.out.metric_rows(&mut self.events, c, m, known, "", 0);
        }
        Ok(())
    }

    fn death(&mut self, c: &RowContext, p: &Payload) -> Result<(), Skip> {
        let death_rows = self.behaviour.death_rows;
        let node = node_of(&mut self.nodes, &mut self.events, self.behaviour, c)?;
        let mut stale: Vec<(Option<String>, Known)> = Vec::new();
        match c.device {
            None => {
                let bd = p.metrics.iter().find_map(bd_seq);
                if let (Some(dead), Some(born)) = (bd, node.bd_seq)
                    && dead != born
                {
                    // the will of an earlier connection, published after the node came back
                    self.events.stale_deaths += 1;
                    tracing::debug!(
                        group = c.group,
                        edge_node = c.edge_node,
                        bd_seq = dead,
                        born = born,
                        "sparkplug NDEATH of an earlier session ignored"
                    );
                    return Ok(());
                }
                if node.life != Life::Offline {
                    self.events.life_changed = true;
                }
                node.life = Life::Offline;
                node.seq = None;
                if death_rows {
                    stale.extend(node.catalog.metrics.iter().map(|k| (None, k.clone())));
                }
                for (id, d) in node.devices.iter_mut() {
                    if death_rows && d.online {
                        stale.extend(
                            d.catalog
                                .metrics
                                .iter()
                                .map(|k| (Some(id.clone()), k.clone())),
                        );
                    }
                    d.online = false;
                }
            }
            Some(id) => {
                if let Some(d) = node.devices.get_mut(id) {
                    if death_rows && d.online {
                        stale.extend(
                            d.catalog
                                .metrics
                                .iter()
                                .map(|k| (Some(id.to_string()), k.clone())),
                        );
                    }
                    d.online = false;
                }
            }
        }
        for (device, k) in &stale {
            if k.datatype == Some(DataType::Template) {
                continue;
            }
            let context = RowContext {
                device: device.as_deref(),
                ..*c
            };
            let row = MetricRow {
                name: &k.name,
                alias: None,
                datatype: k.datatype,
                value: None,
                ts_ns: c.default_ns,
                is_historical: false,
                is_null: true,
                stale: true,
            };
            self.out
                .push_row(&context, &row)
                .map_err(|e| skip("wrong_type", e))?;
        }
        Ok(())
    }
}

impl Rows {
    fn truncate(&mut self, rows: usize) {
        for c in &mut self.columns {
            c.truncate(rows);
        }
        self.rows = rows;
    }

    /// The rows of one metric: one, or one per member of a template instance.
    fn metric_rows(
        &mut self,
        events: &mut Events,
        c: &RowContext,
        m: &Metric,
        known: Option<&Known>,
        prefix: &str,
        depth: usize,
    ) {
        let own = m.name.as_deref().or(known.map(|k| k.name.as_str()));
        let Some(own) = own else {
            events.skipped.push(skip(
                "unknown_alias",
                format!("{}: a template member without a name", c.topic),
            ));
            return;
        };
        let name: std::borrow::Cow<str> = if prefix.is_empty() {
            own.into()
        } else {
            format!("{prefix}.{own}").into()
        };
        let number = m
            .datatype
            .or(known.map(|k| k.datatype_number))
            .or(m.value.as_ref().map(|v| DataType::of_value(v) as u32));
        let datatype = number.and_then(DataType::from_number);
        let unsupported = |what: String| {
            skip(
                "unsupported_datatype",
                format!(
                    "{}: metric '{name}' {what}: not read (Weir reads scalar metrics and template instances)",
                    c.topic
                ),
            )
        };
        match (datatype, &m.value) {
            (_, Some(Value::TemplateValue(t))) => {
                if t.is_definition == Some(true) {
                    return;
                }
                if depth >= MAX_TEMPLATE_DEPTH {
                    events.skipped.push(unsupported(format!(
                        "nests templates deeper than {MAX_TEMPLATE_DEPTH}"
                    )));
                    return;
                }
                for member in &t.metrics {
                    self.metric_rows(events, c, member, None, &name, depth + 1);
                }
                return;
            }
            (Some(DataType::Template), _) => return,
            (Some(DataType::DataSet), _) | (_, Some(Value::DatasetValue(_))) => {
                events.skipped.push(unsupported("is a DataSet".into()));
                return;
            }
            (_, Some(Value::ExtensionValue(_))) => {
                events
                    .skipped
                    .push(unsupported("carries an extension value".into()));
                return;
            }
            (None, _) => {
                events.skipped.push(unsupported(format!(
                    "has datatype {} (arrays, property sets and unknown datatypes are not read)",
                    number.unwrap_or(0)
                )));
                return;
            }
            _ => {}
        }
        let is_null = m.is_null == Some(true) || m.value.is_none();
        let row = MetricRow {
            name: &name,
            alias: m.alias,
            datatype,
            value: if is_null { None } else { m.value.as_ref() },
            ts_ns: m.timestamp.and_then(ms_to_ns).unwrap_or(c.default_ns),
            is_historical: m.is_historical == Some(true),
            is_null,
            stale: false,
        };
        let at = self.rows;
        if let Err(e) = self.push_row(c, &row) {
            self.truncate(at);
            events.skipped.push(skip(
                "wrong_type",
                format!("{}: metric '{name}': {e}", c.topic),
            ));
        }
    }

    fn push_row(&mut self, c: &RowContext, r: &MetricRow) -> Result<(), String> {
        let at = self.rows;
        for (i, col) in self.columns.iter_mut().enumerate() {
            let pushed = match self.parts[i] {
                Part::Group => col.push_text(c.group, EpochUnit::Millis),
                Part::EdgeNode => col.push_text(c.edge_node, EpochUnit::Millis),
                Part::Device => match c.device {
                    Some(d) => col.push_text(d, EpochUnit::Millis),
                    None => {
                        col.push_null();
                        Ok(())
                    }
                },
                Part::Metric => col.push_text(r.name, EpochUnit::Millis),
                Part::Ts => {
                    col.push_time(r.ts_ns);
                    Ok(())
                }
                Part::Value => push_value(col, r.value, r.datatype),
                Part::Datatype => match r.datatype {
                    Some(t) => col.push_text(t.name(), EpochUnit::Millis),
                    None => {
                        col.push_null();
                        Ok(())
                    }
                },
                Part::Alias => match r.alias {
                    Some(a) => col.push_number(Number::Int(a.into()), EpochUnit::Millis),
                    None => {
                        col.push_null();
                        Ok(())
                    }
                },
                Part::IsHistorical => col.push_bool(r.is_historical),
                Part::IsNull => col.push_bool(r.is_null),
                Part::Stale => col.push_bool(r.stale),
                Part::Seq => match c.seq {
                    Some(s) => col.push_number(Number::Int(s.into()), EpochUnit::Millis),
                    None => {
                        col.push_null();
                        Ok(())
                    }
                },
                Part::MessageType => col.push_text(c.kind.level(), EpochUnit::Millis),
                Part::Topic => col.push_text(c.topic, EpochUnit::Millis),
                Part::Arrival => {
                    col.push_time(c.arrival_ns);
                    Ok(())
                }
            };
            if let Err(e) = pushed {
                let name = self.schema.field(i).name().clone();
                for c in &mut self.columns[..=i] {
                    c.truncate(at);
                }
                return Err(format!("column {name}: {e}"));
            }
        }
        self.rows += 1;
        Ok(())
    }
}

/// The node of `c` in `nodes`, counting and checking the message's sequence number.
fn node_of<'n>(
    nodes: &'n mut Nodes,
    events: &mut Events,
    behaviour: Behaviour,
    c: &RowContext,
) -> Result<&'n mut Node, Skip> {
    let (node, new) = nodes.get_or_add(c.group, c.edge_node).ok_or_else(|| {
        skip(
            "too_many_nodes",
            format!(
                "{} edge nodes are remembered already: {}/{} is not",
                super::nodes::MAX_NODES,
                c.group,
                c.edge_node
            ),
        )
    })?;
    events.life_changed |= new;
    // an NBIRTH starts the sequence over; an NDEATH carries none
    if c.kind != Kind::NodeBirth && c.kind != Kind::NodeDeath {
        if !node.in_sequence(c.seq) {
            node.seq_errors += 1;
            events.seq_errors += 1;
            tracing::warn!(
                group = c.group,
                edge_node = c.edge_node,
                expected = node.seq.map(|s| (s + 1) % 256),
                got = c.seq,
                "sparkplug sequence gap: the node's state is unknown until it is born again"
            );
            if node.life != Life::Unknown {
                node.life = Life::Unknown;
                events.life_changed = true;
            }
            ask_rebirth(node, c, behaviour, events);
        }
        if c.seq.is_some() {
            node.seq = c.seq;
        }
    }
    Ok(node)
}

/// The catalog of `node`'s `device` (or its own metrics).
fn catalog_of<'n>(node: &'n Node, device: Option<&str>) -> Option<&'n Catalog> {
    match device {
        None => Some(&node.catalog),
        Some(d) => node.devices.get(d).map(|d| &d.catalog),
    }
}

/// The metric `m` is by the births: by its name, else by its alias.
fn resolve<'k>(catalog: Option<&'k Catalog>, m: &Metric) -> Option<&'k Known> {
    let k = catalog?;
    match (&m.name, m.alias) {
        (Some(name), _) => k.by_name(name),
        (None, Some(a)) => k.by_alias(a),
        (None, None) => None,
    }
}

/// Remembers a birth's metric (template instances' members are not aliased).
fn declare(catalog: &mut Catalog, m: &Metric, prefix: &str) {
    let Some(name) = &m.name else { return };
    let number = m
        .datatype
        .or(m.value.as_ref().map(|v| DataType::of_value(v) as u32))
        .unwrap_or(0);
    let name = if prefix.is_empty() {
        name.clone()
    } else {
        format!("{prefix}.{name}")
    };
    catalog.declare(
        Known {
            name,
            datatype: DataType::from_number(number),
            datatype_number: number,
        },
        m.alias,
    );
}

/// The value of a `bdSeq` metric.
fn bd_seq(m: &Metric) -> Option<u64> {
    (m.name.as_deref() == Some("bdSeq")).then_some(())?;
    match m.value {
        Some(Value::LongValue(v)) => Some(v),
        Some(Value::IntValue(v)) => Some(v.into()),
        _ => None,
    }
}

/// Asks `node` for a rebirth, at most every [`REBIRTH_EVERY_NS`].
fn ask_rebirth(node: &mut Node, c: &RowContext, behaviour: Behaviour, events: &mut Events) {
    if node
        .rebirth_asked_ns
        .is_some_and(|t| c.arrival_ns - t < REBIRTH_EVERY_NS)
    {
        return;
    }
    node.rebirth_asked_ns = Some(c.arrival_ns);
    events.rebirths_needed += 1;
    if behaviour.rebirth {
        events
            .commands
            .push(rebirth_request(c.group, c.edge_node, c.arrival_ns));
    }
}

/// The NCMD asking an edge node to publish its births again.
pub fn rebirth_request(group: &str, edge_node: &str, now_ns: i64) -> Command {
    let payload = Payload {
        timestamp: Some((now_ns / 1_000_000).max(0) as u64),
        metrics: vec![Metric {
            name: Some("Node Control/Rebirth".into()),
            datatype: Some(DataType::Boolean as u32),
            value: Some(Value::BooleanValue(true)),
            ..Metric::default()
        }],
        ..Payload::default()
    };
    Command {
        topic: format!("{NAMESPACE}/{group}/NCMD/{edge_node}"),
        payload: payload.encode_to_vec(),
    }
}

/// Appends a metric's value to the value column, by its datatype.
fn push_value(
    col: &mut ColumnBuffer,
    v: Option<&Value>,
    t: Option<DataType>,
) -> Result<(), String> {
    let unit = EpochUnit::Millis;
    let Some(v) = v else {
        col.push_null();
        return Ok(());
    };
    match v {
        Value::IntValue(i) => {
            let n: i128 = match t {
                // two's complement in 32 bits; some writers send only the low bits
                Some(DataType::Int8) => {
                    let s = *i as i32;
                    if i8::try_from(s).is_ok() {
                        s.into()
                    } else {
                        (*i as u8 as i8).into()
                    }
                }
                Some(DataType::Int16) => {
                    let s = *i as i32;
                    if i16::try_from(s).is_ok() {
                        s.into()
                    } else {
                        (*i as u16 as i16).into()
                    }
                }
                Some(DataType::Int32) => (*i as i32).into(),
                _ => (*i).into(),
            };
            col.push_number(Number::Int(n), unit)
        }
        Value::LongValue(l) => match t {
            Some(DataType::Int64) => col.push_number(Number::Int((*l as i64).into()), unit),
            // ms since the epoch: a timestamp column takes it as such
            _ => col.push_number(Number::Int((*l).into()), unit),
        },
        // the shortest decimal that is this float (20.1f32 is 20.1, not 20.100000381...)
        Value::FloatValue(f) => col.push_number(
            Number::Float(f.to_string().parse().unwrap_or(f64::from(*f))),
            unit,
        ),
        Value::DoubleValue(d) => col.push_number(Number::Float(*d), unit),
        Value::BooleanValue(b) => col.push_bool(*b),
        Value::StringValue(s) => col.push_text(s, unit),
        Value::BytesValue(b) => col.push_bytes(b, unit),
        Value::DatasetValue(_) | Value::TemplateValue(_) | Value::ExtensionValue(_) => {
            Err("not a scalar value".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType as Arrow, Field, Int64Type, Schema, TimeUnit};
    use std::sync::Arc;

    use crate::mqtt::sparkplug::proto::Template;

    const T0: u64 = 1_767_225_600_000;

    fn decoder(value: Arrow, rebirth: bool) -> SparkplugDecoder {
        let schema = Arc::new(Schema::new(vec![
            Field::new("group", Arrow::Utf8, true),
            Field::new("edge_node", Arrow::Utf8, true),
            Field::new("device", Arrow::Utf8, true),
            Field::new("metric", Arrow::Utf8, true),
            Field::new("ts", Arrow::Timestamp(TimeUnit::Millisecond, None), true),
            Field::new("value", value, true),
            Field::new("datatype", Arrow::Utf8, true),
            Field::new("stale", Arrow::Boolean, true),
            Field::new("is_historical", Arrow::Boolean, true),
        ]));
        let parts = parts(&schema, &[]).unwrap();
        SparkplugDecoder::new(
            schema,
            parts,
            Behaviour {
                rebirth,
                death_rows: true,
            },
        )
    }

    fn metric(name: Option<&str>, alias: Option<u64>, t: Option<DataType>, v: Value) -> Metric {
        Metric {
            name: name.map(str::to_string),
            alias,
            datatype: t.map(|t| t as u32),
            value: Some(v),
            ..Metric::default()
        }
    }

    fn payload(seq: Option<u64>, metrics: Vec<Metric>) -> Vec<u8> {
        Payload {
            timestamp: Some(T0),
            metrics,
            seq,
            ..Payload::default()
        }
        .encode_to_vec()
    }

    fn bd_seq_metric(v: u64) -> Metric {
        metric(
            Some("bdSeq"),
            None,
            Some(DataType::UInt64),
            Value::LongValue(v),
        )
    }

    /// (device, metric, value as text, stale) of the decoded rows.
    fn rows(d: &mut SparkplugDecoder) -> Vec<(Option<String>, String, Option<String>, bool)> {
        let b = d.finish().unwrap();
        let text = |c: usize, i: usize| {
            let a = b.column(c);
            (!a.is_null(i)).then(|| arrow::util::display::array_value_to_string(a, i).unwrap())
        };
        (0..b.num_rows())
            .map(|i| {
                (
                    text(2, i),
                    text(3, i).unwrap(),
                    text(5, i),
                    b.column(7).as_boolean().value(i),
                )
            })
            .collect()
    }

    fn birth(d: &mut SparkplugDecoder, bd: u64) {
        let n = d
            .decode(
                "spBv1.0/G/NBIRTH/E",
                &payload(
                    Some(0),
                    vec![
                        metric(
                            Some("temp"),
                            Some(1),
                            Some(DataType::Double),
                            Value::DoubleValue(20.5),
                        ),
                        metric(
                            Some("count"),
                            Some(2),
                            Some(DataType::Int8),
                            Value::IntValue(u32::MAX),
                        ),
                        bd_seq_metric(bd),
                    ],
                ),
                0,
            )
            .unwrap();
        assert_eq!(n, 3);
        let n = d
            .decode(
                "spBv1.0/G/DBIRTH/E/D",
                &payload(
                    Some(1),
                    vec![metric(
                        Some("rpm"),
                        Some(7),
                        Some(DataType::Float),
                        Value::FloatValue(1450.1),
                    )],
                ),
                0,
            )
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn births_name_the_aliases_of_data_and_values_keep_their_types() {
        let mut d = decoder(Arrow::Utf8, false);
        birth(&mut d, 3);
        let data = payload(
            Some(2),
            vec![
                metric(None, Some(7), None, Value::FloatValue(20.1)),
                Metric {
                    timestamp: Some(T0 - 60_000),
                    is_historical: Some(true),
                    ..metric(None, Some(7), None, Value::FloatValue(1.5))
                },
            ],
        );
        assert_eq!(d.decode("spBv1.0/G/DDATA/E/D", &data, 0), Ok(2));
        let node = payload(
            Some(3),
            vec![metric(None, Some(2), None, Value::IntValue(0xFFFF_FF80))],
        );
        assert_eq!(d.decode("spBv1.0/G/NDATA/E", &node, 0), Ok(1));
        let b = d.finish().unwrap();
        let metric_names = b.column(3).as_string::<i32>();
        let values = b.column(5).as_string::<i32>();
        let got: Vec<(&str, &str)> = (0..b.num_rows())
            .map(|i| (metric_names.value(i), values.value(i)))
            .collect();
        assert_eq!(
            got,
            [
                ("temp", "20.5"),
                ("count", "-1"),
                ("bdSeq", "3"),
                ("rpm", "1450.1"),
                ("rpm", "20.1"),
                ("rpm", "1.5"),
                ("count", "-128"),
            ]
        );
        let ts = b
            .column(4)
            .as_primitive::<arrow::datatypes::TimestampMillisecondType>();
        assert_eq!((ts.value(4), ts.value(5)), (T0 as i64, T0 as i64 - 60_000));
        let hist = b.column(8).as_boolean();
        assert!(!hist.value(4) && hist.value(5));
        assert_eq!(b.column(6).as_string::<i32>().value(6), "Int8");
        assert_eq!(d.events.seq_errors, 0);
        assert!(d.events.skipped.is_empty());
    }

    #[test]
    fn a_sequence_gap_or_an_unknown_alias_asks_for_a_rebirth_once() {
        for rebirth in [false, true] {
            let mut d = decoder(Arrow::Float64, rebirth);
            birth(&mut d, 0);
            d.events = Events::default();
            // seq 2 expected
            let gap = payload(
                Some(5),
                vec![metric(None, Some(7), None, Value::FloatValue(1.0))],
            );
            assert_eq!(d.decode("spBv1.0/G/DDATA/E/D", &gap, 1_000), Ok(1));
            let unknown = payload(
                Some(6),
                vec![metric(None, Some(99), None, Value::DoubleValue(1.0))],
            );
            assert_eq!(d.decode("spBv1.0/G/DDATA/E/D", &unknown, 2_000), Ok(0));
            assert_eq!(d.events.seq_errors, 1);
            assert_eq!(
                d.events.rebirths_needed, 1,
                "one request per node every 5 s"
            );
            assert_eq!(d.events.skipped.len(), 1);
            assert_eq!(d.events.skipped[0].reason, "unknown_alias");
            assert_eq!(d.nodes().get("G", "E").unwrap().life, Life::Unknown);
            if rebirth {
                let c = &d.events.commands;
                assert_eq!(c.len(), 1);
                assert_eq!(c[0].topic, "spBv1.0/G/NCMD/E");
                let p = Payload::decode(c[0].payload.as_slice()).unwrap();
                assert_eq!(p.metrics[0].name.as_deref(), Some("Node Control/Rebirth"));
                assert_eq!(p.metrics[0].value, Some(Value::BooleanValue(true)));
            } else {
                assert!(
                    d.events.commands.is_empty(),
                    "a passive listener writes nothing"
                );
            }
            // 5 s later, still unknown: asked again
            let more = payload(
                Some(7),
                vec![metric(None, Some(99), None, Value::DoubleValue(1.0))],
            );
            d.decode("spBv1.0/G/DDATA/E/D", &more, 6_000_000_000)
                .unwrap();
            assert_eq!(d.events.rebirths_needed, 2);
            // a birth brings it back
            birth(&mut d, 1);
            assert_eq!(d.nodes().get("G", "E").unwrap().life, Life::Online);
        }
    }

    #[test]
    fn data_before_any_birth_keeps_named_metrics_and_drops_aliases() {
        let mut d = decoder(Arrow::Float64, true);
        let p = payload(
            Some(17),
            vec![
                metric(Some("named"), None, None, Value::DoubleValue(2.5)),
                metric(None, Some(3), None, Value::DoubleValue(1.0)),
            ],
        );
        assert_eq!(d.decode("spBv1.0/G/NDATA/E", &p, 0), Ok(1));
        assert_eq!(d.events.commands.len(), 1);
        assert_eq!(d.events.skipped[0].reason, "unknown_alias");
        assert_eq!(
            rows(&mut d),
            [(None, "named".into(), Some("2.5".into()), false)]
        );
    }

    #[test]
    fn deaths_make_stale_rows_unless_they_belong_to_an_earlier_birth() {
        let mut d = decoder(Arrow::Float64, false);
        birth(&mut d, 4);
        d.finish().unwrap();
        // the will of an earlier session (bdSeq 3)
        let old = payload(None, vec![bd_seq_metric(3)]);
        assert_eq!(d.decode("spBv1.0/G/NDEATH/E", &old, 0), Ok(0));
        assert_eq!(d.events.stale_deaths, 1);
        assert_eq!(d.nodes().get("G", "E").unwrap().life, Life::Online);
        // the device dies, then the node
        assert_eq!(
            d.decode("spBv1.0/G/DDEATH/E/D", &payload(Some(2), vec![]), 0),
            Ok(1)
        );
        let death = payload(None, vec![bd_seq_metric(4)]);
        assert_eq!(d.decode("spBv1.0/G/NDEATH/E", &death, 0), Ok(3));
        assert_eq!(
            rows(&mut d),
            [
                (Some("D".into()), "rpm".into(), None, true),
                (None, "temp".into(), None, true),
                (None, "count".into(), None, true),
                (None, "bdSeq".into(), None, true),
            ]
        );
        assert_eq!(d.nodes().get("G", "E").unwrap().life, Life::Offline);
        assert_eq!(d.nodes().by_life(), [0, 1, 0]);
    }

    #[test]
    fn templates_flatten_and_what_cannot_be_read_is_counted() {
        let mut d = decoder(Arrow::Int64, false);
        let motor = Template {
            template_ref: Some("Motor".into()),
            metrics: vec![
                metric(
                    Some("speed"),
                    None,
                    Some(DataType::Int32),
                    Value::IntValue(1500),
                ),
                metric(
                    Some("amps"),
                    None,
                    Some(DataType::Int32),
                    Value::IntValue(12),
                ),
            ],
            ..Template::default()
        };
        let definition = Template {
            is_definition: Some(true),
            ..motor.clone()
        };
        let p = payload(
            Some(0),
            vec![
                metric(
                    Some("Motor"),
                    None,
                    Some(DataType::Template),
                    Value::TemplateValue(definition),
                ),
                metric(
                    Some("M1"),
                    Some(1),
                    Some(DataType::Template),
                    Value::TemplateValue(motor),
                ),
                metric(
                    Some("table"),
                    Some(2),
                    Some(DataType::DataSet),
                    Value::DatasetValue(Default::default()),
                ),
                metric(Some("arr"), Some(3), None, Value::BytesValue(vec![1, 2])).clone(),
                metric(
                    Some("text"),
                    Some(4),
                    Some(DataType::String),
                    Value::StringValue("x".into()),
                ),
                bd_seq_metric(0),
            ],
        );
        // "arr" claims datatype 22 (Int8Array)
        let mut p = Payload::decode(p.as_slice()).unwrap();
        p.metrics[3].datatype = Some(22);
        assert_eq!(d.decode("spBv1.0/G/NBIRTH/E", &p.encode_to_vec(), 0), Ok(3));
        let reasons: Vec<&str> = d.events.skipped.iter().map(|s| s.reason).collect();
        assert_eq!(
            reasons,
            ["unsupported_datatype", "unsupported_datatype", "wrong_type"]
        );
        let b = d.finish().unwrap();
        let names = b.column(3).as_string::<i32>();
        let values = b.column(5).as_primitive::<Int64Type>();
        let got: Vec<(&str, i64)> = (0..b.num_rows())
            .map(|i| (names.value(i), values.value(i)))
            .collect();
        assert_eq!(got, [("M1.speed", 1500), ("M1.amps", 12), ("bdSeq", 0)]);
    }

    #[test]
    fn what_is_not_sparkplug_is_skipped_whole() {
        let mut d = decoder(Arrow::Float64, false);
        let cases: [(&str, &[u8], &str); 3] = [
            (
                "spBv1.0/G/NDATA/E",
                &[0xff, 0xff, 0xff, 0x0f, 0x12],
                "malformed_protobuf",
            ),
            ("spBv1.0/G/NDATA", b"", "wrong_topic"),
            ("plant/G/NDATA/E", b"", "wrong_topic"),
        ];
        for (topic, bytes, reason) in cases {
            assert_eq!(
                d.decode(topic, bytes, 0).unwrap_err().reason,
                reason,
                "{topic}"
            );
        }
        // a truncated birth
        let full = payload(
            Some(0),
            vec![metric(
                Some("m"),
                Some(1),
                None,
                Value::StringValue("x".repeat(100)),
            )],
        );
        let e = d
            .decode("spBv1.0/G/NBIRTH/E", &full[..full.len() - 10], 0)
            .unwrap_err();
        assert_eq!(e.reason, "malformed_protobuf");
        assert_eq!(d.rows(), 0);
        // host state and commands carry no rows
        assert_eq!(d.decode("spBv1.0/STATE/scada", b"{}", 0), Ok(0));
        assert_eq!(d.decode("spBv1.0/G/NCMD/E", b"", 0), Ok(0));
    }
}
