//! The object-store sink's offline buffer: spill write throughput (MB/s of Parquet, with
//! fsync), replay upload throughput to a local S3-compatible server (s3s-fs), and the rows/s
//! a pipeline keeps while the store is down compared with while it is up (same run).
//!
//! Run: `cargo bench --bench spill` (needs s3s-fs, as the tests do: `scripts/test` installs it).
#![allow(clippy::unwrap_used)] // a test (or bench) fails by panicking

use weir_test_support::s3;

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampNanosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use tokio::sync::{mpsc, oneshot, watch};
use weir_connectors::object_store::spill::{KEY_METADATA, SpillDir};
use weir_connectors::object_store::uploader::{Command, Destination, Policy, Uploader};
use weir_engine::observe::telemetry::SinkTelemetry;
use weir_engine::parse::parse_file;
use weir_engine::runtime::{RunControl, run};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A Parquet file of `rows` window summaries (what the sink writes), zstd.
fn summary_file(rows: usize, key: &str) -> Bytes {
    let ts = DataType::Timestamp(TimeUnit::Nanosecond, None);
    let schema = Arc::new(Schema::new(vec![
        Field::new("machine", DataType::Utf8, false),
        Field::new("window_start", ts.clone(), false),
        Field::new("window_end", ts, false),
        Field::new("n", DataType::Int64, false),
        Field::new("mean", DataType::Float64, false),
        Field::new("rms", DataType::Float64, false),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            (0..rows).map(|i| format!("M{:04}", i % 4000)),
        )),
        Arc::new(TimestampNanosecondArray::from_iter_values(
            (0..rows).map(|i| (i / 4000) as i64 * 1_000_000_000),
        )),
        Arc::new(TimestampNanosecondArray::from_iter_values(
            (0..rows).map(|i| (i / 4000 + 1) as i64 * 1_000_000_000),
        )),
        Arc::new(Int64Array::from_iter_values(
            (0..rows).map(|i| 90 + (i % 21) as i64),
        )),
        Arc::new(Float64Array::from_iter_values(
            (0..rows).map(|i| ((i * 7919) % 1000) as f64 / 13.0),
        )),
        Arc::new(Float64Array::from_iter_values(
            (0..rows).map(|i| ((i * 104_729) % 997) as f64 / 7.0),
        )),
    ];
    let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
    let mut w = ArrowWriter::try_new(Vec::new(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.append_key_value_metadata(KeyValue::new(KEY_METADATA.to_string(), key.to_string()));
    Bytes::from(w.into_inner().unwrap())
}

fn spill_write_mb_s(file: &Bytes, files: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let (mut spill, _) = SpillDir::open(dir.path()).unwrap();
    let start = Instant::now();
    for _ in 0..files {
        spill.write(file).unwrap();
    }
    (file.len() * files) as f64 / 1e6 / start.elapsed().as_secs_f64()
}

async fn replay_mb_s(server: &S3Server, files: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let (mut spill, _) = SpillDir::open(dir.path()).unwrap();
    for i in 0..files {
        let key = format!("bench/replay/part-{i:06}.parquet");
        spill.write(&summary_file(50_000, &key)).unwrap();
    }
    let bytes = spill.bytes();
    let u = Uploader::new(
        "bench",
        Destination {
            store: server.client(),
            display: server.endpoint(),
            prefix: "bench/replay".into(),
            spill,
            max_bytes: u64::MAX,
            policy: Policy::Block,
            outbox: None,
            deletes: Vec::new(),
        },
        tokio::sync::watch::channel(None).1,
        Arc::new(SinkTelemetry::new("bench")),
    );
    let (tx, rx) = mpsc::channel(1);
    let start = Instant::now();
    let task = tokio::spawn(u.run(rx));
    let (done, wait) = oneshot::channel();
    tx.send(Command::Close(done)).await.unwrap();
    wait.await.unwrap();
    task.await.unwrap();
    let elapsed = start.elapsed().as_secs_f64();
    assert!(
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().is_file())
            .count()
            == 0
    );
    bytes as f64 / 1e6 / elapsed
}

/// Rows/s of a 1 s window pipeline over 4,000 groups into the object-store sink at
/// `endpoint`: until the last row went through the pipeline, and including the sink's close.
async fn pipeline_rows_s(endpoint: &str, rows: u64) -> (f64, f64) {
    let spill = tempfile::tempdir().unwrap();
    let sql = format!(
        "CREATE SOURCE g (machine VARCHAR, sensor VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (
            connector = 'generator', machines = '400', sensors = 'vib_x,vib_y,vib_z,temp,current,p1,p2,p3,p4,p5',
            rate = 'max', interval = '40ms', limit = '{rows}', start = '2026-01-01T00:00:00Z', event_time = 'ts');
         CREATE SINK cloud WITH (connector = 'object_store', url = 's3://edge/bench', endpoint = '{endpoint}',
            region = 'us-east-1', access_key_id = '{ACCESS_KEY}', secret_access_key = '{SECRET_KEY}',
            roll_rows = '20000', roll_interval = '1s', spill_dir = '{}', spill_max_bytes = '4GiB');
         INSERT INTO cloud SELECT machine, sensor, window_start, window_end, count(*) AS n, avg(value) AS mean,
            max(value) AS peak FROM TUMBLE(g, ts, INTERVAL '1' SECOND) GROUP BY machine, sensor, window_start, window_end;",
        spill.path().display()
    );
    let file = parse_file("bench.sql", &sql, &|_| None).expect("parses");
    let project = weir_engine::compile(vec![file], &weir_connectors::all(), true)
        .await
        .expect("compiles");
    let (_stop_tx, stop) = watch::channel(false);
    let summary = run(project, RunControl::new(stop)).await;
    assert_eq!(summary.rows_in(), rows);
    (
        rows as f64 / summary.processing.as_secs_f64(),
        rows as f64 / summary.elapsed.as_secs_f64(),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let server = S3Server::start();
    let file = summary_file(50_000, "bench/one.parquet");
    println!(
        "spill: files of 50,000 summary rows ({:.2} MB of zstd Parquet), median of 5",
        file.len() as f64 / 1e6
    );
    let write = median((0..5).map(|_| spill_write_mb_s(&file, 20)).collect());
    println!("  spill write (temporary file, fsync, rename)      {write:>8.1} MB/s");
    let mut replay = Vec::new();
    for _ in 0..5 {
        replay.push(replay_mb_s(&server, 10).await);
    }
    println!(
        "  replay upload to local s3s-fs (oldest first)     {:>8.1} MB/s",
        median(replay)
    );
    let rows = 8_000_000;
    let down = format!("http://127.0.0.1:{}", {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    });
    let (mut up_runs, mut down_runs) = (Vec::new(), Vec::new());
    for round in 0..3 {
        if round % 2 == 0 {
            up_runs.push(pipeline_rows_s(&server.endpoint(), rows).await);
            down_runs.push(pipeline_rows_s(&down, rows).await);
        } else {
            down_runs.push(pipeline_rows_s(&down, rows).await);
            up_runs.push(pipeline_rows_s(&server.endpoint(), rows).await);
        }
    }
    let first = |v: &[(f64, f64)]| median(v.iter().map(|r| r.0).collect());
    let total = |v: &[(f64, f64)]| median(v.iter().map(|r| r.1).collect());
    let (up, dn) = (first(&up_runs), first(&down_runs));
    println!("pipeline: 1 s windows over 4,000 groups, {rows} generated rows, median of 3");
    println!("  (rows/s until the last row went through; in brackets including the sink's close,");
    println!("  which with the store down retries the backlog for a few seconds before exiting)");
    println!(
        "  store up                                       {:>10.0} rows/s  ({:.0})",
        up,
        total(&up_runs)
    );
    println!(
        "  store down (every file spilled)                {:>10.0} rows/s  ({:.0})  {:.0}% of store up",
        dn,
        total(&down_runs),
        100.0 * dn / up
    );
}
