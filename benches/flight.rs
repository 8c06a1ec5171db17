//! Flight SQL under load (issue: live state over Flight SQL).
//!
//! The generator feeds 40 machine × sensor series into a 1 s tumbling window whose results
//! go to a Parquet file sink and into the live tables. Each phase runs the engine for a few
//! seconds with the Flight SQL server on loopback; in the "querying" phases a client (its
//! own thread, over gRPC like any other) runs a point query on `latest` and an aggregate
//! over `history` in a loop, alternately, and records each one's latency (GetFlightInfo +
//! DoGet + decoding). Ingestion is measured from the live snapshots' row counts and their
//! publication times. Quiet and querying phases alternate; medians are reported, for the
//! target rate of 500,000 rows/s and for an unthrottled generator (the headroom).
//!
//! Run: `cargo bench --bench flight`.
#![allow(clippy::unwrap_used)] // a test (or bench) fails by panicking

use weir_test_support::bench as common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow_flight::sql::client::FlightSqlServiceClient;
use common::median;
use futures::TryStreamExt;
use tokio::sync::watch;
use weir_engine::flight::{self, FlightSettings};
use weir_engine::live::{LiveHub, LiveSettings};
use weir_engine::observe::RunStatus;
use weir_engine::parse::parse_file;
use weir_engine::runtime::{RunControl, run};

const TOKEN: &str = "bench-token";
const POINT: &str = "SELECT * FROM latest.per_second WHERE machine = 'M3' AND sensor = 'vib_x'";
const AGGREGATE: &str = "SELECT machine, count(*) AS windows, avg(mean) AS mean, max(peak) AS peak, sum(n) AS rows FROM history.per_second GROUP BY machine ORDER BY machine";
const WARMUP: Duration = Duration::from_secs(2);
const MEASURE: Duration = Duration::from_secs(5);
const ROUNDS: usize = 3;

fn pipeline(rate: &str, out: &str) -> String {
    format!(
        "CREATE SOURCE gen (line VARCHAR, machine VARCHAR, sensor VARCHAR, ts TIMESTAMP, value DOUBLE) \
         WITH (connector = 'generator', machines = '10', sensors = 'vib_x,vib_y,temp,current', \
               rate = '{rate}', event_time = 'ts', watermark = '100ms');\n\
         CREATE SINK out WITH (connector = 'file', path = '{out}', format = 'parquet');\n\
         CREATE VIEW per_second AS SELECT machine, sensor, window_start, window_end, \
             count(*) AS n, avg(value) AS mean, max(abs(value)) AS peak \
         FROM TUMBLE(gen, ts, INTERVAL '1' SECOND) GROUP BY machine, sensor, window_start, window_end;\n\
         INSERT INTO out SELECT * FROM per_second;\n"
    )
}

/// What one phase measured.
struct Phase {
    rows_per_s: f64,
    point_ms: Vec<f64>,
    aggregate_ms: Vec<f64>,
}

/// (rows read, when the snapshot was taken in ns).
fn ingested(hub: &LiveHub) -> (u64, i64) {
    let s = hub.snapshot();
    (s.sources.first().map_or(0, |s| s.counts.rows), s.taken)
}

/// Queries in a loop until `stop`; latencies in ms per query kind.
fn client(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Vec<f64>, Vec<f64>)> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut c = FlightSqlServiceClient::new(channel);
            c.set_token(TOKEN.into());
            let (mut point, mut aggregate) = (Vec::new(), Vec::new());
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (sql, into) = if n.is_multiple_of(2) {
                    (POINT, &mut point)
                } else {
                    (AGGREGATE, &mut aggregate)
                };
                n += 1;
                let t = Instant::now();
                let info = c.execute(sql.into(), None).await.unwrap();
                let mut rows = 0;
                for ep in info.endpoint {
                    let s = c.do_get(ep.ticket.unwrap()).await.unwrap();
                    let batches: Vec<_> = s.try_collect().await.unwrap();
                    rows += batches.iter().map(|b| b.num_rows()).sum::<usize>();
                }
                into.push(t.elapsed().as_secs_f64() * 1e3);
                assert!(rows > 0, "{sql}: no rows");
            }
            (point, aggregate)
        })
    })
}

async fn phase(rate: &str, querying: bool) -> Phase {
    let dir = tempfile::tempdir().unwrap();
    let sql = pipeline(rate, &dir.path().join("out").display().to_string());
    let file = parse_file("bench.sql", &sql, &|_| None).expect("parses");
    let project = weir_engine::compile(vec![file], &weir_connectors::all(), true)
        .await
        .expect("compiles");
    let hub = LiveHub::new(LiveSettings::default());
    let server = flight::start(
        FlightSettings {
            addr: "127.0.0.1:0".parse().unwrap(),
            token: Some(TOKEN.into()),
            tls: None,
            queries: Default::default(),
        },
        Arc::clone(&hub),
        RunStatus::new(),
    )
    .unwrap();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut control = RunControl::new(stop_rx);
    control.status = RunStatus::new();
    control.live = Some(Arc::clone(&hub));
    let running = tokio::spawn(run(project, control));
    tokio::time::sleep(WARMUP).await;
    let stop = Arc::new(AtomicBool::new(false));
    let queries = querying.then(|| client(server.addr(), Arc::clone(&stop)));
    let (rows0, t0) = ingested(&hub);
    tokio::time::sleep(MEASURE).await;
    let (rows1, t1) = ingested(&hub);
    stop.store(true, Ordering::Relaxed);
    let (point_ms, aggregate_ms) = queries.map(|q| q.join().unwrap()).unwrap_or_default();
    let _ = stop_tx.send(true);
    running.await.unwrap();
    drop(server);
    Phase {
        rows_per_s: (rows1 - rows0) as f64 / ((t1 - t0) as f64 / 1e9),
        point_ms,
        aggregate_ms,
    }
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

async fn compare(label: &str, rate: &str) {
    let (mut quiet, mut busy) = (Vec::new(), Vec::new());
    let (mut p50p, mut p99p, mut p50a, mut p99a, mut counts) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        quiet.push(phase(rate, false).await.rows_per_s);
        let q = phase(rate, true).await;
        busy.push(q.rows_per_s);
        counts.push((q.point_ms.len() + q.aggregate_ms.len()) as f64);
        p50p.push(percentile(q.point_ms.clone(), 0.5));
        p99p.push(percentile(q.point_ms, 0.99));
        p50a.push(percentile(q.aggregate_ms.clone(), 0.5));
        p99a.push(percentile(q.aggregate_ms, 0.99));
    }
    let (quiet, busy) = (median(quiet), median(busy));
    println!("{label}:");
    println!("  ingestion, no client:        {quiet:>12.0} rows/s");
    println!(
        "  ingestion, client querying:  {busy:>12.0} rows/s  ({:.1}% of no client)",
        busy / quiet * 100.0
    );
    println!(
        "  queries per {}s phase:        {:>12.0}",
        MEASURE.as_secs(),
        median(counts)
    );
    println!(
        "  point query latency:     p50 {:>7.2} ms  p99 {:>7.2} ms",
        median(p50p),
        median(p99p)
    );
    println!(
        "  aggregate query latency: p50 {:>7.2} ms  p99 {:>7.2} ms",
        median(p50a),
        median(p99a)
    );
}

#[tokio::main]
async fn main() {
    println!(
        "Flight SQL under load: medians of {ROUNDS} rounds ({}s measured per phase after {}s warm-up)",
        MEASURE.as_secs(),
        WARMUP.as_secs()
    );
    compare("generator at 500,000 rows/s", "500000").await;
    compare("generator unthrottled", "max").await;
}
