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
//! 4. Checkpoints (issue: crash safety): the throughput pipeline run by the real runtime
//!    (a source replaying the batches, a Parquet file sink) with checkpoints every second
//!    against none, alternated; a checkpoint's size and duration (state taken, files
//!    written and fsynced) at 4,000 and 1,000,000 groups of a 1-hour window; and recovery:
//!    reading the newest checkpoint, restoring it and emitting the first restored window.
//! 5. Lookup join (issue: joins): the throughput pipeline's 1 s window over rows joined
//!    with a 10,000-row asset table (a hash lookup per row, a table column in an aggregate)
//!    against the same pipeline without the join, alternated in one process.
//! 6. Interval join (issue: joins): two streams of 100k rows/s each (100,000 ids a second,
//!    so each row meets about two of the other stream) joined on the id within ±1 s,
//!    against the same rows through a stateless UNION ALL (the cost of moving them), in one
//!    process: input rows per second and the join's peak state.
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

/// One run of the throughput pipeline through the runtime for `secs` seconds (replay source,
/// Parquet file sink), with checkpoints every second when `checkpoints`; rows per second.
async fn runtime_rate(batches: &Arc<Vec<RecordBatch>>, secs: u64, checkpoints: bool) -> f64 {
    use weir_engine::checkpoint::CheckpointStore;
    use weir_engine::runtime::{RunCheckpoints, RunControl, run};
    let dir = tempfile::tempdir().unwrap();
    let sql = format!(
        "CREATE SOURCE t (machine VARCHAR, sensor VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (connector = 'replay', event_time = 'ts');
         CREATE SINK out WITH (connector = 'file', path = '{}', format = 'parquet');
         INSERT INTO out SELECT machine, sensor, window_start, window_end, count(*) AS n, avg(value) AS mean, min(value) AS lo, max(value) AS hi, stddev(value) AS sd
         FROM TUMBLE(t, ts, INTERVAL '1' SECOND) GROUP BY machine, sensor, window_start, window_end;",
        dir.path().join("out").display()
    );
    let span_ns = (batches.len() * BATCH) as i64 * 10_000; // 100k rows per second of event time
    let project = project_with_replay(
        &sql,
        ReplayFactory {
            batches: Arc::clone(batches),
            span_ns,
            duration: std::time::Duration::from_secs(secs),
        },
    )
    .await;
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut control = RunControl::new(stop);
    if checkpoints {
        control.checkpoints = Some(RunCheckpoints {
            store: Arc::new(CheckpointStore::open(&dir.path().join("state"), false).unwrap()),
            interval: std::time::Duration::from_secs(1),
            keep_open_windows: true,
            telemetry: Arc::default(),
        });
    }
    let summary = run(project, control).await;
    if checkpoints {
        let c = summary.checkpoints.as_ref().unwrap();
        assert!(c.taken >= secs - 1 && c.failed == 0, "{c:?}");
    }
    summary.rows_in() as f64 / summary.processing.as_secs_f64()
}

/// A 1-hour window holding `groups` groups (machine × sensor), as a fed project.
async fn hour_window(groups: usize) -> weir_engine::Project {
    use arrow::array::{ArrayRef, Float64Array, StringArray, TimestampNanosecondArray};
    let sql = format!(
        "{SOURCE}INSERT INTO out SELECT machine, sensor, window_start, window_end, count(*) AS n, avg(value) AS mean, min(value) AS lo, max(value) AS hi, stddev(value) AS sd \
         FROM TUMBLE(t, ts, INTERVAL '1' HOUR) GROUP BY machine, sensor, window_start, window_end;"
    );
    let mut p = project(&sql).await;
    let schema = p.dataflow.stream_schema(StreamId::new(0)).clone();
    let now = Instant::now();
    // every group twice, in batches of BATCH rows, within the first hour
    for pass in 0..2 {
        for start in (0..groups).step_by(BATCH) {
            let n = BATCH.min(groups - start);
            let m: ArrayRef = Arc::new(StringArray::from_iter_values(
                (start..start + n).map(|g| format!("M{:07}", g / SENSORS)),
            ));
            let s: ArrayRef = Arc::new(StringArray::from_iter_values(
                (start..start + n).map(|g| format!("s{}", g % SENSORS)),
            ));
            let cols: Vec<ArrayRef> = vec![
                arrow::compute::cast(&m, schema.field(0).data_type()).unwrap(),
                arrow::compute::cast(&s, schema.field(1).data_type()).unwrap(),
                Arc::new(TimestampNanosecondArray::from_iter_values(
                    (0..n as i64).map(|i| (pass * 1000 + i) * 1_000_000),
                )),
                Arc::new(Float64Array::from_iter_values(
                    (0..n).map(|i| (i % 1000) as f64 * 0.01),
                )),
            ];
            let b = RecordBatch::try_new(schema.clone(), cols).unwrap();
            assert!(p.dataflow.on_batch(StreamId::new(0), b, now).is_empty());
        }
    }
    p
}

/// Size and duration of a checkpoint of a 1-hour window with `groups` groups, and the time
/// to restore it and emit the window.
async fn checkpoint_size(groups: usize) {
    use weir_engine::checkpoint::{CheckpointStore, Manifest, Taken, manifest::FORMAT};
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path(), false).unwrap();
    let mut p = hour_window(groups).await;
    let (mut pause, mut write, mut bytes) = (Vec::new(), Vec::new(), 0);
    for number in 1..=5 {
        let start = Instant::now();
        let mut files = Vec::new();
        let (streams, pipelines) = p.dataflow.capture(&mut files).unwrap();
        assert_eq!(pipelines[0].groups, groups);
        pause.push(start.elapsed().as_secs_f64());
        let taken = Taken {
            manifest: Manifest {
                format: FORMAT,
                number,
                lineage: store.lineage().to_string(),
                taken_ns: weir_engine::clock::now_nanos(),
                version: "bench".into(),
                streams,
                pipelines,
                sources: vec![],
                sinks: vec![],
            },
            files,
        };
        let start = Instant::now();
        bytes = store.write(&taken).unwrap();
        write.push(start.elapsed().as_secs_f64());
        store.prune(2);
    }
    // recovery: read and verify the newest, restore it into a new dataflow, and emit the
    // window (a row an hour later closes it)
    let mut recover = Vec::new();
    for _ in 0..3 {
        let mut fresh = project(&p_sql()).await;
        let schema = fresh.dataflow.stream_schema(StreamId::new(0)).clone();
        let closing = make_batch(&schema, &key_columns(&schema), 450_000, 100);
        let start = Instant::now();
        let mut restored = store.newest().unwrap();
        let report = fresh.dataflow.restore(&mut restored, &[false]);
        assert_eq!(report.groups, groups);
        let out = fresh
            .dataflow
            .on_batch(StreamId::new(0), closing, Instant::now());
        let rows: usize = out.iter().map(|o| o.batch.num_rows()).sum();
        recover.push(start.elapsed().as_secs_f64());
        assert_eq!(rows, groups, "the restored window is emitted whole");
    }
    println!(
        "  {groups:>9} groups: {:>7.1} MiB on disk, dataflow paused {:>7.1} ms, written and fsynced in {:>7.1} ms, recovered to the first window in {:>7.1} ms (medians)",
        bytes as f64 / (1 << 20) as f64,
        median(pause) * 1e3,
        median(write) * 1e3,
        median(recover) * 1e3
    );
}

/// The query of [`hour_window`].
fn p_sql() -> String {
    format!(
        "{SOURCE}INSERT INTO out SELECT machine, sensor, window_start, window_end, count(*) AS n, avg(value) AS mean, min(value) AS lo, max(value) AS hi, stddev(value) AS sd \
         FROM TUMBLE(t, ts, INTERVAL '1' HOUR) GROUP BY machine, sensor, window_start, window_end;"
    )
}

async fn checkpoints() {
    let (_, _, batches) = throughput_input().await;
    let batches = Arc::new(batches);
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        off.push(runtime_rate(&batches, 4, false).await);
        on.push(runtime_rate(&batches, 4, true).await);
    }
    let (off, on) = (median(off), median(on));
    println!(
        "checkpoints: the throughput pipeline through the runtime (Parquet file sink), 4 s runs alternated"
    );
    println!(
        "  no checkpoints:           {:>6.2} M rows/s (median of 5)",
        off / 1e6
    );
    println!(
        "  a checkpoint every 1 s:   {:>6.2} M rows/s (median of 5)",
        on / 1e6
    );
    println!("  ratio:                    {:>6.1} %", 100.0 * on / off);
    println!("checkpoint of a 1-hour tumbling window with 5 aggregates:");
    checkpoint_size(GROUPS).await;
    checkpoint_size(1_000_000).await;
}

/// The throughput input joined with a 10,000-row asset table before a 1 s window, and the
/// same without the join (a constant in place of the table's column).
async fn lookup_join() {
    let (_, _, batches) = throughput_input().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("assets.csv");
    let mut csv = String::from("machine,class,rms_limit,site\n");
    for m in 0..10_000 {
        csv.push_str(&format!(
            "M{m:03},{},{},{}\n",
            ["group1_rigid", "group2_rigid", "group2_flexible"][m % 3],
            1.0 + (m % 7) as f64,
            ["north", "south"][m % 2]
        ));
    }
    std::fs::write(&path, csv).unwrap();
    let table = format!(
        "CREATE TABLE assets (machine VARCHAR PRIMARY KEY, class VARCHAR, rms_limit DOUBLE, site VARCHAR) WITH (connector = 'file', path = '{}');\n",
        path.display()
    );
    let joined = format!(
        "{SOURCE}{table}INSERT INTO out SELECT t.machine, t.sensor, window_start, window_end, count(*) AS n, avg(value) AS mean, max(value - a.rms_limit) AS over \
         FROM TUMBLE(t, ts, INTERVAL '1' SECOND) t JOIN assets a ON t.machine = a.machine GROUP BY t.machine, t.sensor, window_start, window_end;"
    );
    let plain = format!(
        "{SOURCE}INSERT INTO out SELECT machine, sensor, window_start, window_end, count(*) AS n, avg(value) AS mean, max(value - 1.0) AS over \
         FROM TUMBLE(t, ts, INTERVAL '1' SECOND) GROUP BY machine, sensor, window_start, window_end;"
    );
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        off.push(run_once(&plain, &batches, None).await);
        on.push(run_once(&joined, &batches, None).await);
    }
    let (off, on) = (median(off), median(on));
    println!(
        "lookup join: the 1 s window over {GROUPS} groups with each row joined to a 10,000-row asset table vs no join, alternated"
    );
    println!("  no join:       {:>6.2} M rows/s (median of 7)", off / 1e6);
    println!("  lookup join:   {:>6.2} M rows/s (median of 7)", on / 1e6);
    println!("  ratio join/no: {:>6.1} %", 100.0 * on / off);
}

/// Batch `n` of an interval-join input stream: ids cycling through 100,000 a second,
/// 100k rows per second of event time, `shift` ns later than the other stream.
fn id_batch(schema: &SchemaRef, n: usize, shift: i64) -> RecordBatch {
    use arrow::array::{Float64Array, Int64Array, TimestampNanosecondArray};
    let first = (n * BATCH) as i64;
    let ids = Int64Array::from_iter_values((0..BATCH as i64).map(|i| (first + i) % 100_000));
    let ts = TimestampNanosecondArray::from_iter_values(
        (0..BATCH as i64).map(|i| (first + i) * 10_000 + shift),
    );
    let v = Float64Array::from_iter_values((0..BATCH).map(|i| i as f64));
    RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(ids), Arc::new(ts), Arc::new(v)],
    )
    .unwrap()
}

/// Feeds both streams alternately to a project of `sql`: input rows per second, output
/// rows and the peak state of pipeline 0.
async fn two_stream_rate(sql: &str, batches: &[(RecordBatch, RecordBatch)]) -> (f64, usize, usize) {
    let mut p = project(sql).await;
    let now = Instant::now();
    let start = Instant::now();
    let (mut out, mut peak) = (0, 0);
    for (a, b) in batches {
        for (s, batch) in [(0, a), (1, b)] {
            out += p
                .dataflow
                .on_batch(StreamId::new(s), batch.clone(), now)
                .iter()
                .map(|o| o.batch.num_rows())
                .sum::<usize>();
        }
        peak = peak.max(p.dataflow.state_bytes(PipelineId::new(0)));
    }
    let rate = (2 * batches.len() * BATCH) as f64 / start.elapsed().as_secs_f64();
    (rate, out, peak)
}

async fn interval_join() {
    let sources = "CREATE SOURCE a (id BIGINT, ts TIMESTAMP, value DOUBLE) WITH (connector = 'bench', event_time = 'ts', watermark = '100ms');\n\
         CREATE SOURCE b (id BIGINT, ts TIMESTAMP, value DOUBLE) WITH (connector = 'bench', event_time = 'ts', watermark = '100ms');\n\
         CREATE SINK out WITH (connector = 'stdout');\n";
    let joined = format!(
        "{sources}INSERT INTO out SELECT a.id, a.ts, b.ts AS b_ts, a.value, b.value AS b_value FROM a JOIN b \
         ON a.id = b.id AND b.ts BETWEEN a.ts - INTERVAL '1' SECOND AND a.ts + INTERVAL '1' SECOND;"
    );
    let union = format!(
        "{sources}INSERT INTO out SELECT id, ts, value FROM a UNION ALL SELECT id, ts, value FROM b;"
    );
    let probe = project(&joined).await;
    let schema = probe.dataflow.stream_schema(StreamId::new(0)).clone();
    // 60 s of event time per stream
    let batches: Vec<(RecordBatch, RecordBatch)> = (0..732)
        .map(|n| (id_batch(&schema, n, 0), id_batch(&schema, n, 3_000)))
        .collect();
    let (mut join_rates, mut union_rates) = (Vec::new(), Vec::new());
    let (mut join_out, mut peak) = (0, 0);
    for _ in 0..5 {
        let (r, out, p) = two_stream_rate(&union, &batches).await;
        assert!(out > 0 && p == 0);
        union_rates.push(r);
        let (r, out, p) = two_stream_rate(&joined, &batches).await;
        join_rates.push(r);
        (join_out, peak) = (out, peak.max(p));
    }
    let (j, u) = (median(join_rates), median(union_rates));
    let rows = 2 * batches.len() * BATCH;
    println!(
        "interval join: two streams of 100k rows/s (100,000 ids a second), joined on id within ±1 s, {rows} input rows"
    );
    println!(
        "  UNION ALL (no join):  {:>6.2} M input rows/s (median of 5)",
        u / 1e6
    );
    println!(
        "  interval join:        {:>6.2} M input rows/s (median of 5)",
        j / 1e6
    );
    println!("  ratio join/union:     {:>6.1} %", 100.0 * j / u);
    println!(
        "  joined rows: {join_out} ({:.2} per input row); peak join state: {:.1} MiB",
        join_out as f64 / rows as f64,
        peak as f64 / (1 << 20) as f64
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
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
    if which.as_deref().is_none_or(|w| w == "checkpoint") {
        checkpoints().await;
    }
    if which.as_deref().is_none_or(|w| w == "lookup") {
        lookup_join().await;
    }
    if which.as_deref().is_none_or(|w| w == "interval") {
        interval_join().await;
    }
}
