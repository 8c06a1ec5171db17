//! The file source on a 10 M-row telemetry file (1,000 devices × 4 sensors × 100 Hz, 25 s of
//! event time, in event-time order), as Parquet and as CSV: `weir run` as a process (file
//! source → Parquet file sink) against DataFusion's batch SQL over the same file, in the same
//! run (issue: field defects, a file source as fast as the engine).
//!
//! - q1: 1 s tumbling count/avg/min/max/stddev per (device, sensor);
//! - q2: 10 s windows every 1 s, avg per device of `sensor = 'vib_x'`, `HAVING avg > 1.5`.
//!
//! Both produce the same rows (checked: row counts). Alternating order, median of 3 rounds.
//!
//! Run: `cargo bench --bench file_source`.
#![allow(clippy::unwrap_used)] // a test (or bench) fails by panicking

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionContext};
use parquet::arrow::ArrowWriter;
use weir_test_support::bench::median;
use weir_test_support::compare::parquet_dir;
use weir_test_support::weir_process::weir_bin;

const DEVICES: usize = 1000;
const SENSORS: [&str; 4] = ["vib_x", "vib_y", "temp", "current"];
const TICKS: usize = 2500; // 100 Hz for 25 s
const ROUNDS: usize = 3;
/// 2026-01-01T00:00:00Z in milliseconds.
const T0: i64 = 1_767_225_600_000;

/// The rows of tick `t`: every device's every sensor.
fn tick(t: usize) -> RecordBatch {
    let n = DEVICES * SENSORS.len();
    let device: ArrayRef = Arc::new(StringArray::from_iter_values(
        (0..n).map(|i| format!("d{:04}", i / SENSORS.len())),
    ));
    let sensor: ArrayRef = Arc::new(StringArray::from_iter_values(
        (0..n).map(|i| SENSORS[i % SENSORS.len()]),
    ));
    let ts: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![T0 + t as i64 * 10; n]));
    let value: ArrayRef = Arc::new(Float64Array::from_iter_values((0..n).map(|i| {
        let d = (i / SENSORS.len()) as f64;
        1.0 + (d % 7.0) / 7.0 + ((t * 31 + i * 17) % 100) as f64 / 200.0
    })));
    RecordBatch::try_from_iter([
        ("device", device),
        ("sensor", sensor),
        ("ts", ts),
        ("value", value),
    ])
    .unwrap()
}

/// Writes the 10 M rows as `data.parquet` and `data.csv` (epoch milliseconds) in `dir`.
fn write_inputs(dir: &Path) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("device", DataType::Utf8, false),
        Field::new("sensor", DataType::Utf8, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
        Field::new("value", DataType::Float64, false),
    ]));
    let mut parquet = ArrowWriter::try_new(
        std::fs::File::create(dir.join("data.parquet")).unwrap(),
        schema,
        None,
    )
    .unwrap();
    let mut csv = std::io::BufWriter::new(std::fs::File::create(dir.join("data.csv")).unwrap());
    use std::io::Write;
    writeln!(csv, "device,sensor,ts,value").unwrap();
    for t in 0..TICKS {
        let b = tick(t);
        parquet.write(&b).unwrap();
        let ts = T0 + t as i64 * 10;
        let values = b.column(3).as_any().downcast_ref::<Float64Array>().unwrap();
        for i in 0..b.num_rows() {
            writeln!(
                csv,
                "d{:04},{},{ts},{}",
                i / SENSORS.len(),
                SENSORS[i % SENSORS.len()],
                values.value(i)
            )
            .unwrap();
        }
    }
    parquet.close().unwrap();
}

/// The Weir pipeline of query `q` over `file` (format `format`).
fn pipeline(file: &Path, format: &str, q: &str) -> String {
    let source = format!(
        "CREATE SOURCE t (device VARCHAR, sensor VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (
            connector = 'file', path = '{}', format = '{format}', event_time = 'ts', watermark = '1s');
         CREATE SINK out WITH (connector = 'file', path = 'out', format = 'parquet');",
        file.display()
    );
    let query = match q {
        "q1" => "INSERT INTO out SELECT device, sensor, window_start, window_end, count(*) AS n, avg(value) AS mean,
                   min(value) AS lo, max(value) AS hi, stddev(value) AS sd
                 FROM TUMBLE(t, ts, INTERVAL '1' SECOND) GROUP BY device, sensor, window_start, window_end;",
        _ => "INSERT INTO out SELECT device, window_start, window_end, avg(value) AS mean
                 FROM HOP(t, ts, INTERVAL '1' SECOND, INTERVAL '10' SECOND) WHERE sensor = 'vib_x'
                 GROUP BY device, window_start, window_end HAVING avg(value) > 1.5;",
    };
    format!("{source}\n{query}")
}

/// DataFusion's batch SQL for query `q` over table `t`.
fn batch_query(q: &str) -> String {
    match q {
        "q1" => "SELECT device, sensor, date_bin(INTERVAL '1 second', ts) AS ws, count(*), avg(value), min(value), max(value), stddev(value)
                 FROM t GROUP BY device, sensor, ws"
            .into(),
        _ => {
            // every row is in the 10 windows starting at its second and the 9 before: one
            // scan, each row unnested into its windows
            let starts: Vec<String> = (0..10)
                .map(|k| format!("b - INTERVAL '{k} seconds'"))
                .collect();
            format!(
                "SELECT device, ws, avg(value) FROM ( \
                   SELECT device, value, unnest(make_array({})) AS ws FROM ( \
                     SELECT device, value, date_bin(INTERVAL '1 second', ts) AS b FROM t WHERE sensor = 'vib_x')) \
                 GROUP BY device, ws HAVING avg(value) > 1.5",
                starts.join(", ")
            )
        }
    }
}

/// `weir run` of query `q` over `file`: seconds and result rows.
fn weir(dir: &Path, file: &Path, format: &str, q: &str) -> (f64, usize) {
    let run = tempfile::tempdir_in(dir).unwrap();
    std::fs::write(run.path().join("p.sql"), pipeline(file, format, q)).unwrap();
    let start = Instant::now();
    let status = std::process::Command::new(weir_bin())
        .args(["run", "p.sql", "--log-level", "warn"])
        .current_dir(run.path())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert!(status.success());
    let rows = parquet_dir(&run.path().join("out"))
        .iter()
        .map(RecordBatch::num_rows)
        .sum();
    (secs, rows)
}

/// DataFusion's batch query `q` over `file`: seconds and result rows.
async fn datafusion(file: &Path, format: &str, q: &str) -> (f64, usize) {
    let start = Instant::now();
    let ctx = SessionContext::new();
    let path = file.display().to_string();
    if format == "parquet" {
        ctx.register_parquet("t", &path, ParquetReadOptions::default())
            .await
            .unwrap();
    } else {
        let schema = Schema::new(vec![
            Field::new("device", DataType::Utf8, false),
            Field::new("sensor", DataType::Utf8, false),
            Field::new("ts", DataType::Int64, false),
            Field::new("value", DataType::Float64, false),
        ]);
        ctx.register_csv("raw", &path, CsvReadOptions::new().schema(&schema))
            .await
            .unwrap();
        ctx.sql(
            "CREATE VIEW t AS SELECT device, sensor, to_timestamp_millis(ts) AS ts, value FROM raw",
        )
        .await
        .unwrap();
    }
    let out = ctx
        .sql(&batch_query(q))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let secs = start.elapsed().as_secs_f64();
    (secs, out.iter().map(RecordBatch::num_rows).sum())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let made = Instant::now();
    write_inputs(dir.path());
    println!(
        "file source: {} M rows ({DEVICES} devices × {} sensors × 100 Hz × 25 s), written in {:.1?}; weir run (file → Parquet file) vs DataFusion batch SQL, median of {ROUNDS}",
        DEVICES * SENSORS.len() * TICKS / 1_000_000,
        SENSORS.len(),
        made.elapsed()
    );
    for format in ["parquet", "csv"] {
        let file = dir.path().join(format!("data.{format}"));
        for q in ["q1", "q2"] {
            let (mut w, mut d) = (Vec::new(), Vec::new());
            let mut rows = (0, 0);
            for round in 0..ROUNDS {
                let (a, b) = if round % 2 == 0 {
                    let a = weir(dir.path(), &file, format, q);
                    (a, datafusion(&file, format, q).await)
                } else {
                    let b = datafusion(&file, format, q).await;
                    (weir(dir.path(), &file, format, q), b)
                };
                w.push(a.0);
                d.push(b.0);
                rows = (a.1, b.1);
            }
            assert_eq!(rows.0, rows.1, "{format} {q}: both give the same rows");
            let (w, d) = (median(w), median(d));
            println!(
                "  {format:>7} {q}: weir {:>6.2} s, DataFusion {:>6.2} s: weir {:.2}× DataFusion's speed ({} result rows)",
                w,
                d,
                d / w,
                rows.0
            );
        }
    }
}
