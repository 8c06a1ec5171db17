//! `connector = 'generator'`: synthetic plant telemetry — machines × sensors sampled at a
//! fixed event-time interval, deterministic for a seed, with injectable faults.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, StringBuilder, TimestampNanosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand_distr::Normal;
use weir_engine::PipelineError;
use weir_engine::connector::{Source, SourceFactory, SourceOutput, SourceSpec};
use weir_engine::parse::Options;

use crate::conform::conform;
use crate::signals::{Fault, SensorKind, sample};
use weir_engine::clock::now_nanos;

/// The columns the generator can fill; a source declares any subset, by name.
pub fn natural_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("line", DataType::Utf8, false),
        Field::new("machine", DataType::Utf8, false),
        Field::new("sensor", DataType::Utf8, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), false),
        Field::new("value", DataType::Float64, false),
        Field::new("seq", DataType::Int64, false),
    ]))
}

/// Builds generator sources.
pub struct GeneratorFactory;

/// Generator settings.
#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    /// Number of machines (`M1`..`Mn`).
    pub machines: usize,
    /// Sensor names; the prefix selects the signal (`vib`, `temp`, `current`).
    pub sensors: Vec<String>,
    /// Number of production lines (`L1`..); machine i is on line i mod lines.
    pub lines: usize,
    /// Rows per second of wall time, or `None` for as fast as possible.
    pub rate: Option<f64>,
    /// Event-time step between two samples of one sensor (ns).
    pub interval: i64,
    /// Stop after this many rows.
    pub limit: Option<u64>,
    /// Stop when event time passes start + this (ns).
    pub duration: Option<i64>,
    /// Random seed.
    pub seed: u64,
    /// Event time of the first sample (ns since the epoch).
    pub start: i64,
    /// Faults per machine name.
    pub faults: HashMap<String, Vec<Fault>>,
    /// Largest random delay of an event time (ns): rows arrive out of order by up to this.
    pub disorder: i64,
    /// Rows per batch.
    pub batch_rows: usize,
}

fn nanos(d: Duration) -> i64 {
    d.as_nanos().min(i64::MAX as u128) as i64
}

impl SourceFactory for GeneratorFactory {
    fn name(&self) -> &'static str {
        "generator"
    }

    fn description(&self) -> &'static str {
        "synthetic plant telemetry (machines × sensors, faults, deterministic seed)"
    }

    fn build(&self, spec: &SourceSpec, o: &Options) -> Result<Box<dyn Source>, PipelineError> {
        let natural = natural_schema();
        for f in spec.schema.fields() {
            let Ok(n) = natural.field_with_name(f.name()) else {
                return Err(o.error(format!(
                    "the generator cannot fill column '{}' (it provides: line, machine, sensor, ts, value, seq)",
                    f.name()
                )));
            };
            if !arrow::compute::can_cast_types(n.data_type(), f.data_type()) {
                return Err(o.error(format!(
                    "type mismatch: generator column '{}' is {} and cannot become {}",
                    f.name(),
                    n.data_type(),
                    f.data_type()
                )));
            }
        }
        let machines = o.u64("machines")?.unwrap_or(4).max(1) as usize;
        let lines = o.u64("lines")?.unwrap_or(1).max(1) as usize;
        let sensors: Vec<String> = o
            .get("sensors")
            .unwrap_or("vib_x,vib_y,temp,current")
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if sensors.is_empty() {
            return Err(o.error("option 'sensors' lists no sensor"));
        }
        let groups = (machines * sensors.len()) as f64;
        let rate = o.parsed("rate", |v| {
            if v.trim().eq_ignore_ascii_case("max") {
                Ok(None)
            } else {
                v.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|r| *r > 0.0 && r.is_finite())
                    .map(Some)
                    .ok_or_else(|| {
                        "expected rows per second (a positive number) or 'max'".to_string()
                    })
            }
        })?;
        let rate = rate.unwrap_or(Some(1000.0));
        let interval = match o.duration("interval")? {
            Some(d) if d.is_zero() => return Err(o.error("option 'interval' must be positive")),
            Some(d) => nanos(d),
            None => match rate {
                Some(r) => ((groups / r) * 1e9).max(1.0) as i64,
                None => 10_000_000,
            },
        };
        let limit = o.u64("limit")?;
        let duration = o.duration("duration")?.map(nanos);
        let seed = o.u64("seed")?.unwrap_or(42);
        let start = o
            .parsed("start", |v| {
                humantime::parse_rfc3339_weak(v.trim())
                    .map(|t| nanos(t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default()))
                    .map_err(|e| format!("expected a time such as 2026-01-01T00:00:00Z ({e})"))
            })?
            .unwrap_or_else(now_nanos);
        let mut faults: HashMap<String, Vec<Fault>> = HashMap::new();
        if let Some(list) = o.entry("faults") {
            for item in list.value.split(',').filter(|s| !s.trim().is_empty()) {
                let (m, f) = item.split_once(':').unwrap_or((item, ""));
                let Some(fault) = Fault::parse(f) else {
                    return Err(o.value_error(list, &format!("'{item}': expected MACHINE:FAULT with FAULT one of bearing, overheat, overload")));
                };
                faults.entry(m.trim().to_string()).or_default().push(fault);
            }
        }
        let disorder = o.duration("disorder")?.map(nanos).unwrap_or(0);
        let batch_rows = o
            .u64("batch_rows")?
            .unwrap_or(if rate.is_none() { 8192 } else { 1024 })
            .clamp(1, 1 << 20) as usize;
        let cfg = GeneratorConfig {
            machines,
            sensors,
            lines,
            rate,
            interval,
            limit,
            duration,
            seed,
            start,
            faults,
            disorder,
            batch_rows,
        };
        Ok(Box::new(Generator {
            cfg,
            schema: Arc::clone(&spec.schema),
        }))
    }
}

/// A running generator.
pub struct Generator {
    cfg: GeneratorConfig,
    schema: SchemaRef,
}

/// Produces the rows of a generator, batch by batch, without pacing.
pub struct RowMaker {
    cfg: GeneratorConfig,
    rng: SmallRng,
    noise: Normal<f64>,
    machine_names: Vec<String>,
    line_names: Vec<String>,
    kinds: Vec<SensorKind>,
    machine_faults: Vec<Vec<Fault>>,
    tick: u64,
    slot: usize,
    seq: u64,
}

impl RowMaker {
    /// A row maker for `cfg`.
    pub fn new(cfg: GeneratorConfig) -> Self {
        let machine_names: Vec<String> = (1..=cfg.machines).map(|i| format!("M{i}")).collect();
        let line_names = (0..cfg.machines)
            .map(|i| format!("L{}", i % cfg.lines + 1))
            .collect();
        let machine_faults = machine_names
            .iter()
            .map(|m| cfg.faults.get(m).cloned().unwrap_or_default())
            .collect();
        Self {
            rng: SmallRng::seed_from_u64(cfg.seed),
            noise: Normal::new(0.0, 1.0).expect("unit normal"),
            kinds: cfg.sensors.iter().map(|s| SensorKind::of(s)).collect(),
            machine_names,
            line_names,
            machine_faults,
            tick: 0,
            slot: 0,
            seq: 0,
            cfg,
        }
    }

    fn done(&self) -> bool {
        let by_limit = self.cfg.limit.is_some_and(|l| self.seq >= l);
        let by_time = self
            .cfg
            .duration
            .is_some_and(|d| (self.tick as i64).saturating_mul(self.cfg.interval) >= d);
        by_limit || by_time
    }

    /// The next batch in the generator's own column layout, or `None` when done.
    pub fn next_batch(&mut self) -> Option<RecordBatch> {
        use rand::Rng;
        let n = self.cfg.batch_rows;
        let mut line = StringBuilder::with_capacity(n, n * 2);
        let mut machine = StringBuilder::with_capacity(n, n * 3);
        let mut sensor = StringBuilder::with_capacity(n, n * 6);
        let mut ts = TimestampNanosecondBuilder::with_capacity(n);
        let mut value = Float64Builder::with_capacity(n);
        let mut seq = Int64Builder::with_capacity(n);
        let per_tick = self.cfg.machines * self.kinds.len();
        let mut rows = 0;
        while rows < n && !self.done() {
            let m = self.slot / self.kinds.len();
            let s = self.slot % self.kinds.len();
            let offset = (self.tick as i64).saturating_mul(self.cfg.interval);
            let t_secs = offset as f64 / 1e9;
            let v = sample(
                self.kinds[s],
                t_secs,
                self.tick,
                &self.machine_faults[m],
                &mut self.rng,
                &self.noise,
            );
            let jitter = if self.cfg.disorder > 0 {
                self.rng.random_range(0..=self.cfg.disorder)
            } else {
                0
            };
            line.append_value(&self.line_names[m]);
            machine.append_value(&self.machine_names[m]);
            sensor.append_value(&self.cfg.sensors[s]);
            ts.append_value(self.cfg.start.saturating_add(offset).saturating_sub(jitter));
            value.append_value(v);
            seq.append_value(self.seq as i64);
            self.seq += 1;
            rows += 1;
            self.slot += 1;
            if self.slot == per_tick {
                self.slot = 0;
                self.tick += 1;
            }
        }
        if rows == 0 {
            return None;
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(line.finish()),
            Arc::new(machine.finish()),
            Arc::new(sensor.finish()),
            Arc::new(ts.finish()),
            Arc::new(value.finish()),
            Arc::new(seq.finish()),
        ];
        RecordBatch::try_new(natural_schema(), cols).ok()
    }
}

#[async_trait]
impl Source for Generator {
    fn is_bounded(&self) -> bool {
        self.cfg.limit.is_some() || self.cfg.duration.is_some()
    }

    async fn run(self: Box<Self>, out: SourceOutput) -> anyhow::Result<()> {
        let rate = self.cfg.rate;
        let mut maker = RowMaker::new(self.cfg);
        let began = tokio::time::Instant::now();
        let mut sent: u64 = 0;
        while let Some(batch) = maker.next_batch() {
            if let Some(r) = rate {
                let due = began + Duration::from_secs_f64(sent as f64 / r);
                tokio::time::sleep_until(due).await;
            }
            sent += batch.num_rows() as u64;
            let batch = conform(&batch, &self.schema)?;
            if out.send(batch).await.is_err() {
                break;
            }
        }
        Ok(())
    }
}
