//! Engine benchmarks (issue: engine core).
//!
//! 1. Throughput: a 1 s tumbling window over 4,000 (machine, sensor) groups with
//!    count/avg/min/max/stddev, fed pre-built Arrow batches on one core, next to DataFusion
//!    computing the same result as a batch query over the same batches (our "limit").
//! 2. State memory: a 1-hour tumbling window at 100k rows/s over 4,000 groups for 10
//!    simulated minutes; resident memory is sampled every simulated minute.
//! 3. State budget accounting: the throughput pipeline with a process-wide state budget it
//!    never reaches (the state measured after every batch) against the same pipeline with
//!    none, alternated in one process (issue: bounded resources).
//!
//! Run: `cargo bench --bench engine` (medians of several runs; the machine is shared).
#![allow(clippy::unwrap_used)] // a test (or bench) fails by panicking

use weir_test_support::bench as common;

use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use common::*;
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use weir_engine::exec::ids::{PipelineId, StreamId};

/// The throughput pipeline and its input: 100k rows per second of event time, 25 rows per
/// group per window, 1,220 batches.
async fn throughput_input() -> (String, SchemaRef, Vec<RecordBatch>) {
    let sql = format!(
        "{SOURCE}INSERT INTO out SELECT machine, sensor, window_start, window_end, count(*) AS n, avg(value) AS mean, min(value) AS lo, max(value) AS hi, stddev(value) AS sd \
         FROM TUMBLE(t, ts, INTERVAL '1' SECOND) GROUP BY machine, sensor, window_start, window_end;"
    );
    let probe = project(&sql).await;
    let schema = probe.dataflow.stream_schema(StreamId::new(0)).clone();
    let keys = key_columns(&schema);
    let batches: Vec<RecordBatch> = (0..1220)
        .map(|n| make_batch(&schema, &keys, n, 100_000))
        .collect();
    (sql, schema, batches)
}

async fn throughput() {
    let (sql, schema, batches) = throughput_input().await;
    let rows = (batches.len() * BATCH) as f64;
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    ctx.register_table(
        "t",
        Arc::new(MemTable::try_new(schema.clone(), vec![batches.clone()]).unwrap()),
    )
    .unwrap();
    let batch_sql = "SELECT machine, sensor, date_bin(INTERVAL '1 second', ts) AS ws, count(*), avg(value), min(value), max(value), stddev(value) FROM t GROUP BY machine, sensor, ws";
    let (mut stream_rates, mut batch_rates) = (Vec::new(), Vec::new());
    let (mut stream_rows, mut batch_rows) = (0, 0);
    for _ in 0..5 {
        let mut p = project(&sql).await;
        let start = Instant::now();
        let mut out = 0;
        let now = Instant::now();
        for b in &batches {
            out += p
                .dataflow
                .on_batch(StreamId::new(0), b.clone(), now)
                .iter()
                .map(|o| o.batch.num_rows())
                .sum::<usize>();
        }
        out += p
            .dataflow
            .on_source_end(StreamId::new(0))
            .iter()
            .map(|o| o.batch.num_rows())
            .sum::<usize>();
        stream_rates.push(rows / start.elapsed().as_secs_f64());
        stream_rows = out;

        let start = Instant::now();
        let res = ctx.sql(batch_sql).await.unwrap().collect().await.unwrap();
        batch_rates.push(rows / start.elapsed().as_secs_f64());
        batch_rows = res.iter().map(|b| b.num_rows()).sum();
    }
    assert_eq!(
        stream_rows, batch_rows,
        "streaming and batch produce the same number of result rows"
    );
    let (s, b) = (median(stream_rates), median(batch_rates));
    println!(
        "throughput: 1 s tumbling window, {GROUPS} groups, count/avg/min/max/stddev, {} rows in {}-row batches, one core",
        rows as u64, BATCH
    );
    println!(
        "  streaming (weir):          {:>6.2} M rows/s (median of 5)",
        s / 1e6
    );
    println!(
        "  batch (DataFusion, limit): {:>6.2} M rows/s (median of 5)",
        b / 1e6
    );
    println!("  ratio streaming/batch:     {:>6.1} %", 100.0 * s / b);
    println!("  result rows: {stream_rows} (both)");
}

/// Feeds `batches` to a fresh project of `sql` (with `limits`); returns rows per second.
async fn run_once(
    sql: &str,
    batches: &[RecordBatch],
    limits: Option<weir_engine::exec::budget::StateLimits>,
) -> f64 {
    let mut p = project(sql).await;
    if let Some(l) = limits {
        p.dataflow.set_state_limits(l);
    }
    let start = Instant::now();
    let now = Instant::now();
    let mut out = 0;
    for b in batches {
        out += p.dataflow.on_batch(StreamId::new(0), b.clone(), now).len();
    }
    out += p.dataflow.on_source_end(StreamId::new(0)).len();
    assert!(out > 0);
    let c = p.dataflow.pipeline_counts(PipelineId::new(0));
    assert_eq!(c.windows_emitted_early, 0, "the budget is never reached");
    (batches.len() * BATCH) as f64 / start.elapsed().as_secs_f64()
}

async fn budget_accounting() {
    use weir_engine::exec::budget::{StateLimits, StatePolicy};
    let (sql, _, batches) = throughput_input().await;
    let limits = StateLimits {
        max_bytes: Some(1 << 40),
        policy: StatePolicy::EmitEarly,
    };
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        off.push(run_once(&sql, &batches, None).await);
        on.push(run_once(&sql, &batches, Some(limits)).await);
    }
    let (off, on) = (median(off), median(on));
    println!(
        "state budget accounting: the throughput pipeline with --max-state-bytes 1TiB (never reached) vs none, alternated"
    );
    println!(
        "  accounting off: {:>6.2} M rows/s (median of 7)",
        off / 1e6
    );
    println!("  accounting on:  {:>6.2} M rows/s (median of 7)", on / 1e6);
    println!("  ratio on/off:   {:>6.1} %", 100.0 * on / off);
}

async fn state_memory() {
    let sql = format!(
        "{SOURCE}INSERT INTO out SELECT machine, sensor, window_start, window_end, count(*) AS n, avg(value) AS mean, min(value) AS lo, max(value) AS hi, stddev(value) AS sd \
         FROM TUMBLE(t, ts, INTERVAL '1' HOUR) GROUP BY machine, sensor, window_start, window_end;"
    );
    let mut p = project(&sql).await;
    let schema = p.dataflow.stream_schema(StreamId::new(0)).clone();
    let keys = key_columns(&schema);
    let rate = 100_000u64;
    let per_minute = (rate * 60) as usize / BATCH;
    println!(
        "state memory: 1 h tumbling window, {GROUPS} groups, 100k rows/s of event time, 10 simulated minutes"
    );
    println!("  before: RSS {} MiB", rss_kib("VmRSS:") / 1024);
    let now = Instant::now();
    let mut rss = Vec::new();
    for minute in 1..=10 {
        for n in (minute - 1) * per_minute..minute * per_minute {
            let out =
                p.dataflow
                    .on_batch(StreamId::new(0), make_batch(&schema, &keys, n, rate), now);
            assert!(out.is_empty(), "the hour does not close");
        }
        let state = p.dataflow.state_bytes(PipelineId::new(0));
        let r = rss_kib("VmRSS:") / 1024;
        rss.push(r);
        println!(
            "  minute {minute:>2}: {:>4} M rows seen, state {:>5} KiB, RSS {r} MiB",
            (minute * per_minute * BATCH) / 1_000_000,
            state / 1024
        );
    }
    println!(
        "  peak RSS (VmHWM): {} MiB; RSS growth from minute 1 to 10: {} MiB",
        rss_kib("VmHWM:") / 1024,
        rss[9] as i64 - rss[0] as i64
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let which = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    if which.as_deref().is_none_or(|w| w == "memory") {
        // first, so the peak is not the throughput bench's input batches
        state_memory().await;
    }
    if which.as_deref().is_none_or(|w| w == "throughput") {
        throughput().await;
    }
    if which.as_deref().is_none_or(|w| w == "budget") {
        budget_accounting().await;
    }
}
