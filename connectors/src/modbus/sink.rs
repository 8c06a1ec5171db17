//! `connector = 'modbus'` as a sink: each row's mapped columns written to its unit through
//! the register map, which is also the allowlist — nothing outside it can ever be written.
//! Coils with function 5 (15 for neighbours), holding registers with 6 (16 for values of
//! several registers and for neighbours), a bit of a holding register with mask write (22),
//! or, for devices without it and only when allowed, by reading and writing the register.
//! The safety rules shared with the OPC UA sink are in [`crate::write_back`].

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use tokio::time::Instant;
use tokio_modbus::{Request, Response};
use weir_engine::PipelineError;
use weir_engine::connector::{Sink, SinkSpec, SinkStart};
use weir_engine::observe::telemetry::SinkTelemetry;
use weir_engine::parse::Options;

use super::encode::{self, Payload, Value};
use super::link::Link;
use super::register_map::{self, Point, Table, ValueType};
use super::request::{self, Failure};
use super::settings::{
    ALLOW_READ_MODIFY_WRITE, RETRIES, SINK_COALESCE, SINK_REGISTER_MAP, SINK_REGISTERS,
    SINK_UNIT_COLUMN, SINK_UNIT_ID, TIMEOUT,
};
use super::source::parse_units;
use super::transport::Transport;
use crate::columns::{column_index, column_names};
use crate::owner::Owner;
use crate::write_back::{Safety, Targets};

/// Registers one write (function 16) may carry.
const MAX_REGISTERS: usize = 123;
/// Coils one write (function 15) may carry.
const MAX_COILS: usize = 1968;

/// One point of one unit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    unit: u8,
    /// Index into the points, which are sorted by table and address.
    point: usize,
    /// `unit 1 holding 100 (speed)`, for logs.
    label: Arc<str>,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

/// A value on its way: compared by what reaches the device.
#[derive(Debug, Clone)]
pub struct Outgoing {
    value: Value,
    payload: Payload,
}

impl PartialEq for Outgoing {
    fn eq(&self, other: &Self) -> bool {
        self.payload == other.payload
    }
}

impl fmt::Display for Outgoing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.payload {
            Payload::Bit(_) => write!(f, "{}", self.value),
            Payload::Words(w) => {
                write!(f, "{} (registers", self.value)?;
                for x in w {
                    write!(f, " {x:#06x}")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// The columns of the rows, resolved when the sink starts.
#[derive(Debug, Clone)]
struct Columns {
    /// Per point: its column.
    points: Vec<usize>,
    unit: Option<usize>,
}

/// A configured Modbus sink.
pub struct ModbusSink {
    name: String,
    transport: Transport,
    timeout: Duration,
    retries: u32,
    /// Units the sink may write to.
    units: Vec<u8>,
    unit_column: Option<String>,
    /// Sorted by table and address.
    points: Vec<Point>,
    coalesce: bool,
    allow_read_modify_write: bool,
    targets: Targets<Target, Outgoing>,
    columns: Option<Columns>,
    link: Option<Link>,
    /// Units that answered a mask write (function 22) with "illegal function".
    no_mask_write: BTreeSet<u8>,
    telemetry: Arc<SinkTelemetry>,
}

/// One request's worth of values.
struct Group {
    unit: u8,
    values: Vec<(Target, Outgoing)>,
}

impl ModbusSink {
    /// Reads and checks the sink's options.
    pub fn build(spec: &SinkSpec, o: &Options) -> Result<ModbusSink, PipelineError> {
        let transport = Transport::from_options(o)?;
        let units = o
            .parse_with(&SINK_UNIT_ID, parse_units)?
            .unwrap_or_else(|| vec![1]);
        let unit_column = o.text(&SINK_UNIT_COLUMN).map(str::to_string);
        if unit_column.is_none() && units.len() > 1 {
            return Err(o.error(
                "several unit ids: name the column that says which unit a row is for in unit_column",
            ));
        }
        let mut points = Vec::new();
        if let Some(e) = o.entry(&SINK_REGISTERS) {
            points.extend(register_map::parse_inline(&e.value).map_err(|m| o.value_error(e, &m))?);
        }
        if let Some(e) = o.entry(&SINK_REGISTER_MAP) {
            let base = Path::new(o.file()).parent().unwrap_or(Path::new("."));
            let found = register_map::load_file(&base.join(e.value.trim()))
                .map_err(|m| o.value_error(e, &m))?;
            points.extend(found);
        }
        if points.is_empty() {
            return Err(o.error(
                "no registers mapped: give 'registers' (e.g. 'speed = holding 100 uint16') or 'register_map'",
            ));
        }
        for p in &points {
            if matches!(p.table, Table::Input | Table::DiscreteInput) {
                return Err(o.error(format!(
                    "'{}' is mapped to the {} table, which is read-only: a sink writes coils and holding registers",
                    p.column, p.table
                )));
            }
            if points
                .iter()
                .filter(|q| q.column.eq_ignore_ascii_case(&p.column))
                .count()
                > 1
            {
                return Err(o.error(format!("'{}' is mapped twice", p.column)));
            }
        }
        points.sort_by_key(|p| (p.table, p.address, p.bit));
        let targets = Targets::new(Safety::from_options(o)?, Arc::clone(&spec.telemetry));
        Ok(ModbusSink {
            name: spec.name.clone(),
            transport,
            timeout: o.value(&TIMEOUT)?,
            retries: o.value::<u64>(&RETRIES)?.min(10) as u32,
            units,
            unit_column,
            points,
            coalesce: o.value(&SINK_COALESCE)?,
            allow_read_modify_write: o.value(&ALLOW_READ_MODIFY_WRITE)?,
            targets,
            columns: None,
            link: None,
            no_mask_write: BTreeSet::new(),
            telemetry: Arc::clone(&spec.telemetry),
        })
    }

    /// Where each point and the unit are among `schema`'s columns, checking their types.
    fn resolve(&self, schema: &SchemaRef) -> Result<Columns, String> {
        let mut points = Vec::new();
        for p in &self.points {
            let i = column_index(schema, &p.column).ok_or_else(|| {
                format!(
                    "the register map writes '{}', which is not among the inserted columns ({})",
                    p.column,
                    column_names(schema)
                )
            })?;
            let t = schema.field(i).data_type();
            let fits = match p.value_type {
                ValueType::Bool => t == &DataType::Boolean || t.is_integer(),
                ValueType::String(_) => is_text(t),
                _ => t.is_numeric() || t == &DataType::Boolean,
            };
            if !fits {
                return Err(format!(
                    "column '{}' is {t}, which cannot be written as {:?} ({} {})",
                    p.column, p.value_type, p.table, p.address
                ));
            }
            points.push(i);
        }
        let unit = match &self.unit_column {
            Some(c) => {
                let i = column_index(schema, c).ok_or_else(|| {
                    format!(
                        "unit_column '{c}' is not among the inserted columns ({})",
                        column_names(schema)
                    )
                })?;
                if !schema.field(i).data_type().is_integer() {
                    return Err(format!("unit_column '{c}' must be an integer column"));
                }
                Some(i)
            }
            None => None,
        };
        Ok(Columns { points, unit })
    }

    /// Point `point` of `unit` (`None`: the row names no unit the sink may write to).
    fn target(&self, unit: Option<u8>, point: usize) -> Target {
        let p = &self.points[point];
        let bit = p.bit.map(|b| format!(" bit {b}")).unwrap_or_default();
        let shown = unit.map_or_else(|| "?".to_string(), |u| u.to_string());
        Target {
            unit: unit.unwrap_or(0),
            point,
            label: format!("unit {shown} {} {}{bit} ({})", p.table, p.address, p.column).into(),
        }
    }

    /// Takes each row's values into the targets (refusing what cannot be written).
    fn take_rows(&mut self, batch: &RecordBatch) -> anyhow::Result<()> {
        let columns = match &self.columns {
            Some(c) => c.clone(),
            None => {
                let c = self
                    .resolve(&batch.schema())
                    .map_err(|e| anyhow::anyhow!(e))?;
                self.columns = Some(c.clone());
                c
            }
        };
        for row in 0..batch.num_rows() {
            let unit = match columns.unit {
                None => Ok(self.units[0]),
                Some(i) => row_unit(batch.column(i), row, &self.units),
            };
            for (point, &col) in columns.points.iter().enumerate() {
                let unit = match &unit {
                    Ok(u) => *u,
                    Err(why) => {
                        let target = self.target(None, point);
                        self.targets.refuse(&target, why);
                        continue;
                    }
                };
                let target = self.target(Some(unit), point);
                let Some(value) = value_at(batch.column(col), row) else {
                    self.targets.refuse(&target, "null");
                    continue;
                };
                match encode::encode(&self.points[point], &value) {
                    Ok(payload) => self.targets.offer(target, Outgoing { value, payload }),
                    Err(why) => self.targets.refuse(&target, why),
                }
            }
        }
        Ok(())
    }

    /// Sends what is due.
    async fn flush(&mut self) {
        let due = self.targets.due(Instant::now());
        if due.is_empty() {
            return;
        }
        if self.targets.safety().dry_run {
            let now = Instant::now();
            for (t, v) in due {
                self.targets.written(t, v, now);
            }
            return;
        }
        for group in self.groups(due) {
            self.send(group).await;
        }
    }

    /// Values in requests: with `coalesce`, neighbours of one unit and table share one.
    fn groups(&self, due: Vec<(Target, Outgoing)>) -> Vec<Group> {
        let mut groups: Vec<Group> = Vec::new();
        for (t, v) in due {
            let p = &self.points[t.point];
            if let Some(g) = groups.last_mut()
                && self.coalesce
                && p.bit.is_none()
                && g.unit == t.unit
                && self.joins(g, p)
            {
                g.values.push((t, v));
                continue;
            }
            groups.push(Group {
                unit: t.unit,
                values: vec![(t, v)],
            });
        }
        groups
    }

    /// `p` starts where group `g` ends, in the same table, within one request's limit.
    fn joins(&self, g: &Group, p: &Point) -> bool {
        let first = &self.points[g.values[0].0.point];
        let last = &self.points[g.values[g.values.len() - 1].0.point];
        if first.bit.is_some() || first.table != p.table || last.end() != u32::from(p.address) {
            return false;
        }
        let limit = if p.table.is_bits() {
            MAX_COILS
        } else {
            MAX_REGISTERS
        };
        (p.end() - u32::from(first.address)) as usize <= limit
    }

    /// The request that writes `g` (not a bit of a register: see [`Self::write_bit`]).
    fn request(&self, g: &Group) -> Request<'static> {
        let first = &self.points[g.values[0].0.point];
        let mut words = Vec::new();
        let mut bits = Vec::new();
        for (_, v) in &g.values {
            match &v.payload {
                Payload::Words(w) => words.extend_from_slice(w),
                Payload::Bit(b) => bits.push(*b),
            }
        }
        let a = first.address;
        match first.table {
            Table::Coil if bits.len() == 1 => Request::WriteSingleCoil(a, bits[0]),
            Table::Coil => Request::WriteMultipleCoils(a, bits.into()),
            _ if words.len() == 1 => Request::WriteSingleRegister(a, words[0]),
            _ => Request::WriteMultipleRegisters(a, words.into()),
        }
    }

    /// Writes one group and records the outcome of each of its values.
    async fn send(&mut self, g: Group) {
        let result = self.write(&g).await;
        let now = Instant::now();
        match result {
            Ok(()) => {
                if self.targets.safety().verify {
                    self.verify(&g).await;
                }
                for (t, v) in g.values {
                    self.targets.written(t, v, now);
                }
            }
            Err(f) => {
                for (t, v) in g.values {
                    self.targets.failed(t, v, f.kind, &f.detail);
                }
            }
        }
    }

    async fn write(&mut self, g: &Group) -> Result<(), Failure> {
        let first = &self.points[g.values[0].0.point];
        if let (Some(bit), Payload::Bit(on)) = (first.bit, &g.values[0].1.payload) {
            return self.write_bit(g.unit, first.address, bit, *on).await;
        }
        let req = self.request(g);
        self.call(g.unit, &req).await.map(drop)
    }

    /// One bit of a holding register: mask write, or where the device has none and it is
    /// allowed, read, change the bit and write (not atomic: another writer may interleave).
    async fn write_bit(
        &mut self,
        unit: u8,
        address: u16,
        bit: u8,
        on: bool,
    ) -> Result<(), Failure> {
        let (and, or) = (!(1u16 << bit), u16::from(on) << bit);
        if !self.no_mask_write.contains(&unit) {
            match self
                .call(unit, &Request::MaskWriteRegister(address, and, or))
                .await
            {
                Err(f) if f.kind == "illegal_function" => {
                    tracing::warn!(sink = %self.name, unit, "the device has no mask write (function 22)");
                    self.no_mask_write.insert(unit);
                }
                other => return other.map(drop),
            }
        }
        if !self.allow_read_modify_write {
            return Err(Failure {
                kind: "mask_write_unsupported",
                detail: "the device has no mask write (function 22); allow_read_modify_write = 'true' reads, changes and writes the register instead".into(),
            });
        }
        let current = self.read_registers(unit, address, 1).await?;
        self.call(
            unit,
            &Request::WriteSingleRegister(address, current[0] & and | or),
        )
        .await
        .map(drop)
    }

    async fn read_registers(
        &mut self,
        unit: u8,
        address: u16,
        n: u16,
    ) -> Result<Vec<u16>, Failure> {
        match self
            .call(unit, &Request::ReadHoldingRegisters(address, n))
            .await?
        {
            Response::ReadHoldingRegisters(w) if w.len() >= usize::from(n) => Ok(w),
            _ => Err(Failure {
                kind: "bad_response",
                detail: "the read back did not return the registers".into(),
            }),
        }
    }

    /// Reads the group back and counts values that differ.
    async fn verify(&mut self, g: &Group) {
        for (t, v) in &g.values {
            let p = self.points[t.point].clone();
            let found = match (&v.payload, p.bit) {
                (Payload::Bit(b), Some(bit)) => self
                    .read_registers(g.unit, p.address, 1)
                    .await
                    .map(|w| (w[0] >> bit & 1 == 1) == *b),
                (Payload::Bit(b), None) => {
                    match self.call(g.unit, &Request::ReadCoils(p.address, 1)).await {
                        Ok(Response::ReadCoils(c)) => Ok(c.first() == Some(b)),
                        Ok(_) => Ok(false),
                        Err(e) => Err(e),
                    }
                }
                (Payload::Words(w), _) => self
                    .read_registers(g.unit, p.address, p.len())
                    .await
                    .map(|r| r[..w.len()] == w[..]),
            };
            match found {
                Ok(true) => {}
                Ok(false) => self.targets.mismatch(t, "another value"),
                Err(e) => self
                    .targets
                    .mismatch(t, format!("no answer ({})", e.detail)),
            }
        }
    }

    async fn call(&mut self, unit: u8, req: &Request<'static>) -> Result<Response, Failure> {
        let link = self.link.get_or_insert_with(|| {
            Link::new(
                self.transport.clone(),
                self.timeout,
                Owner::Sink(Arc::clone(&self.telemetry)),
            )
        });
        request::call(link, unit, req, self.timeout, self.retries).await
    }
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// The unit of a row: one of the allowed units.
fn row_unit(col: &ArrayRef, row: usize, allowed: &[u8]) -> Result<u8, String> {
    let unit = match value_at(col, row) {
        Some(Value::Int(u)) => u8::try_from(u).ok(),
        Some(Value::UInt(u)) => u8::try_from(u).ok(),
        _ => None,
    };
    match unit {
        Some(u) if allowed.contains(&u) => Ok(u),
        Some(u) => Err(format!(
            "unit {u} is not among the sink's unit_id ({allowed:?})"
        )),
        None => Err("the row's unit is null or not a unit id".into()),
    }
}

/// Row `row` of `col` as a value (`None`: null).
fn value_at(col: &ArrayRef, row: usize) -> Option<Value> {
    use arrow::datatypes::*;
    if col.is_null(row) {
        return None;
    }
    Some(match col.data_type() {
        DataType::Boolean => Value::Bool(col.as_boolean().value(row)),
        DataType::Int8 => Value::Int(col.as_primitive::<Int8Type>().value(row).into()),
        DataType::Int16 => Value::Int(col.as_primitive::<Int16Type>().value(row).into()),
        DataType::Int32 => Value::Int(col.as_primitive::<Int32Type>().value(row).into()),
        DataType::Int64 => Value::Int(col.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 => Value::Int(col.as_primitive::<UInt8Type>().value(row).into()),
        DataType::UInt16 => Value::Int(col.as_primitive::<UInt16Type>().value(row).into()),
        DataType::UInt32 => Value::Int(col.as_primitive::<UInt32Type>().value(row).into()),
        DataType::UInt64 => Value::UInt(col.as_primitive::<UInt64Type>().value(row)),
        DataType::Float32 => Value::Float(col.as_primitive::<Float32Type>().value(row).into()),
        DataType::Float64 => Value::Float(col.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => Value::Text(col.as_string::<i32>().value(row).to_string()),
        DataType::LargeUtf8 => Value::Text(col.as_string::<i64>().value(row).to_string()),
        DataType::Utf8View => Value::Text(col.as_string_view().value(row).to_string()),
        _ => {
            let x = arrow::compute::cast(&col.slice(row, 1), &DataType::Float64).ok()?;
            Value::Float(x.as_primitive::<Float64Type>().value(0))
        }
    })
}

#[async_trait]
impl Sink for ModbusSink {
    fn check_columns(&self, columns: &SchemaRef) -> Result<(), String> {
        self.resolve(columns).map(drop)
    }

    fn delivery(&self) -> &'static str {
        "at most once per value, latest wins"
    }

    async fn start(&mut self, start: SinkStart) -> anyhow::Result<()> {
        self.targets.set_pipelines(&start.inputs);
        if start.no_writes {
            self.targets.forbid_writes();
        }
        if let Some(schema) = &start.schema {
            self.columns = Some(self.resolve(schema).map_err(|e| anyhow::anyhow!(e))?);
        }
        let s = self.targets.safety();
        tracing::info!(sink = %self.name, device = %self.transport, units = ?self.units,
            points = self.points.len(), dry_run = s.dry_run, no_writes = start.no_writes,
            write_on_change = s.write_on_change, min_interval = ?s.min_interval, verify = s.verify,
            "modbus sink ready{}", if s.dry_run { " (dry run: nothing is written)" } else { "" });
        Ok(())
    }

    async fn write(&mut self, batch: RecordBatch) -> anyhow::Result<()> {
        self.take_rows(&batch)?;
        self.flush().await;
        Ok(())
    }

    async fn tick(&mut self) -> anyhow::Result<()> {
        self.flush().await;
        Ok(())
    }

    async fn close(&mut self, _deadline: Instant) -> anyhow::Result<()> {
        self.flush().await;
        self.targets.abandon_waiting();
        Ok(())
    }
}
