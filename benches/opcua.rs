//! OPC UA subscriptions: values/s delivered into a pipeline by `weir run` from 10,000
//! monitored items sampled every 100 ms on a local OPC UA server (async-opcua's server, in
//! this process, on its own runtime), and Weir's CPU per value (user + system time of the
//! `weir` process); in the same run, as the baseline, the generator source feeding the same
//! pipeline the same 100,000 rows/s.
//!
//! The pipeline counts values in 1 s event-time windows; values/s is the median count of
//! the windows that closed inside the measured period. Alternating order, median of 3
//! rounds.
//!
//! Run: `cargo bench --bench opcua`.
#![allow(clippy::unwrap_used)] // a test (or bench) fails by panicking

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{cpu_ticks, median, ticks_per_second};
use weir_opcua_testserver::{PlantConfig, PlantServer};

use weir_test_support::bench as common;
use weir_test_support::http;

const ITEMS: u32 = 10_000;
const WARM_UP: Duration = Duration::from_secs(4);
const MEASURE: Duration = Duration::from_secs(8);
const ROUNDS: usize = 3;

/// Counts the values of source `v` per 1 s window of `time`.
fn count(time: &str) -> String {
    format!(
        "CREATE SINK out WITH (connector = 'stdout', format = 'ndjson');
         INSERT INTO out SELECT window_start, count(*) AS n FROM TUMBLE(v, {time}, INTERVAL '1' SECOND)
         GROUP BY window_start, window_end;"
    )
}

fn opcua_pipeline(url: &str, pki: &Path) -> String {
    format!(
        "CREATE SOURCE v (node TEXT, value DOUBLE, source_timestamp TIMESTAMP) WITH (
            connector = 'opcua', url = '{url}', pki_dir = '{}', browse = 'ns=2;s=Bulk',
            sampling_interval = '100ms', publishing_interval = '500ms', queue_size = '10',
            event_time = 'source_timestamp', watermark = '1s');
         {}",
        pki.display(),
        count("source_timestamp")
    )
}

fn generator_pipeline() -> String {
    format!(
        "CREATE SOURCE v (line TEXT, machine TEXT, sensor TEXT, ts TIMESTAMP, value DOUBLE) WITH (
            connector = 'generator', machines = '2500', sensors = 'a,b,c,d', interval = '100ms',
            rate = '{}', event_time = 'ts', watermark = '1s');
         {}",
        ITEMS * 10,
        count("ts")
    )
}

struct Measured {
    values_per_s: f64,
    cpu_share: f64,
    cpu_us_per_value: f64,
}

fn windows(stdout: &str) -> Vec<(String, u64)> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            (
                v["window_start"].as_str().unwrap_or_default().to_string(),
                v["n"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

fn run(pipeline: &str, ready: &str, tick_s: f64) -> Measured {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.sql"), pipeline).unwrap();
    let out = dir.path().join("stdout.txt");
    let log = dir.path().join("stderr.txt");
    let mut weir: Child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "pipeline.sql"])
        .current_dir(dir.path())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains(ready)
    {
        assert!(
            Instant::now() < deadline,
            "weir did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(WARM_UP);
    let seen = windows(&std::fs::read_to_string(&out).unwrap_or_default()).len();
    let (c0, t0) = (cpu_ticks(weir.id()), Instant::now());
    std::thread::sleep(MEASURE);
    let (c1, secs) = (cpu_ticks(weir.id()), t0.elapsed().as_secs_f64());
    let all = windows(&std::fs::read_to_string(&out).unwrap_or_default());
    let _ = Command::new("kill")
        .args(["-TERM", &weir.id().to_string()])
        .status();
    let _ = weir.wait();
    // windows emitted during the measurement (the first and last may be partial)
    let measured: Vec<f64> = all[seen.min(all.len())..]
        .iter()
        .map(|(_, n)| *n as f64)
        .collect();
    assert!(
        measured.len() >= 3,
        "too few windows: {all:?}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let values_per_s = median(measured);
    let cpu_s = (c1 - c0) as f64 / tick_s;
    Measured {
        values_per_s,
        cpu_share: cpu_s / secs,
        cpu_us_per_value: cpu_s * 1e6 / (values_per_s * secs),
    }
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = PlantConfig::new(http::free_port(), &dir.path().join("server-pki"));
    config.machines = 0;
    config.bulk = ITEMS;
    let server = PlantServer::start(config);
    let pki = dir.path().join("client-pki");
    let tick_s = ticks_per_second();
    let (mut opc, mut generator) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let mut opcua_round = || {
            opc.push(run(
                &opcua_pipeline(&server.url(), &pki),
                "opcua subscribed",
                tick_s,
            ))
        };
        let mut generator_round =
            || generator.push(run(&generator_pipeline(), "source starting", tick_s));
        if round % 2 == 0 {
            opcua_round();
            generator_round();
        } else {
            generator_round();
            opcua_round();
        }
    }
    println!(
        "opcua: {ITEMS} monitored items sampled every 100 ms on a local server (expected {} values/s), median of {ROUNDS} rounds of {MEASURE:?}",
        ITEMS * 10
    );
    let report = |name: &str, m: &[Measured]| {
        let v = median(m.iter().map(|x| x.values_per_s).collect());
        let share = median(m.iter().map(|x| x.cpu_share).collect());
        let per = median(m.iter().map(|x| x.cpu_us_per_value).collect());
        println!(
            "{name:<26} {v:>9.0} values/s  {:>5.1}% of one core  {per:>6.2} µs CPU/value",
            share * 100.0
        );
        per
    };
    let o = report("opcua subscription", &opc);
    let g = report("generator (baseline)", &generator);
    println!("CPU per value, opcua / generator: {:.2}×", o / g);
}
