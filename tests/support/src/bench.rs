//! Helpers shared by the benchmarks: a source fed by the bench itself and telemetry batches.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, TimestampNanosecondArray};
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use weir_engine::connector::{Source, SourceFactory, SourceOutput, SourceSpec};
use weir_engine::parse::options::OptionSpec;
use weir_engine::parse::{Options, parse_file};
use weir_engine::{PipelineError, Project};

/// Machines in the bench's key space.
pub const MACHINES: usize = 400;
/// Sensors per machine.
pub const SENSORS: usize = 10;
/// (machine, sensor) groups.
pub const GROUPS: usize = MACHINES * SENSORS;
/// Rows per batch.
pub const BATCH: usize = 8192;

/// Batches are fed by the bench itself.
struct Fed;

#[async_trait]
impl Source for Fed {
    fn is_bounded(&self) -> bool {
        false
    }
    async fn run(self: Box<Self>, _out: SourceOutput) -> anyhow::Result<()> {
        Ok(())
    }
}

struct FedFactory;

impl SourceFactory for FedFactory {
    fn name(&self) -> &'static str {
        "bench"
    }
    fn description(&self) -> &'static str {
        "batches fed by the benchmark"
    }
    fn options(&self) -> &'static [&'static [OptionSpec]] {
        &[]
    }
    fn build(&self, _: &SourceSpec, _: &Options) -> Result<Box<dyn Source>, PipelineError> {
        Ok(Box::new(Fed))
    }
}

/// `sql` compiled with every connector and the `bench` source (fed by the bench itself).
pub async fn project(sql: &str) -> Project {
    let mut c = weir_connectors::all();
    c.add_source(Arc::new(FedFactory));
    let file = parse_file("bench.sql", sql, &|_| None).expect("parses");
    weir_engine::compile(vec![file], &c, true)
        .await
        .expect("compiles")
}

/// Machine and sensor columns cycling through all groups, reused by every batch.
pub fn key_columns(schema: &SchemaRef) -> (ArrayRef, ArrayRef) {
    let m: ArrayRef = Arc::new(StringArray::from_iter_values(
        (0..BATCH).map(|i| format!("M{:03}", (i / SENSORS) % MACHINES)),
    ));
    let s: ArrayRef = Arc::new(StringArray::from_iter_values(
        (0..BATCH).map(|i| format!("s{}", i % SENSORS)),
    ));
    let m = arrow::compute::cast(&m, schema.field(0).data_type()).unwrap();
    let s = arrow::compute::cast(&s, schema.field(1).data_type()).unwrap();
    (m, s)
}

/// Batch number `n` at `rows_per_sec` rows per second of event time.
pub fn make_batch(
    schema: &SchemaRef,
    keys: &(ArrayRef, ArrayRef),
    n: usize,
    rows_per_sec: u64,
) -> RecordBatch {
    let step = 1_000_000_000 / rows_per_sec as i64;
    let first = (n * BATCH) as i64;
    let ts =
        TimestampNanosecondArray::from_iter_values((0..BATCH as i64).map(|i| (first + i) * step));
    let v = Float64Array::from_iter_values(
        (0..BATCH).map(|i| ((first as usize + i) % 1000) as f64 * 0.01),
    );
    RecordBatch::try_new(
        schema.clone(),
        vec![keys.0.clone(), keys.1.clone(), Arc::new(ts), Arc::new(v)],
    )
    .unwrap()
}

/// The bench's source `t` and a `stdout` sink `out`, for the bench's queries to follow.
pub const SOURCE: &str = "CREATE SOURCE t (machine VARCHAR, sensor VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (connector = 'bench', event_time = 'ts');\nCREATE SINK out WITH (connector = 'stdout');\n";

/// The median of `v`.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// A `VmRSS:`-style field of `/proc/self/status`, in KiB.
pub fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// User + system CPU ticks of process `pid`.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // fields after the command name (which may hold spaces) start at field 3
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Clock ticks per second of the CPU times in `/proc`.
pub fn ticks_per_second() -> f64 {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output();
    out.ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// A source that sends the bench's batches over and over for `duration`, each pass shifted
/// in event time by `span_ns` so that windows keep closing (column 2 is the event time).
struct Replay {
    batches: Arc<Vec<RecordBatch>>,
    span_ns: i64,
    duration: std::time::Duration,
}

#[async_trait]
impl Source for Replay {
    fn is_bounded(&self) -> bool {
        true
    }
    async fn run(self: Box<Self>, out: SourceOutput) -> anyhow::Result<()> {
        let start = std::time::Instant::now();
        for pass in 0i64.. {
            for b in self.batches.iter() {
                if start.elapsed() >= self.duration {
                    return Ok(());
                }
                let b = if pass == 0 {
                    b.clone()
                } else {
                    shifted(b, pass * self.span_ns)
                };
                if out.send(b).await.is_err() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// `b` with its event times (column 2) moved `by_ns` later.
fn shifted(b: &RecordBatch, by_ns: i64) -> RecordBatch {
    use arrow::array::AsArray;
    use arrow::datatypes::TimestampNanosecondType;
    let ts = b.column(2).as_primitive::<TimestampNanosecondType>();
    let moved: TimestampNanosecondArray = ts.unary(|t| t + by_ns);
    let mut cols = b.columns().to_vec();
    cols[2] = Arc::new(moved);
    RecordBatch::try_new(b.schema(), cols).unwrap()
}

/// `connector = 'replay'`: [`Replay`] over batches the bench made.
pub struct ReplayFactory {
    /// The batches, in order.
    pub batches: Arc<Vec<RecordBatch>>,
    /// Event time they span.
    pub span_ns: i64,
    /// How long to replay.
    pub duration: std::time::Duration,
}

impl SourceFactory for ReplayFactory {
    fn name(&self) -> &'static str {
        "replay"
    }
    fn description(&self) -> &'static str {
        "the benchmark's batches, replayed for a while"
    }
    fn options(&self) -> &'static [&'static [OptionSpec]] {
        &[]
    }
    fn build(&self, _: &SourceSpec, _: &Options) -> Result<Box<dyn Source>, PipelineError> {
        Ok(Box::new(Replay {
            batches: Arc::clone(&self.batches),
            span_ns: self.span_ns,
            duration: self.duration,
        }))
    }
}

/// `sql` compiled with every connector and `replay`.
pub async fn project_with_replay(sql: &str, replay: ReplayFactory) -> Project {
    let mut c = weir_connectors::all();
    c.add_source(Arc::new(replay));
    let file = parse_file("bench.sql", sql, &|_| None).expect("parses");
    weir_engine::compile(vec![file], &c, true)
        .await
        .expect("compiles")
}
