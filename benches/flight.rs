//! Flight SQL under load (issue: live state over Flight SQL).
//!
//! The generator feeds 40 machine × sensor series into a 1 s tumbling window whose results
//! go to a Parquet file sink and into the live tables. Each phase runs the engine for a few
//! seconds with the Flight SQL server on loopback; in the "querying" phases a client (its
//! own thread, over gRPC like any other) runs a point query on `latest` and an aggregate
//! over `history` in a loop, alternately, and records each one's latency (GetFlightInfo +
//! DoGet + decoding). Ingestion is measured from the source's row counter. Quiet and
//! querying phases alternate; medians are reported, for the target rate of 500,000 rows/s
//! and for an unthrottled generator (the headroom).
//!
//! Two more comparisons (issue: bounded resources), each alternating its two phases:
//! - churning keys: a window per row (`GROUP BY seq`), unthrottled, with the live tables and
//!   Flight SQL on against off: ingestion and resident memory at the end of the phase (the
//!   `latest` table is bounded by `--live-latest-keys` and kept off the dataflow's thread);
//! - a hostile query: the unthrottled generator while a client runs a CPU-bound query in a
//!   loop (each stopped by the query timeout) against no client.
//!
//! Run: `cargo bench --bench flight` (or `-- churn`, `-- hostile`, `-- load`).
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

const CHURN: &str = "CREATE SOURCE gen (machine VARCHAR, ts TIMESTAMP, value DOUBLE, seq BIGINT) \
     WITH (connector = 'generator', machines = '10', rate = 'max', event_time = 'ts', watermark = '20ms');\n\
     CREATE SINK out WITH (connector = 'file', path = 'OUT', format = 'parquet');\n\
     CREATE VIEW per_row AS SELECT seq, window_start, window_end, count(*) AS n \
     FROM TUMBLE(gen, ts, INTERVAL '100' MILLISECOND) GROUP BY seq, window_start, window_end;\n\
     INSERT INTO out SELECT seq, window_end FROM per_row;\n";
const HOSTILE: &str =
    "SELECT count(*) FROM generate_series(1, 100000000000) AS t(x) WHERE x % 7 = 3";

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
    /// Resident memory at the end of the measurement.
    rss_kib: u64,
}

/// A Flight SQL client of the server at `addr`, with the token.
async fn connect(addr: SocketAddr) -> FlightSqlServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = FlightSqlServiceClient::new(channel);
    c.set_token(TOKEN.into());
    c
}

/// Runs `work` with a client of `addr` on a thread (and runtime) of its own.
fn on_client_thread<F, Fut>(
    addr: SocketAddr,
    work: F,
) -> std::thread::JoinHandle<(Vec<f64>, Vec<f64>)>
where
    F: FnOnce(FlightSqlServiceClient<tonic::transport::Channel>) -> Fut + Send + 'static,
    Fut: Future<Output = (Vec<f64>, Vec<f64>)>,
{
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move { work(connect(addr).await).await })
    })
}

/// Queries in a loop until `stop`; latencies in ms per query kind.
fn client(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Vec<f64>, Vec<f64>)> {
    on_client_thread(addr, move |mut c| async move {
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
}

/// What a phase's client does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Client {
    /// No client.
    None,
    /// Point and aggregate queries in a loop.
    Queries,
    /// A CPU-bound query in a loop, each stopped by the timeout.
    Hostile,
}

/// Runs `sql` (its sink writing under a temporary directory) for a phase, with the live
/// tables and Flight SQL when `live`, and `client` querying.
async fn run_phase(sql: &str, live: bool, client_kind: Client) -> Phase {
    let dir = tempfile::tempdir().unwrap();
    let sql = sql.replace("OUT", &dir.path().join("out").display().to_string());
    let file = parse_file("bench.sql", &sql, &|_| None).expect("parses");
    let project = weir_engine::compile(vec![file], &weir_connectors::all(), true)
        .await
        .expect("compiles");
    let hub = LiveHub::new(LiveSettings::default());
    let server = live.then(|| {
        flight::start(
            FlightSettings {
                addr: "127.0.0.1:0".parse().unwrap(),
                token: Some(TOKEN.into()),
                tls: None,
                queries: weir_engine::live::QueryLimits {
                    timeout: Duration::from_secs(2),
                    ..Default::default()
                },
            },
            Arc::clone(&hub),
            RunStatus::new(),
        )
        .unwrap()
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut control = RunControl::new(stop_rx);
    control.status = RunStatus::new();
    control.live = live.then(|| Arc::clone(&hub));
    let source = Arc::clone(&control.status);
    let running = tokio::spawn(run(project, control));
    tokio::time::sleep(WARMUP).await;
    let stop = Arc::new(AtomicBool::new(false));
    let queries = match (client_kind, &server) {
        (Client::Queries, Some(s)) => Some(client(s.addr(), Arc::clone(&stop))),
        (Client::Hostile, Some(s)) => Some(hostile(s.addr(), Arc::clone(&stop))),
        _ => None,
    };
    let rows = || -> u64 { source.sources().iter().map(|t| t.counts().rows).sum() };
    let (rows0, t0) = (rows(), Instant::now());
    tokio::time::sleep(MEASURE).await;
    let (rows1, t1) = (rows(), Instant::now());
    let rss_kib = common::rss_kib("VmRSS:");
    stop.store(true, Ordering::Relaxed);
    let (point_ms, aggregate_ms) = queries.map(|q| q.join().unwrap()).unwrap_or_default();
    let _ = stop_tx.send(true);
    running.await.unwrap();
    drop(server);
    Phase {
        rows_per_s: (rows1 - rows0) as f64 / (t1 - t0).as_secs_f64(),
        point_ms,
        aggregate_ms,
        rss_kib,
    }
}

async fn phase(rate: &str, querying: bool) -> Phase {
    let client = if querying {
        Client::Queries
    } else {
        Client::None
    };
    run_phase(&pipeline(rate, "OUT"), true, client).await
}

/// Runs the hostile query in a loop until `stop`; how long each took, in ms.
fn hostile(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Vec<f64>, Vec<f64>)> {
    on_client_thread(addr, move |mut c| async move {
        let mut took = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            // planned at GetFlightInfo, run (and stopped) at DoGet
            let info = c.execute(HOSTILE.into(), None).await.unwrap();
            let ticket = info.endpoint[0].ticket.clone().unwrap();
            let e = match c.do_get(ticket).await {
                Err(e) => e.to_string(),
                Ok(s) => s.try_collect::<Vec<_>>().await.unwrap_err().to_string(),
            };
            assert!(e.contains("--flight-query-timeout"), "{e}");
            took.push(t.elapsed().as_secs_f64() * 1e3);
        }
        (took, vec![])
    })
}

/// Churning keys with live tables and Flight SQL on and off; a hostile query and none.
async fn bounds() {
    let (mut on, mut off, mut rss_on, mut rss_off) = (vec![], vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        let p = run_phase(CHURN, false, Client::None).await;
        off.push(p.rows_per_s);
        rss_off.push(p.rss_kib as f64 / 1024.0);
        let p = run_phase(CHURN, true, Client::None).await;
        on.push(p.rows_per_s);
        rss_on.push(p.rss_kib as f64 / 1024.0);
    }
    let (on, off) = (median(on), median(off));
    println!("churning keys (a window per row), unthrottled:");
    println!(
        "  live tables and Flight off: {off:>12.0} rows/s, RSS {:>6.1} MiB",
        median(rss_off)
    );
    println!(
        "  live tables and Flight on:  {on:>12.0} rows/s, RSS {:>6.1} MiB  ({:.1}% of off)",
        median(rss_on),
        on / off * 100.0
    );
    let (mut quiet, mut busy) = (vec![], vec![]);
    for _ in 0..ROUNDS {
        let sql = pipeline("max", "OUT");
        quiet.push(run_phase(&sql, true, Client::None).await.rows_per_s);
        busy.push(run_phase(&sql, true, Client::Hostile).await.rows_per_s);
    }
    let (quiet, busy) = (median(quiet), median(busy));
    println!("a CPU-bound query in a loop (2 s timeout), unthrottled generator:");
    println!("  ingestion, no client:     {quiet:>12.0} rows/s");
    println!(
        "  ingestion, hostile query: {busy:>12.0} rows/s  ({:.1}% of no client)",
        busy / quiet * 100.0
    );
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
    let which = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    if which.as_deref().is_none_or(|w| w == "load") {
        compare("generator at 500,000 rows/s", "500000").await;
        compare("generator unthrottled", "max").await;
    }
    if which
        .as_deref()
        .is_none_or(|w| w == "churn" || w == "hostile")
    {
        bounds().await;
    }
}
