//! Predictive-maintenance functions: rows/s of each aggregate over 1 s tumbling windows of
//! 4,000 groups, next to `avg` in the same run (pre-built batches, one core).
//!
//! Run: `cargo bench --bench functions` (medians of several runs; the machine is shared).
#![allow(clippy::unwrap_used)] // a test (or bench) fails by panicking

use weir_test_support::bench as common;

use std::time::Instant;

use arrow::array::RecordBatch;
use common::*;
use weir_engine::exec::ids::StreamId;

async fn rows_per_sec(call: &str, batches: &[RecordBatch]) -> f64 {
    let sql = format!(
        "{SOURCE}INSERT INTO out SELECT machine, sensor, window_start, {call} AS x \
         FROM TUMBLE(t, ts, INTERVAL '1' SECOND) GROUP BY machine, sensor, window_start, window_end;"
    );
    let mut runs = Vec::new();
    for _ in 0..5 {
        let mut p = project(&sql).await;
        let now = Instant::now();
        let start = Instant::now();
        for b in batches {
            p.dataflow.on_batch(StreamId::new(0), b.clone(), now);
        }
        p.dataflow.on_source_end(StreamId::new(0));
        runs.push((batches.len() * BATCH) as f64 / start.elapsed().as_secs_f64());
    }
    median(runs)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let probe = project(&format!("{SOURCE}INSERT INTO out SELECT * FROM t;")).await;
    let schema = probe.dataflow.stream_schema(StreamId::new(0)).clone();
    let keys = key_columns(&schema);
    // 100k rows per second of event time: 25 rows per group per window
    let batches: Vec<RecordBatch> = (0..400)
        .map(|n| make_batch(&schema, &keys, n, 100_000))
        .collect();
    println!(
        "functions: 1 s tumbling windows, {GROUPS} groups, {} rows per run, median of 5 runs, one core",
        batches.len() * BATCH
    );
    let baseline = rows_per_sec("avg(value)", &batches).await;
    println!(
        "  {:<52} {:>7.2} M rows/s  (baseline)",
        "avg(value)",
        baseline / 1e6
    );
    for call in [
        "rms(value)",
        "peak_to_peak(value)",
        "crest_factor(value)",
        "kurtosis(value)",
        "skewness(value)",
        "mean_abs(value)",
        "shape_factor(value)",
        "impulse_factor(value)",
        "trend_slope(ts, value)",
        "time_to_threshold(ts, value, 100.0)",
        // 25 samples per group and window here: a 25 Hz sampling rate
        "band_energy(value, 25, 2, 8 ORDER BY ts)",
        "dominant_frequency(value, 25 ORDER BY ts)",
    ] {
        let r = rows_per_sec(call, &batches).await;
        println!(
            "  {call:<52} {:>7.2} M rows/s  {:>5.2}x avg's time",
            r / 1e6,
            baseline / r
        );
    }
}
