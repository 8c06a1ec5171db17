//! The generator source: rows made by [`RowMaker`], paced to the configured rate.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, StringBuilder, TimestampNanosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use rand::SeedableRng;
use rand_distr::Normal;
use rand_xoshiro::Xoshiro256PlusPlus;
use weir_engine::PipelineError;
use weir_engine::connector::{Progress, Source, SourceOutput, SourceSpec, SourceStart};
use weir_engine::parse::Options;

use super::settings::Settings;
use super::signals::{Fault, SensorKind, sample};
use crate::conform::conform;

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

/// Checks that the generator can fill every declared column.
pub fn check_columns(spec: &SourceSpec, o: &Options) -> Result<(), PipelineError> {
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
    Ok(())
}

/// A running generator.
pub struct Generator {
    cfg: Settings,
    schema: SchemaRef,
    /// Rows made before a checkpoint's position: skipped at start.
    resume_rows: u64,
}

impl Generator {
    /// A generator filling the columns of `spec` as `settings` say.
    pub fn new(spec: &SourceSpec, settings: Settings) -> Self {
        Self {
            cfg: settings,
            schema: Arc::clone(&spec.schema),
            resume_rows: 0,
        }
    }
}

/// The generator's position: rows made so far.
fn position(rows: u64) -> serde_json::Value {
    serde_json::json!({ "rows": rows })
}

/// Produces the rows of a generator, batch by batch, without pacing.
pub struct RowMaker {
    cfg: Settings,
    /// Xoshiro256++ by name, not rand's `SmallRng`, which is another algorithm on 32-bit
    /// targets: the same seed makes the same rows on amd64, arm64 and armv7.
    rng: Xoshiro256PlusPlus,
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
    pub fn new(cfg: Settings) -> Self {
        let machine_names: Vec<String> = (1..=cfg.machines).map(|i| format!("M{i}")).collect();
        let line_names = (0..cfg.machines)
            .map(|i| format!("L{}", i % cfg.lines + 1))
            .collect();
        let machine_faults = machine_names
            .iter()
            .map(|m| cfg.faults.get(m).cloned().unwrap_or_default())
            .collect();
        Self {
            rng: Xoshiro256PlusPlus::seed_from_u64(cfg.seed),
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

    /// Rows made so far.
    pub fn rows_made(&self) -> u64 {
        self.seq
    }

    /// Makes and drops `rows` rows: the rows made next are those an uninterrupted run makes
    /// after them.
    pub fn skip(&mut self, mut rows: u64) {
        while rows > 0 {
            let n = rows.min(1 << 16) as usize;
            match self.next_batch(n) {
                Some(b) => rows -= b.num_rows() as u64,
                None => return,
            }
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

    /// The next batch (at most `n` rows) in the generator's own column layout, or `None`
    /// when done.
    pub fn next_batch(&mut self, n: usize) -> Option<RecordBatch> {
        use rand::Rng;
        let mut line = StringBuilder::with_capacity(n, n * 2);
        let mut machine = StringBuilder::with_capacity(n, n * 3);
        let mut sensor = StringBuilder::with_capacity(n, n * 6);
        let mut ts = TimestampNanosecondBuilder::with_capacity(n);
        let mut value = Float64Builder::with_capacity(n);
        let mut seq = Int64Builder::with_capacity(n);
        let per_tick = self.cfg.machines * self.kinds.len();
        let mut rows = 0;
        let mut silent = 0;
        while rows < n && !self.done() {
            let m = self.slot / self.kinds.len();
            let s = self.slot % self.kinds.len();
            let offset = (self.tick as i64).saturating_mul(self.cfg.interval);
            if offset >= SILENT_AFTER && self.machine_faults[m].contains(&Fault::Silent) {
                silent += 1;
                if silent > per_tick {
                    // every machine is silent: nothing more will come
                    break;
                }
                self.slot += 1;
                if self.slot == per_tick {
                    self.slot = 0;
                    self.tick += 1;
                }
                continue;
            }
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
            silent = 0;
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

/// A machine with the `silent` fault sends nothing after this much event time (ns).
const SILENT_AFTER: i64 = 60_000_000_000;

/// With a `rate`, batches are made this often per second (or at `batch_rows`).
const PACED_BATCHES_PER_SECOND: f64 = 10.0;

#[async_trait]
impl Source for Generator {
    fn is_bounded(&self) -> bool {
        self.cfg.limit.is_some() || self.cfg.duration.is_some()
    }

    fn resumes(&self) -> bool {
        true
    }

    fn prepare(&mut self, start: SourceStart) -> anyhow::Result<()> {
        self.resume_rows = match start.resume.and_then(|r| r.offset) {
            Some(o) => o
                .get("rows")
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(|| anyhow::anyhow!("generator position {o} has no row count"))?,
            None => 0,
        };
        Ok(())
    }

    async fn run(self: Box<Self>, out: SourceOutput) -> anyhow::Result<()> {
        let rate = self.cfg.rate;
        // paced rows, not batches: a batch holds at most a tenth of a second's rows
        let per_batch = match rate {
            Some(r) => ((r / PACED_BATCHES_PER_SECOND) as usize).clamp(1, self.cfg.batch_rows),
            None => self.cfg.batch_rows,
        };
        let mut maker = RowMaker::new(self.cfg);
        maker.skip(self.resume_rows);
        let began = tokio::time::Instant::now();
        let due = |rows: u64, r: f64| began + Duration::from_secs_f64(rows as f64 / r);
        let mut sent: u64 = 0;
        while let Some(batch) = maker.next_batch(per_batch) {
            if let Some(r) = rate {
                tokio::time::sleep_until(due(sent, r)).await;
            }
            sent += batch.num_rows() as u64;
            let batch = conform(&batch, &self.schema)?;
            let progress = Progress {
                offset: Some(position(maker.rows_made())),
                delivered: Vec::new(),
            };
            if out.send_at(batch, progress).await.is_err() {
                return Ok(());
            }
        }
        // the input ends when its last row is due, not when it was made
        if let Some(r) = rate {
            tokio::time::sleep_until(due(sent, r)).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use rand::{RngCore, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    /// The generator's numbers are xoshiro256++ seeded by SplitMix64, computed here from the
    /// published algorithms in plain 64-bit arithmetic: the same on every target, 32-bit
    /// ARM included (rand's `SmallRng`, used before, is xoshiro128++ there).
    #[test]
    fn the_random_stream_is_the_same_on_every_architecture() {
        let mut seed = 42u64;
        let mut splitmix = || {
            seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let z = (seed ^ (seed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let mut s = [splitmix(), splitmix(), splitmix(), splitmix()];
        let mut next = || {
            let out = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
            let t = s[1] << 17;
            s[2] ^= s[0];
            s[3] ^= s[1];
            s[1] ^= s[2];
            s[0] ^= s[3];
            s[2] ^= t;
            s[3] = s[3].rotate_left(45);
            out
        };
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(42);
        for _ in 0..1000 {
            assert_eq!(rng.next_u64(), next());
        }
    }
}
