//! The operator page's cost (issue: operator view): `weir run` as a process (generator at
//! full speed → 1 s windows per machine and sensor → NDJSON file) with `--http-addr`; its
//! steady-state throughput is source rows counted on `/metrics` over 10 s, 5 s after a
//! watcher started. Each round is one run with four phases in alternating order: nobody
//! watching, a client asking what the page asks (`/api/status` once a second, `/api/history`
//! once), a real headless Chromium showing the page, and the same Chromium at `nice 19` (as
//! if the browser ran on another machine: what Weir itself pays); the ratios are against the
//! phase nobody watches, medians over the rounds. Then two separate runs per round, with the
//! page and with `--no-operator-page`: what keeping the page's live state costs at all.
//! Last, the page's data for 50 pipelines: `/api/status` response time and the history's
//! memory.
//!
//! Run: `cargo bench --bench page` (`WEIR_PAGE_BENCH_ROUNDS`, default 5; Chromium: Debian's,
//! or `WEIR_CHROMIUM`; without it the browser phases are left out and said so).
#![allow(clippy::unwrap_used)] // a bench fails by panicking

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use weir_test_support::bench::median;
use weir_test_support::browser::{self, chromium};
use weir_test_support::http::{free_port, request};
use weir_test_support::weir_process::weir_bin;

/// Rounds (`WEIR_PAGE_BENCH_ROUNDS`, default 5).
fn rounds() -> usize {
    std::env::var("WEIR_PAGE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

/// Seconds a run settles (Chromium started and showing the page) before it is measured.
const SETTLE: Duration = Duration::from_secs(5);
/// Seconds a run is measured.
const MEASURE: Duration = Duration::from_secs(10);

/// Who watches a run.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Watcher {
    /// `--no-operator-page`: no page, no live state kept (the cost of having the page at all).
    NoPage,
    Nobody,
    Poller,
    Browser,
    /// Chromium at `nice 19`: it gets the CPU Weir leaves idle.
    NicedBrowser,
}

const PIPELINE: &str = "CREATE SOURCE telemetry (machine VARCHAR, sensor VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (
            connector = 'generator', machines = '100', sensors = 'vib_x,temp', rate = 'max', interval = '1ms',
            start = '2026-01-01T00:00:00Z', event_time = 'ts', watermark = '1s');
         CREATE SINK out WITH (connector = 'file', path = 'out.ndjson', format = 'ndjson');
         CREATE VIEW per_second AS
           SELECT machine, sensor, window_start, window_end, count(*) AS n, avg(value) AS mean,
                  max(value) AS peak
           FROM TUMBLE(telemetry, ts, INTERVAL '1' SECOND)
           GROUP BY machine, sensor, window_start, window_end;
         INSERT INTO out SELECT * FROM per_second;";

/// `weir run FILE --http-addr 127.0.0.1:PORT` in `dir`, quiet; returns it once HTTP answers.
fn spawn_weir(dir: &std::path::Path, file: &str, port: u16, page: bool) -> std::process::Child {
    let child = Command::new(weir_bin())
        .args(["run", file, "--http-addr", &format!("127.0.0.1:{port}")])
        .args(if page {
            None
        } else {
            Some("--no-operator-page")
        })
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_http(port);
    child
}

/// Waits until `port` answers `/healthz`.
fn wait_http(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while request(port, "GET", "/healthz").is_none() {
        assert!(Instant::now() < deadline, "weir never served HTTP");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Rows the sources have read, from `/metrics`.
fn source_rows(port: u16) -> f64 {
    let (_, body) = request(port, "GET", "/metrics").unwrap();
    body.lines()
        .filter(|l| l.starts_with("weir_source_rows_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Headless Chromium showing `url` until killed (at `nice 19` when `niced`).
fn open_browser(dir: &std::path::Path, url: &str, niced: bool) -> std::process::Child {
    let mut chromium = browser::command(&dir.join("chromium-profile"));
    // stays open (and the page polling) until killed
    chromium.arg("--remote-debugging-port=0").arg(url);
    let mut command = if niced {
        let mut nice = Command::new("nice");
        nice.args(["-n", "19"])
            .arg(chromium.get_program())
            .args(chromium.get_args());
        nice
    } else {
        chromium
    };
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// A watcher while it watches.
enum Watching {
    None,
    Poller(Arc<AtomicBool>, std::thread::JoinHandle<usize>),
    Browser(std::process::Child),
}

impl Watching {
    fn start(dir: &std::path::Path, port: u16, watcher: Watcher) -> Watching {
        match watcher {
            Watcher::NoPage | Watcher::Nobody => Watching::None,
            Watcher::Poller => {
                let done = Arc::new(AtomicBool::new(false));
                let stop = Arc::clone(&done);
                Watching::Poller(
                    done,
                    std::thread::spawn(move || {
                        let mut answered = 0;
                        let _ = request(port, "GET", "/api/history");
                        while !stop.load(Ordering::Relaxed) {
                            if request(port, "GET", "/api/status").is_some_and(|r| r.0 == 200) {
                                answered += 1;
                            }
                            std::thread::sleep(Duration::from_secs(1));
                        }
                        answered
                    }),
                )
            }
            Watcher::Browser | Watcher::NicedBrowser => Watching::Browser(open_browser(
                dir,
                &format!("http://127.0.0.1:{port}/"),
                watcher == Watcher::NicedBrowser,
            )),
        }
    }

    /// Stops watching: the number of status requests answered (poller).
    fn stop(self) -> usize {
        match self {
            Watching::None => 0,
            Watching::Poller(done, thread) => {
                done.store(true, Ordering::Relaxed);
                thread.join().unwrap()
            }
            Watching::Browser(mut b) => {
                assert!(
                    b.try_wait().unwrap().is_none(),
                    "Chromium exited before the run was measured"
                );
                let _ = b.kill();
                let _ = b.wait();
                0
            }
        }
    }
}

/// Source rows per second over [`MEASURE`] of the run serving on `port`, [`SETTLE`] after
/// `watcher` started watching; and the number of status requests answered.
fn measure(dir: &std::path::Path, port: u16, watcher: Watcher) -> (f64, usize) {
    let watching = Watching::start(dir, port, watcher);
    std::thread::sleep(SETTLE);
    let (t0, r0) = (Instant::now(), source_rows(port));
    std::thread::sleep(MEASURE);
    let (t1, r1) = (Instant::now(), source_rows(port));
    let answered = watching.stop();
    ((r1 - r0) / (t1 - t0).as_secs_f64(), answered)
}

/// `weir run` of [`PIPELINE`] serving on a free port (with the page unless `page` is false).
fn start_run(dir: &std::path::Path, page: bool) -> (std::process::Child, u16) {
    std::fs::write(dir.join("p.sql"), PIPELINE).unwrap();
    let _ = std::fs::remove_file(dir.join("out.ndjson"));
    let port = free_port();
    (spawn_weir(dir, "p.sql", port, page), port)
}

fn stop_run(mut weir: std::process::Child) {
    let _ = weir.kill();
    let _ = weir.wait();
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let has_browser = chromium().exists();
    // watched phases of one run each round, and the run without the page
    let watchers: Vec<Watcher> = [
        Watcher::Nobody,
        Watcher::Poller,
        Watcher::Browser,
        Watcher::NicedBrowser,
    ]
    .into_iter()
    .filter(|w| !matches!(w, Watcher::Browser | Watcher::NicedBrowser) || has_browser)
    .collect();
    if !has_browser {
        println!(
            "no Chromium at {}: browser rounds left out",
            chromium().display()
        );
    }
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); watchers.len()];
    let mut runs: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds() {
        // one run, its phases in alternating order between rounds
        let (weir, port) = start_run(dir.path(), true);
        let mut order: Vec<usize> = (0..watchers.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (rate, answered) = measure(dir.path(), port, watchers[i]);
            println!(
                "round {round}: {:?}: {:.2} M rows/s{}",
                watchers[i],
                rate / 1e6,
                if watchers[i] == Watcher::Poller {
                    format!(", {answered} status requests")
                } else {
                    String::new()
                }
            );
            rates[i].push(rate);
        }
        stop_run(weir);
        // the page's cost at all: a run with the page against one without, nobody watching
        for page in if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        } {
            let (weir, port) = start_run(dir.path(), page);
            let watcher = if page {
                Watcher::Nobody
            } else {
                Watcher::NoPage
            };
            let (rate, _) = measure(dir.path(), port, watcher);
            println!(
                "round {round}: separate run, {watcher:?}: {:.2} M rows/s",
                rate / 1e6
            );
            runs[usize::from(page)].push(rate);
            stop_run(weir);
        }
    }
    let base = median(rates[0].clone());
    println!(
        "\nsteady state over {} s, median of {} rounds:",
        MEASURE.as_secs(),
        rounds()
    );
    for (w, r) in watchers.iter().zip(&rates) {
        let m = median(r.clone());
        println!(
            "  {w:?}: {:.2} M rows/s, throughput {:.1}% of nobody watching (same run)",
            m / 1e6,
            m / base * 100.0
        );
    }
    let [without, with] = runs.map(median);
    println!(
        "  separate runs: page on {:.2} M rows/s, page off (--no-operator-page) {:.2} M rows/s: page on = {:.1}% of off",
        with / 1e6,
        without / 1e6,
        with / without * 100.0
    );
    fifty_pipelines(dir.path());
}

/// `/api/status` of a run with 50 windowed views (each with an insert): response times and
/// the history's bytes.
fn fifty_pipelines(dir: &std::path::Path) {
    let mut sql = String::from(
        "CREATE SOURCE telemetry (machine VARCHAR, sensor VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (
            connector = 'generator', machines = '20', sensors = 'vib_x,temp', rate = '20000',
            event_time = 'ts', watermark = '100ms');
         CREATE SINK out WITH (connector = 'file', path = 'out50.ndjson', format = 'ndjson');\n",
    );
    for i in 0..50 {
        sql.push_str(&format!(
            "CREATE VIEW v{i} AS SELECT machine, sensor, window_start, window_end, count(*) AS n, avg(value) AS mean
               FROM TUMBLE(telemetry, ts, INTERVAL '1' SECOND) GROUP BY machine, sensor, window_start, window_end;
             INSERT INTO out SELECT * FROM v{i};\n"
        ));
    }
    std::fs::write(dir.join("p50.sql"), sql).unwrap();
    let port = free_port();
    let mut weir = spawn_weir(dir, "p50.sql", port, true);
    std::thread::sleep(Duration::from_secs(12));
    let mut ms = Vec::new();
    let mut body = String::new();
    for _ in 0..50 {
        let t = Instant::now();
        let (code, b) = request(port, "GET", "/api/status").unwrap();
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(code, 200);
        body = b;
        std::thread::sleep(Duration::from_millis(100));
    }
    let hist = request(port, "GET", "/api/history").unwrap().1;
    let _ = weir.kill();
    let _ = weir.wait();
    let field = |name: &str| {
        let at = body.find(&format!("\"{name}\":")).unwrap() + name.len() + 3;
        body[at..].split([',', '}']).next().unwrap().to_string()
    };
    let mut sorted = ms.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "\n50 views + 50 inserts: /api/status median {:.1} ms, p95 {:.1} ms, max {:.1} ms ({} KiB); /api/history {} KiB",
        median(ms),
        sorted[sorted.len() * 95 / 100],
        sorted[sorted.len() - 1],
        body.len() / 1024,
        hist.len() / 1024
    );
    println!(
        "history: {} samples held, {} bytes (values are preallocated for the full {} s)",
        field("history_samples"),
        field("history_bytes"),
        600
    );
}
