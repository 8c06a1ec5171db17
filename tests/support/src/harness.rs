//! A harness that compiles pipeline text and feeds batches straight into the dataflow, so
//! tests control batch boundaries, arrival order and watermarks exactly.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, TimestampNanosecondArray};
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use weir_engine::connector::{Connectors, Source, SourceFactory, SourceOutput, SourceSpec};
use weir_engine::exec::dataflow::SinkBatch;
use weir_engine::exec::ids::{PipelineId, StreamId};
use weir_engine::parse::options::{OptionSpec, OptionType};
use weir_engine::parse::{Options, parse_file};
use weir_engine::{Diagnostics, PipelineError, Project, compile};

/// `connector = 'test'`: rows are fed by the test; `bounded = 'true'` marks it finite.
pub struct TestSourceFactory;

/// `bounded`: the test source ends by itself.
const BOUNDED: OptionSpec = OptionSpec::new(
    "bounded",
    OptionType::Bool,
    "the source is finite (its end is fed by the test)",
)
.default("false");

struct TestSource {
    bounded: bool,
}

#[async_trait]
impl Source for TestSource {
    fn is_bounded(&self) -> bool {
        self.bounded
    }
    async fn run(self: Box<Self>, _out: SourceOutput) -> anyhow::Result<()> {
        Ok(())
    }
}

impl SourceFactory for TestSourceFactory {
    fn name(&self) -> &'static str {
        "test"
    }
    fn description(&self) -> &'static str {
        "rows fed by tests"
    }
    fn options(&self) -> &'static [&'static [OptionSpec]] {
        &[&[BOUNDED]]
    }
    fn build(&self, _spec: &SourceSpec, o: &Options) -> Result<Box<dyn Source>, PipelineError> {
        let bounded = o.value(&BOUNDED)?;
        Ok(Box::new(TestSource { bounded }))
    }
}

/// Connectors for tests: the test source and the local sinks (`stdout`, `file`,
/// `object_store`).
pub fn connectors() -> Connectors {
    let mut c = Connectors::default();
    c.add_source(Arc::new(TestSourceFactory));
    c.add_sink(Arc::new(weir_connectors::stdout::StdoutSinkFactory));
    c.add_sink(Arc::new(weir_connectors::file::FileSinkFactory));
    c.add_table(Arc::new(weir_connectors::file::FileTableFactory));
    c.add_sink(Arc::new(
        weir_connectors::object_store::ObjectStoreSinkFactory,
    ));
    c
}

/// Compiles `sql` as file `p.sql` with environment `env`.
pub async fn try_compile(
    sql: &str,
    env: &[(&str, &str)],
    emit: bool,
) -> Result<Project, Diagnostics> {
    try_compile_with(sql, env, emit, &connectors()).await
}

/// The errors `sql` produces with every connector of the binary, as printed.
pub async fn errors_with_all_connectors(sql: &str) -> Vec<String> {
    match try_compile_with(sql, &[], true, &weir_connectors::all()).await {
        Ok(_) => vec![],
        Err(d) => d.0.iter().map(|e| e.to_string()).collect(),
    }
}

/// Compiles `sql` as file `p.sql` with environment `env` and these connectors.
pub async fn try_compile_with(
    sql: &str,
    env: &[(&str, &str)],
    emit: bool,
    connectors: &Connectors,
) -> Result<Project, Diagnostics> {
    let lookup = |name: &str| {
        env.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    };
    let file = parse_file("p.sql", sql, &lookup).map_err(Diagnostics)?;
    compile(vec![file], connectors, emit).await
}

/// A sink compiled from a pipeline in which the test source `s` (with `columns`) inserts
/// every row into sink `out` declared with `sink_options` (what goes inside `WITH (...)`),
/// with the test connectors and `sink` — for tests and benches that drive a sink themselves.
/// Returns it (not started) and the columns it receives.
pub async fn compile_sink(
    columns: &str,
    sink_options: &str,
    sink: Arc<dyn weir_engine::connector::SinkFactory>,
) -> (weir_engine::compile::CompiledSink, SchemaRef) {
    let mut c = connectors();
    c.add_sink(sink);
    let sql = format!(
        "CREATE SOURCE s ({columns}) WITH (connector = 'test');\n\
         CREATE SINK out WITH ({sink_options});\n\
         INSERT INTO out SELECT * FROM s;"
    );
    let mut project = try_compile_with(&sql, &[], true, &c)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let schema = project
        .dataflow
        .sink_schema(weir_engine::exec::ids::SinkId::new(0))
        .expect("the INSERT gives the sink its columns");
    (project.sinks.remove(0), schema)
}

/// A sink compiled from a pipeline whose test source has `columns`, started, and fed by the
/// test on a runtime of its own (the servers it writes to run on others).
pub struct DrivenSink {
    runtime: tokio::runtime::Runtime,
    /// The sink.
    pub sink: Box<dyn weir_engine::connector::Sink>,
    /// Its counts.
    pub telemetry: Arc<weir_engine::observe::telemetry::SinkTelemetry>,
    /// The columns it receives.
    pub schema: SchemaRef,
}

impl DrivenSink {
    /// The sink `sink_options` (what goes inside `WITH (...)`) of `factory` for rows of
    /// `columns`, started (by pipeline `derate`); the error its start returned otherwise.
    pub fn start(
        factory: Arc<dyn weir_engine::connector::SinkFactory>,
        columns: &str,
        sink_options: &str,
        no_writes: bool,
    ) -> Result<DrivenSink, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (compiled, schema) = runtime.block_on(compile_sink(columns, sink_options, factory));
        let mut sink = compiled.sink;
        runtime
            .block_on(sink.start(weir_engine::connector::SinkStart {
                inputs: vec![("derate".into(), "0".into())],
                schema: Some(Arc::clone(&schema)),
                checkpoints: None,
                no_writes,
            }))
            .map_err(|e| format!("{e:#}"))?;
        Ok(DrivenSink {
            runtime,
            sink,
            telemetry: compiled.telemetry,
            schema,
        })
    }

    /// Writes rows given as JSON objects (the columns by name; missing ones are null).
    pub fn write(&mut self, rows: &[serde_json::Value]) {
        let mut decoder = arrow::json::ReaderBuilder::new(Arc::clone(&self.schema))
            .build_decoder()
            .expect("decoder");
        decoder.serialize(rows).expect("rows of the sink's columns");
        let batch = decoder.flush().expect("rows").expect("a batch");
        self.write_batch(batch);
    }

    /// Writes one batch.
    pub fn write_batch(&mut self, batch: RecordBatch) {
        self.runtime
            .block_on(self.sink.write(batch))
            .expect("the sink takes the batch");
    }

    /// One tick of the sink (what waits for `min_interval` goes out).
    pub fn tick(&mut self) {
        self.runtime
            .block_on(self.sink.tick())
            .expect("the sink ticks");
    }

    /// Closes the sink (the end of a run).
    pub fn close(&mut self) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        self.runtime
            .block_on(self.sink.close(deadline))
            .expect("the sink closes");
    }

    /// Values by outcome (`weir_sink_writes_total`'s `result`).
    pub fn writes(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.telemetry.counts().writes
    }
}

/// The errors `sql` produces, as printed.
pub async fn errors(sql: &str) -> Vec<String> {
    match try_compile(sql, &[], true).await {
        Ok(_) => vec![],
        Err(d) => d.0.iter().map(|e| e.to_string()).collect(),
    }
}

/// A compiled project fed by hand.
pub struct Harness {
    /// The compiled project, its dataflow driven by the harness.
    pub project: Project,
    /// Every batch each sink received, by sink id.
    pub out: Vec<Vec<RecordBatch>>,
}

impl Harness {
    /// Compiles `sql`; open windows are emitted at the end.
    pub async fn new(sql: &str) -> Self {
        Self::with_mode(sql, true).await
    }

    /// Compiles `sql`; open windows are emitted (`emit`) or dropped at the end.
    pub async fn with_mode(sql: &str, emit: bool) -> Self {
        let project = match try_compile(sql, &[], emit).await {
            Ok(p) => p,
            Err(d) => panic!("does not compile:\n{d}"),
        };
        let n = project.sinks.len();
        Self {
            project,
            out: vec![Vec::new(); n],
        }
    }

    fn collect(&mut self, outs: Vec<SinkBatch>) -> usize {
        let mut rows = 0;
        for o in outs {
            rows += o.batch.num_rows();
            self.out[o.sink.index()].push(o.batch);
        }
        rows
    }

    /// Feeds a batch to source `stream`; returns rows that reached sinks.
    pub fn feed(&mut self, stream: usize, batch: RecordBatch) -> usize {
        let outs = self
            .project
            .dataflow
            .on_batch(StreamId::new(stream), batch, Instant::now());
        self.collect(outs)
    }

    /// Ends source `stream`.
    pub fn end(&mut self, stream: usize) -> usize {
        let outs = self.project.dataflow.on_source_end(StreamId::new(stream));
        self.collect(outs)
    }

    /// A periodic tick at `now`.
    pub fn tick(&mut self, now: Instant) -> usize {
        let outs = self.project.dataflow.on_tick(now);
        self.collect(outs)
    }

    /// Ends every source.
    pub fn end_all(&mut self) {
        for s in 0..self.project.sources.len() {
            self.end(s);
        }
    }

    /// Everything sink `k` received, as one batch.
    pub fn sink(&self, k: usize) -> Option<RecordBatch> {
        let b = &self.out[k];
        if b.is_empty() {
            return None;
        }
        Some(arrow::compute::concat_batches(&b[0].schema(), b).unwrap())
    }

    /// Takes a checkpoint of this dataflow, writes it into the state directory `dir` and
    /// reads it back (as a restart would), and restores it into `into` (compiled from the
    /// same or a changed text); what the restore did.
    pub fn restore_into(
        &mut self,
        into: &mut Harness,
        dir: &std::path::Path,
    ) -> weir_engine::exec::snapshot::RestoreReport {
        use weir_engine::checkpoint::{CheckpointStore, Manifest, Taken, manifest::FORMAT};
        let mut files = Vec::new();
        let (streams, pipelines) = self.project.dataflow.capture(&mut files).unwrap();
        let store = CheckpointStore::open(dir, false).unwrap();
        let number = store.complete().last().map_or(1, |n| n + 1);
        let manifest = Manifest {
            format: FORMAT,
            number,
            lineage: store.lineage().to_string(),
            taken_ns: 0,
            version: "test".into(),
            streams,
            pipelines,
            sources: vec![],
            sinks: vec![],
        };
        store.write(&Taken { manifest, files }).unwrap();
        let mut restored = store.newest().unwrap();
        assert_eq!(restored.manifest.number, number);
        let bounded = vec![false; into.project.dataflow.pipeline_count() + 8];
        into.project.dataflow.restore(&mut restored, &bounded)
    }

    /// Late rows pipeline `pipeline` dropped.
    pub fn late_rows(&self, pipeline: usize) -> u64 {
        self.project
            .dataflow
            .pipeline_counts(PipelineId::new(pipeline))
            .late_rows
    }
}

/// One input row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Key.
    pub k: String,
    /// Event time (ns).
    pub ts: i64,
    /// Value.
    pub v: f64,
}

/// A second in nanoseconds.
pub const SEC: i64 = 1_000_000_000;
/// A millisecond in nanoseconds.
pub const MS: i64 = 1_000_000;

/// Rows as a batch of the source `s (k VARCHAR, ts TIMESTAMP, v DOUBLE)`.
pub fn batch(schema: &SchemaRef, rows: &[Row]) -> RecordBatch {
    let k: ArrayRef = Arc::new(StringArray::from_iter_values(
        rows.iter().map(|r| r.k.as_str()),
    ));
    let k = arrow::compute::cast(&k, schema.field(0).data_type()).unwrap();
    let ts: ArrayRef = Arc::new(TimestampNanosecondArray::from_iter_values(
        rows.iter().map(|r| r.ts),
    ));
    let v: ArrayRef = Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.v)));
    RecordBatch::try_new(schema.clone(), vec![k, ts, v]).unwrap()
}

/// A small deterministic random number generator (64-bit LCG), so tests need no crate.
pub struct Lcg(pub u64);

impl Lcg {
    /// The next 31-bit number.
    pub fn draw(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        self.draw() % n
    }
    /// Uniform in [0, 1), in steps of 1e-6.
    pub fn unit(&mut self) -> f64 {
        (self.draw() % 1_000_000) as f64 / 1_000_000.0
    }
}

/// Splits `rows` into batches of random sizes (1..=max).
pub fn random_batches(rows: &[Row], max: u64, rng: &mut Lcg) -> Vec<Vec<Row>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < rows.len() {
        let n = (1 + rng.below(max)) as usize;
        out.push(rows[i..(i + n).min(rows.len())].to_vec());
        i += n;
    }
    out
}

/// The source schema of stream 0.
pub fn source_schema(h: &Harness) -> SchemaRef {
    h.project.dataflow.stream_schema(StreamId::new(0)).clone()
}
