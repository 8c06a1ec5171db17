//! `connector = 'modbus'` as a source: polls every unit at `interval` with the planned
//! reads and turns each unit's answers into one row.

use std::path::Path;
use std::time::Duration;

use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use tokio::time::{Instant, MissedTickBehavior};
use weir_engine::PipelineError;
use weir_engine::connector::{Source, SourceOutput, SourceSpec};
use weir_engine::observe::telemetry::SourceTelemetry;
use weir_engine::parse::options::OptionSpec;
use weir_engine::parse::{OptionEntry, Options};

use super::decode::{self, Reading};
use super::link::Link;
use super::plan::{Read, plan};
use super::register_map::{self, Point};
use super::request::{self, Data};
use super::settings::{
    BATCH_LATENCY, COALESCE, INTERVAL, MAX_GAP, REGISTER_MAP, REGISTERS, RETRIES, TIME_COLUMN,
    TIMEOUT, TIMESTAMP_UNIT, UNIT_COLUMN, UNIT_ID,
};
use super::telemetry::POLLS;
use super::transport::Transport;
use crate::columns::{ColumnBuffer, EpochUnit, Number, column_index, supported};
use crate::owner::Owner;
use weir_engine::clock::now_nanos;

/// Rows sent in one batch at most.
const BATCH_ROWS: usize = 1000;

/// A configured Modbus source.
pub struct ModbusSource {
    name: String,
    transport: Transport,
    units: Vec<u8>,
    interval: Duration,
    /// Rows of fast polls are sent together, at most this late.
    batch_latency: Duration,
    timeout: Duration,
    retries: u32,
    points: Vec<Point>,
    /// Column index of each point.
    point_columns: Vec<usize>,
    reads: Vec<Read>,
    schema: SchemaRef,
    time_column: Option<usize>,
    unit_column: Option<usize>,
    epoch_unit: EpochUnit,
}

/// Unit ids: `1`, `1,2,5` or a range such as `1-4`.
pub(super) fn parse_units(v: &str) -> Result<Vec<u8>, String> {
    let mut units = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let id = |s: &str| {
            s.trim()
                .parse::<u8>()
                .map_err(|_| format!("unit id '{s}': expected 0 to 255"))
        };
        match item.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (id(a)?, id(b)?);
                if a > b {
                    return Err(format!("unit range '{item}' runs backwards"));
                }
                units.extend(a..=b);
            }
            None => units.push(id(item)?),
        }
    }
    if units.is_empty() {
        return Err("no unit id given".into());
    }
    units.sort_unstable();
    units.dedup();
    Ok(units)
}

/// The mapped points, each with the option entry it came from (for errors).
fn register_points(o: &Options) -> Result<Vec<(Point, &OptionEntry)>, PipelineError> {
    let mut points = Vec::new();
    if let Some(e) = o.entry(&REGISTERS) {
        let found = register_map::parse_inline(&e.value).map_err(|m| o.value_error(e, &m))?;
        points.extend(found.into_iter().map(|p| (p, e)));
    }
    if let Some(e) = o.entry(&REGISTER_MAP) {
        let base = Path::new(o.file()).parent().unwrap_or(Path::new("."));
        let path = base.join(e.value.trim());
        let found = register_map::load_file(&path).map_err(|m| o.value_error(e, &m))?;
        points.extend(found.into_iter().map(|p| (p, e)));
    }
    if points.is_empty() {
        return Err(o.error(
            "no registers mapped: give 'registers' (e.g. 'temp = holding 0 int16') or 'register_map' (a YAML or JSON file)",
        ));
    }
    Ok(points)
}

/// Which columns a source fills: a register each, the poll's time and the unit id.
struct ColumnPlan {
    point_columns: Vec<usize>,
    time_column: Option<usize>,
    unit_column: Option<usize>,
}

impl ColumnPlan {
    /// Puts every point, the time and the unit into a column of `schema`, checking that
    /// each column is filled once and can be.
    fn new(
        o: &Options,
        spec: &SourceSpec,
        points: &[(Point, &OptionEntry)],
    ) -> Result<Self, PipelineError> {
        let schema = &spec.schema;
        let mut filled = vec![false; schema.fields().len()];
        let mut point_columns = Vec::new();
        for (p, origin) in points {
            let i = column_index(schema, &p.column).ok_or_else(|| {
                o.value_error(
                    origin,
                    &format!("'{}', which is not a column of this source", p.column),
                )
            })?;
            if filled[i] {
                return Err(o.value_error(origin, &format!("'{}' is mapped twice", p.column)));
            }
            filled[i] = true;
            point_columns.push(i);
        }
        let mut special = |spec: &OptionSpec, default: Option<usize>| -> Result<_, PipelineError> {
            let i = match o.text(spec) {
                Some(c) => Some(column_index(schema, c).ok_or_else(|| {
                    o.error(format!(
                        "{} '{c}' is not a column of this source",
                        spec.name
                    ))
                })?),
                None => default.filter(|i| !filled[*i]),
            };
            if let Some(i) = i {
                if filled[i] {
                    return Err(o.error(format!(
                        "{} '{}' is also in the register map",
                        spec.name,
                        schema.field(i).name()
                    )));
                }
                filled[i] = true;
            }
            Ok(i)
        };
        let time_column = special(&TIME_COLUMN, spec.event_time)?;
        let unit_column = special(&UNIT_COLUMN, None)?;
        if let Some(i) = time_column
            && !matches!(schema.field(i).data_type(), DataType::Timestamp(..))
        {
            return Err(o.error(format!(
                "time_column '{}' must be a TIMESTAMP",
                schema.field(i).name()
            )));
        }
        for (i, f) in schema.fields().iter().enumerate() {
            if !supported(f.data_type()) {
                return Err(o.error(format!(
                    "column '{}' is {}, which the modbus source cannot fill (use integer, float, boolean, text or timestamp columns)",
                    f.name(),
                    f.data_type()
                )));
            }
            if !filled[i] {
                return Err(o.error(format!(
                    "column '{}' is not filled: map it to a register, or name it in time_column or unit_column",
                    f.name()
                )));
            }
        }
        Ok(Self {
            point_columns,
            time_column,
            unit_column,
        })
    }
}

impl ModbusSource {
    /// Reads and checks the source's options against its declared columns.
    pub fn build(spec: &SourceSpec, o: &Options) -> Result<ModbusSource, PipelineError> {
        let transport = Transport::from_options(o)?;
        let units = o
            .parse_with(&UNIT_ID, parse_units)?
            .unwrap_or_else(|| vec![1]);
        let retries = o.value::<u64>(&RETRIES)?.min(10) as u32;
        let max_gap = o.value::<u64>(&MAX_GAP)?.min(2000) as u16;
        let coalesce: bool = o.value(&COALESCE)?;
        let epoch_unit = o
            .parse_with(&TIMESTAMP_UNIT, |v| {
                EpochUnit::parse(v.trim()).ok_or_else(|| "expected s, ms, us or ns".to_string())
            })?
            .unwrap_or(EpochUnit::Seconds);
        let mapped = register_points(o)?;
        let columns = ColumnPlan::new(o, spec, &mapped)?;
        let points: Vec<Point> = mapped.into_iter().map(|(p, _)| p).collect();
        let reads = plan(&points, coalesce.then_some(max_gap));
        Ok(ModbusSource {
            name: spec.name.clone(),
            transport,
            units,
            interval: o.value(&INTERVAL)?,
            batch_latency: o.value(&BATCH_LATENCY)?,
            timeout: o.value(&TIMEOUT)?,
            retries,
            points,
            point_columns: columns.point_columns,
            reads,
            schema: spec.schema.clone(),
            time_column: columns.time_column,
            unit_column: columns.unit_column,
            epoch_unit,
        })
    }
}

/// The rows of one poll being built.
struct Rows {
    columns: Vec<ColumnBuffer>,
    rows: usize,
}

impl ModbusSource {
    fn empty_rows(&self) -> Rows {
        Rows {
            columns: self
                .schema
                .fields()
                .iter()
                .map(|f| ColumnBuffer::new(f.data_type()).expect("checked at build"))
                .collect(),
            rows: 0,
        }
    }

    /// Polls every unit; each unit that answered at least one read adds a row (points
    /// whose read failed are null). Once the device cannot be reached the poll ends, keeping
    /// what was read. A unit that does not answer (a timeout) is left for the rest of the
    /// poll and backed off on its own schedule, so that it never holds the others back.
    async fn poll(
        &self,
        link: &mut Link,
        telemetry: &SourceTelemetry,
        rows: &mut Rows,
        health: &mut [UnitHealth],
    ) {
        let mut reachable = true;
        for (&unit, health) in self.units.iter().zip(health.iter_mut()) {
            if !reachable {
                break;
            }
            if let Some(until) = health.backing_off(Instant::now()) {
                telemetry.skip(
                    "unit_backoff",
                    &format!("unit {unit}"),
                    format!(
                        "not polled for {:?} more: it did not answer {} time(s) in a row",
                        until.saturating_duration_since(Instant::now()),
                        health.failures
                    ),
                );
                continue;
            }
            // a unit that did not answer last time is probed without retries
            let retries = if health.failures > 0 { 0 } else { self.retries };
            let mut readings: Vec<Option<Reading>> = vec![None; self.points.len()];
            let mut arrived = None;
            for read in &self.reads {
                let context = || {
                    format!(
                        "unit {unit} {} {}..{}",
                        read.table,
                        read.start,
                        read.start as u32 + read.count as u32 - 1
                    )
                };
                match request::execute(link, unit, read, self.timeout, retries).await {
                    Ok(data) => {
                        arrived.get_or_insert_with(now_nanos);
                        health.answered();
                        self.decode(read, &data, &mut readings, telemetry, &context());
                    }
                    Err(f) if f.kind == "not_connected" => {
                        // counted once per poll, not per read
                        telemetry.skip(f.kind, &self.transport.to_string(), f.detail);
                        reachable = false;
                        break;
                    }
                    Err(f) if f.kind == "timeout" => {
                        telemetry.skip(f.kind, &context(), f.detail);
                        // its other reads would time out too: the next unit goes on
                        health.timed_out(Instant::now(), self.interval);
                        break;
                    }
                    Err(f) => telemetry.skip(f.kind, &context(), f.detail),
                }
            }
            if let Some(at) = arrived {
                self.push_row(unit, at, readings, telemetry, rows);
            }
        }
    }

    fn decode(
        &self,
        read: &Read,
        data: &Data,
        readings: &mut [Option<Reading>],
        telemetry: &SourceTelemetry,
        context: &str,
    ) {
        for &p in &read.points {
            let point = &self.points[p];
            let at = (point.address - read.start) as usize;
            let r = match data {
                Data::Bits(bits) => Ok(Reading::Bool(bits[at])),
                Data::Words(words) => {
                    decode::registers(point, &words[at..at + point.len() as usize])
                }
            };
            match r {
                Ok(r) => readings[p] = Some(r),
                Err(e) => telemetry.skip("conversion", context, format!("{}: {e}", point.column)),
            }
        }
    }

    fn push_row(
        &self,
        unit: u8,
        at: i64,
        readings: Vec<Option<Reading>>,
        telemetry: &SourceTelemetry,
        rows: &mut Rows,
    ) {
        let cols = &mut rows.columns;
        for ((reading, point), &c) in readings
            .into_iter()
            .zip(&self.points)
            .zip(&self.point_columns)
        {
            let pushed = match reading {
                None => {
                    cols[c].push_null();
                    Ok(())
                }
                Some(Reading::Bool(b)) => cols[c].push_bool(b),
                Some(Reading::Number(n)) => cols[c].push_number(n, self.epoch_unit),
                Some(Reading::Text(t)) => cols[c].push_text(&t, self.epoch_unit),
            };
            if let Err(e) = pushed {
                telemetry.skip(
                    "conversion",
                    &format!("unit {unit} {} {}", point.table, point.address),
                    format!("{}: {e}", point.column),
                );
                cols[c].push_null();
            }
        }
        if let Some(c) = self.time_column {
            cols[c].push_time(at);
        }
        if let Some(c) = self.unit_column
            && cols[c]
                .push_number(Number::Int(unit.into()), self.epoch_unit)
                .is_err()
        {
            cols[c].push_null();
        }
        rows.rows += 1;
    }

    fn finish(&self, rows: &mut Rows) -> anyhow::Result<RecordBatch> {
        let arrays = rows
            .columns
            .iter_mut()
            .map(ColumnBuffer::finish)
            .collect::<Result<Vec<_>, _>>()?;
        rows.rows = 0;
        Ok(RecordBatch::try_new(self.schema.clone(), arrays)?)
    }
}

/// Longest a unit that does not answer is left out of the polls.
const UNIT_BACKOFF_LONGEST: Duration = Duration::from_secs(30);

/// Whether a unit answers, and until when it is left out of the polls if it does not.
#[derive(Debug, Clone, Default)]
struct UnitHealth {
    /// Polls in a row in which it timed out.
    failures: u32,
    /// Left out of the polls until then.
    skip_until: Option<Instant>,
}

impl UnitHealth {
    /// Until when the unit is still left out, if it is.
    fn backing_off(&self, now: Instant) -> Option<Instant> {
        self.skip_until.filter(|until| *until > now)
    }

    /// It answered: polled at every interval again.
    fn answered(&mut self) {
        self.failures = 0;
        self.skip_until = None;
    }

    /// It timed out at `now`: left out for twice the interval (at least 200 ms), doubling
    /// with each poll it times out in, up to 30 s.
    fn timed_out(&mut self, now: Instant, interval: Duration) {
        self.failures = self.failures.saturating_add(1);
        let base = interval.max(Duration::from_millis(100));
        let wait = base
            .saturating_mul(1 << self.failures.min(16))
            .min(UNIT_BACKOFF_LONGEST);
        self.skip_until = Some(now + wait);
    }
}

#[async_trait]
impl Source for ModbusSource {
    fn is_bounded(&self) -> bool {
        false
    }

    async fn run(self: Box<Self>, mut out: SourceOutput) -> anyhow::Result<()> {
        let telemetry = out.telemetry().clone();
        let mut link = Link::new(
            self.transport.clone(),
            self.timeout,
            Owner::Source(telemetry.clone()),
        );
        tracing::info!(source = %self.name, device = %self.transport, units = ?self.units,
            reads_per_unit = self.reads.len(), interval = ?self.interval, "modbus polling");
        // a zero interval polls back to back (tokio's timer cannot wait less than 1 ms)
        let mut ticker = (!self.interval.is_zero()).then(|| {
            let mut t = tokio::time::interval(self.interval);
            t.set_missed_tick_behavior(MissedTickBehavior::Delay);
            t
        });
        let polls = POLLS.counter_with(&[&self.name]);
        let mut health = vec![UnitHealth::default(); self.units.len()];
        let mut rows = self.empty_rows();
        let mut first_unsent: Option<Instant> = None;
        loop {
            if let Some(t) = link.next_attempt() {
                // down: no poll before the next connection attempt
                tokio::select! {
                    biased;
                    _ = out.stopped() => break,
                    _ = tokio::time::sleep_until(t) => {}
                }
            }
            tokio::select! {
                biased;
                _ = out.stopped() => break,
                _ = async {
                    match ticker.as_mut() {
                        Some(t) => {
                            t.tick().await;
                        }
                        None => tokio::task::yield_now().await,
                    }
                } => {}
            }
            self.poll(&mut link, &telemetry, &mut rows, &mut health)
                .await;
            polls.increment(1);
            if rows.rows == 0 {
                continue;
            }
            // rows wait for more polls only while the next poll still comes in time
            let since = *first_unsent.get_or_insert_with(Instant::now);
            if rows.rows < BATCH_ROWS
                && since.elapsed() + self.interval < self.batch_latency
                && !out.is_stopped()
            {
                continue;
            }
            first_unsent = None;
            let batch = self.finish(&mut rows)?;
            if out.is_stopped() {
                out.send_last(batch, Default::default()).await;
                break;
            }
            if out.send(batch).await.is_err() {
                break;
            }
        }
        if rows.rows > 0 {
            out.send_last(self.finish(&mut rows)?, Default::default())
                .await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_units;

    #[test]
    fn unit_lists() {
        assert_eq!(parse_units("1").unwrap(), vec![1]);
        assert_eq!(parse_units("3, 1-2,2").unwrap(), vec![1, 2, 3]);
        assert!(parse_units("2-1").is_err());
        assert!(parse_units("256").is_err());
        assert!(parse_units(" ").is_err());
    }
}
