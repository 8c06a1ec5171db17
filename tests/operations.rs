//! Running Weir as a service: the HTTP endpoints (`/metrics` checked by Prometheus' own
//! `promtool`, `/healthz`, `/readyz`), JSON logs without secrets, SIGTERM within the grace
//! period with open windows and pending uploads handled, reloading changed pipeline files,
//! and the Kubernetes manifests rendered and validated against the API schemas.
#![allow(clippy::unwrap_used)] // a test (or bench) fails by panicking

use weir_test_support::http;
use weir_test_support::s3;
use weir_test_support::weir_process;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http::{free_port, request as http};
use weir_process::WeirProcess;

#[track_caller]
fn wait_status(w: &mut WeirProcess, port: u16, path: &str, code: u16) -> String {
    let body = std::cell::RefCell::new(String::new());
    w.wait_for(
        &format!("{path} to answer {code}"),
        Duration::from_secs(30),
        |_| match http(port, "GET", path) {
            Some((c, b)) if c == code => {
                *body.borrow_mut() = b;
                true
            }
            _ => false,
        },
    );
    body.into_inner()
}

/// Samples of a Prometheus text exposition: `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').expect("sample line");
            (key.to_string(), value.parse::<f64>().expect("sample value"))
        })
        .collect()
}

/// Runs `promtool check metrics` on `exposition`: its output when it finds problems.
fn promtool(exposition: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/test installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Metric families on `/metrics` that have a `# TYPE` line but no `# HELP` line.
fn without_help(exposition: &str) -> Vec<String> {
    let names = |prefix: &str| -> std::collections::BTreeSet<String> {
        exposition
            .lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .filter_map(|rest| rest.split_whitespace().next())
            .map(str::to_string)
            .collect()
    };
    let help = names("# HELP ");
    names("# TYPE ").difference(&help).cloned().collect()
}

/// A scrape taken while no window is being emitted: the window and summary-row counters
/// equal those of a scrape 50 ms before (a window's rows are counted in several steps).
fn settled_metrics(port: u16) -> String {
    let counters = |text: &str| -> Vec<(String, f64)> {
        samples(text)
            .into_iter()
            .filter(|(k, _)| {
                k.starts_with("weir_pipeline_windows")
                    || k.starts_with("weir_pipeline_rows_out")
                    || k.contains(r#"pipeline="out""#)
                    || k.contains(r#"pipeline="cloud""#)
            })
            .collect()
    };
    let mut before = http(port, "GET", "/metrics").unwrap().1;
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = http(port, "GET", "/metrics").unwrap().1;
        if counters(&now) == counters(&before) {
            return now;
        }
        before = now;
    }
}

const SECRET: &str = "s3cr3t-never-in-logs-4711";

/// Generator rows stamped with the wall clock, summarised per second.
fn live_pipeline(extra_sinks: &str) -> String {
    format!(
        "CREATE SOURCE telemetry (machine VARCHAR, sensor VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (
            connector = 'generator', machines = '3', sensors = 'temp,current', rate = '3000',
            interval = '2ms', event_time = 'ts', watermark = '100ms', batch_rows = '100');
         CREATE SINK out WITH (connector = 'stdout', format = 'ndjson');
         CREATE VIEW per_second AS
           SELECT machine, sensor, window_start, window_end, count(*) AS n, avg(value) AS mean
           FROM TUMBLE(telemetry, ts, INTERVAL '1' SECOND)
           GROUP BY machine, sensor, window_start, window_end;
         INSERT INTO out SELECT * FROM per_second;
         {extra_sinks}"
    )
}

#[test]
fn metrics_are_valid_prometheus_and_follow_the_run() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    // an object-store sink to a port nobody listens on: its secret must stay out of the logs
    let dead = free_port();
    let sinks = format!(
        "CREATE SINK cloud WITH (connector = 'object_store', url = 's3://edge/x',
            endpoint = 'http://127.0.0.1:{dead}', region = 'us-east-1', access_key_id = 'K',
            secret_access_key = '${{THE_SECRET}}', roll_interval = '500ms', spill_dir = 'spill');
         INSERT INTO cloud SELECT * FROM per_second;"
    );
    let mut w = WeirProcess::start_with(
        &live_pipeline(&sinks),
        &[
            "--http-addr",
            &addr,
            "--log-format",
            "json",
            "--log-level",
            "debug",
        ],
        &[("THE_SECRET", SECRET)],
    );
    let ready = wait_status(&mut w, port, "/readyz", 200);
    assert!(ready.contains("running: 3 pipeline(s)"), "{ready}");
    assert_eq!(http(port, "GET", "/healthz").unwrap().0, 200);
    assert_eq!(http(port, "GET", "/nowhere").unwrap().0, 404);
    assert_eq!(http(port, "POST", "/metrics").unwrap().0, 405);
    w.wait_rows(6);

    let first = settled_metrics(port);
    std::thread::sleep(Duration::from_millis(1500));
    let second = settled_metrics(port);
    promtool(&first).unwrap_or_else(|e| panic!("promtool:\n{e}\n{first}"));
    promtool(&second).unwrap_or_else(|e| panic!("promtool:\n{e}\n{second}"));
    let undescribed = without_help(&second);
    assert!(
        undescribed.is_empty(),
        "metrics without a help text: {undescribed:?}"
    );
    assert!(second.matches("# HELP ").count() >= 10, "{second}");
    let (a, b) = (samples(&first), samples(&second));
    let get = |m: &BTreeMap<String, f64>, k: &str| {
        *m.get(k)
            .unwrap_or_else(|| panic!("no sample {k} in\n{second}"))
    };
    for key in [
        r#"weir_source_rows_total{source="telemetry"}"#,
        r#"weir_pipeline_rows_in_total{pipeline="per_second"}"#,
        r#"weir_pipeline_rows_out_total{pipeline="per_second"}"#,
        r#"weir_pipeline_windows_total{pipeline="per_second"}"#,
    ] {
        assert!(get(&b, key) > get(&a, key), "{key} did not grow");
    }
    // rows in = rows read (one pipeline reads the source); a row per window and group key
    // (3 machines × 2 sensors); what the view emits is what its two readers read
    // (a scrape may fall between the two counts of one 100-row batch)
    let rows_read = get(&b, r#"weir_source_rows_total{source="telemetry"}"#);
    let rows_in = get(&b, r#"weir_pipeline_rows_in_total{pipeline="per_second"}"#);
    assert!(
        rows_in <= rows_read && rows_read - rows_in <= 100.0,
        "{rows_in} of {rows_read}"
    );
    let summaries = get(&b, r#"weir_pipeline_rows_out_total{pipeline="per_second"}"#);
    assert_eq!(
        summaries,
        6.0 * get(&b, r#"weir_pipeline_windows_total{pipeline="per_second"}"#)
    );
    for reader in ["out", "cloud"] {
        let key = format!(r#"weir_pipeline_rows_in_total{{pipeline="{reader}"}}"#);
        assert_eq!(get(&b, &key), summaries, "{key}");
    }
    // event time is the wall clock here: lag ≈ watermark delay, emit delay ≈ same
    let lag = get(&b, r#"weir_watermark_lag_seconds{pipeline="per_second"}"#);
    assert!((0.05..5.0).contains(&lag), "watermark lag {lag}");
    let delays = get(
        &b,
        r#"weir_window_emit_delay_seconds_count{pipeline="per_second"}"#,
    );
    assert!(delays >= 1.0);
    let within_5s = get(
        &b,
        r#"weir_window_emit_delay_seconds_bucket{pipeline="per_second",le="5"}"#,
    );
    assert_eq!(within_5s, delays, "every window left within 5 s of its end");
    assert!(get(&b, "process_resident_memory_bytes") > 1e6);
    assert_eq!(get(&b, "weir_ready"), 1.0);
    // the store is down: uploads fail, files wait in the spill directory
    assert!(
        get(
            &b,
            r#"weir_sink_uploads_total{sink="cloud",result="failed"}"#
        ) >= 1.0
    );
    assert!(get(&b, r#"weir_sink_spill_files{sink="cloud"}"#) >= 1.0);
    assert!(get(&b, r#"weir_sink_spill_bytes{sink="cloud"}"#) > 0.0);

    let (status, w) = w.stop();
    assert!(status.success(), "{}", w.stderr());
    let log = w.stderr();
    assert!(!log.contains(SECRET), "the secret was logged:\n{log}");
    let json_lines: Vec<&str> = log.lines().filter(|l| l.starts_with('{')).collect();
    assert!(json_lines.len() >= 3, "{log}");
    for l in json_lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v.get("level").is_some() && v.get("fields").is_some(), "{l}");
    }
    assert!(
        log.contains("\"DEBUG\""),
        "--log-level debug shows debug lines"
    );
}

#[test]
fn readiness_drops_when_a_source_fails_for_good() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let replay = dir.path().join("replay.ndjson");
    // two good rows a second apart, then one the reader cannot parse (and the strict
    // setting, max_bad_rows = '0', that makes one bad row fail the source)
    std::fs::write(
        &replay,
        "{\"ts\": \"2026-01-01T00:00:00Z\", \"v\": 1}\n{\"ts\": \"2026-01-01T00:00:02Z\", \"v\": 2}\n{\"ts\": oops}\n",
    )
    .unwrap();
    let pipeline = format!(
        "CREATE SOURCE replay (ts TIMESTAMP, v BIGINT) WITH (connector = 'file', path = '{}',
            pace = 'original', batch_rows = '1', event_time = 'ts', max_bad_rows = '0');
         CREATE SOURCE live (ts TIMESTAMP, value DOUBLE) WITH (connector = 'generator',
            machines = '1', sensors = 'temp', rate = '100', event_time = 'ts');
         CREATE SINK out WITH (connector = 'stdout', format = 'ndjson');
         INSERT INTO out SELECT CAST(v AS DOUBLE) AS value FROM replay;
         INSERT INTO out SELECT value FROM live WHERE value < -1000;",
        replay.display()
    );
    let mut w = WeirProcess::start_with(&pipeline, &["--http-addr", &addr], &[]);
    wait_status(&mut w, port, "/readyz", 200);
    let why = wait_status(&mut w, port, "/readyz", 503);
    assert!(why.contains("source replay failed"), "{why}");
    // still alive: the other source goes on
    assert_eq!(http(port, "GET", "/healthz").unwrap().0, 200);
    let metrics = http(port, "GET", "/metrics").unwrap().1;
    assert_eq!(samples(&metrics).get("weir_ready"), Some(&0.0));
    let (status, w) = w.stop();
    assert_eq!(
        status.code(),
        Some(1),
        "a failed source: exit 1\n{}",
        w.stderr()
    );
}

#[test]
fn readiness_drops_when_no_source_ever_connects() {
    // an MQTT broker address nothing listens on: the source retries forever
    let port = free_port();
    let broker = free_port();
    let pipeline = format!(
        "CREATE SOURCE plant (machine VARCHAR, value DOUBLE) WITH (connector = 'mqtt',
            url = 'mqtt://127.0.0.1:{broker}', topic = 'plant/{{machine}}', format = 'json');
         CREATE SINK out WITH (connector = 'stdout', format = 'ndjson');
         INSERT INTO out SELECT * FROM plant;"
    );
    let mut w = WeirProcess::start_with(
        &pipeline,
        &[
            "--http-addr",
            &format!("127.0.0.1:{port}"),
            "--unready-after",
            "2s",
        ],
        &[],
    );
    wait_status(&mut w, port, "/readyz", 200);
    let why = wait_status(&mut w, port, "/readyz", 503);
    assert!(
        why.contains("no source has delivered a row") && why.contains("plant"),
        "{why}"
    );
    assert_eq!(http(port, "GET", "/healthz").unwrap().0, 200, "alive");
    let metrics = http(port, "GET", "/metrics").unwrap().1;
    assert_eq!(samples(&metrics).get("weir_ready"), Some(&0.0));
    let (status, w) = w.stop();
    assert!(status.success(), "{}", w.stderr());
}

/// Parquet rows in the files under `dir`.
fn parquet_rows(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .map(|p| {
            let f = std::fs::File::open(p).unwrap();
            let r = parquet::file::serialized_reader::SerializedFileReader::new(f).unwrap();
            parquet::file::reader::FileReader::metadata(&r)
                .file_metadata()
                .num_rows() as u64
        })
        .sum()
}

#[test]
fn sigterm_emits_open_windows_and_flushes_or_spills_uploads_within_the_grace() {
    let server = s3::S3Server::start();
    // a "store" that accepts connections and never answers: uploads hang
    let hang = TcpListener::bind("127.0.0.1:0").unwrap();
    let hang_port = hang.local_addr().unwrap().port();
    let sinks = format!(
        "CREATE SINK cloud WITH (connector = 'object_store', url = 's3://{bucket}/run',
            endpoint = '{endpoint}', region = 'us-east-1', access_key_id = '{key}',
            secret_access_key = '{secret}', roll_interval = '1h', spill_dir = 'spill');
         CREATE SINK stuck WITH (connector = 'object_store', url = 's3://edge/run',
            endpoint = 'http://127.0.0.1:{hang_port}', region = 'us-east-1', access_key_id = 'K',
            secret_access_key = 'S', roll_interval = '1h', spill_dir = 'spill');
         INSERT INTO cloud SELECT * FROM per_second;
         INSERT INTO stuck SELECT * FROM per_second;",
        bucket = s3::BUCKET,
        endpoint = server.endpoint(),
        key = s3::ACCESS_KEY,
        secret = s3::SECRET_KEY,
    );
    let mut w = WeirProcess::start_with(&live_pipeline(&sinks), &["--shutdown-grace", "6s"], &[]);
    w.wait_rows(12);
    let asked = Instant::now();
    let (status, w) = w.stop();
    let took = asked.elapsed();
    drop(hang);
    assert!(status.success(), "exit {status}\n{}", w.stderr());
    assert!(took < Duration::from_secs(6), "stopped in {took:?}");
    let log = w.stderr();
    // open windows were emitted: every row read is in some window
    let rows: Vec<serde_json::Value> = w.rows();
    let counted: u64 = rows.iter().map(|r| r["n"].as_u64().unwrap()).sum();
    let read: u64 = log
        .lines()
        .find_map(|l| l.trim().strip_prefix("source telemetry: "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no source line in the summary:\n{log}"));
    assert_eq!(counted, read, "rows in windows = rows read\n{log}");
    // the reachable store got every summary row; the hanging one's file was spilled
    let uploaded = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(server.objects("run"));
    let in_bucket: usize = uploaded
        .iter()
        .flat_map(|(_, b)| b)
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(in_bucket, rows.len(), "{log}");
    assert_eq!(
        parquet_rows(&w.path("spill/stuck")),
        rows.len() as u64,
        "{log}"
    );
    assert!(log.contains("upload abandoned"), "{log}");
}

#[test]
fn a_second_signal_exits_at_once() {
    // uploads to a store that never answers keep the first stop waiting for its grace period
    let hang = TcpListener::bind("127.0.0.1:0").unwrap();
    let sinks = format!(
        "CREATE SINK stuck WITH (connector = 'object_store', url = 's3://edge/run',
            endpoint = 'http://127.0.0.1:{}', region = 'us-east-1', access_key_id = 'K',
            secret_access_key = 'S', roll_interval = '1h', spill_dir = 'spill');
         INSERT INTO stuck SELECT * FROM per_second;",
        hang.local_addr().unwrap().port()
    );
    let mut w = WeirProcess::start_with(&live_pipeline(&sinks), &["--shutdown-grace", "60s"], &[]);
    w.wait_rows(6);
    w.signal("TERM");
    w.wait_log("signal received", 1);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        w.is_running(),
        "the first signal waits for the stuck upload"
    );
    let asked = Instant::now();
    w.signal("TERM");
    let status = w.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(130), "{}", w.stderr());
    assert!(asked.elapsed() < Duration::from_secs(2));
    assert!(w.stderr().contains("second signal"), "{}", w.stderr());
}

/// Waits until stdout has a row whose `version` is `v`.
#[track_caller]
fn wait_version(w: &mut WeirProcess, v: &str) {
    w.wait_for(&format!("rows of {v}"), Duration::from_secs(60), |w| {
        w.rows().iter().any(|r| r["version"] == v)
    });
}

#[test]
fn watch_reloads_valid_files_and_keeps_running_on_invalid_ones() {
    let version = |v: &str| {
        format!(
            "CREATE SOURCE g (machine VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (
                connector = 'generator', machines = '2', sensors = 'temp', rate = '400',
                interval = '5ms', event_time = 'ts', watermark = '50ms');
             CREATE SINK out WITH (connector = 'stdout', format = 'ndjson');
             CREATE SINK cloud WITH (connector = 'object_store', url = 's3://edge/x',
                endpoint = 'http://127.0.0.1:{dead}', region = 'us-east-1', access_key_id = 'K',
                secret_access_key = 'S', roll_interval = '300ms', spill_dir = 'spill');
             CREATE VIEW s AS SELECT machine, window_start, window_end, count(*) AS n, '{v}' AS version
               FROM TUMBLE(g, ts, INTERVAL '500' MILLISECOND) GROUP BY machine, window_start, window_end;
             INSERT INTO out SELECT * FROM s;
             INSERT INTO cloud SELECT * FROM s;",
            dead = free_port()
        )
    };
    let mut w = WeirProcess::start_with(
        &version("v1"),
        &["--watch", "--watch-interval", "200ms"],
        &[],
    );
    wait_version(&mut w, "v1");
    w.wait_for("spilled files", Duration::from_secs(30), |w| {
        parquet_rows(&w.path("spill/cloud")) > 0
    });

    // a file that does not compile: reported with its position, v1 goes on
    std::fs::write(
        w.path("pipeline.sql"),
        version("v2").replace("count(*)", "count(*"),
    )
    .unwrap();
    w.wait_log("do not compile", 1);
    let log = w.stderr();
    assert!(
        log.contains("pipeline.sql:"),
        "error with its position:\n{log}"
    );
    let before = w.rows().len();
    w.wait_rows(before + 4);
    assert!(w.rows().iter().all(|r| r["version"] == "v1"));

    // a file whose expression is far too deep (it crashed the process once): rejected, and
    // v1 goes on
    let ors = vec!["n = 1"; 6000].join(" OR ");
    std::fs::write(
        w.path("pipeline.sql"),
        version("v2").replace(
            "INSERT INTO out SELECT * FROM s;",
            &format!("INSERT INTO out SELECT * FROM s WHERE {ors};"),
        ),
    )
    .unwrap();
    w.wait_log("do not compile", 2);
    assert!(
        w.stderr().contains("expression nested too deeply"),
        "{}",
        w.stderr()
    );
    let before = w.rows().len();
    w.wait_rows(before + 4);
    assert!(w.rows().iter().all(|r| r["version"] == "v1"));

    let spilled_before = parquet_rows(&w.path("spill/cloud"));
    std::fs::write(w.path("pipeline.sql"), version("v3")).unwrap();
    wait_version(&mut w, "v3");
    assert!(w.stderr().contains("reloaded"), "{}", w.stderr());
    assert!(!w.rows().iter().any(|r| r["version"] == "v2"));
    // the spill buffer is kept across the reload (the store is still down)
    assert!(parquet_rows(&w.path("spill/cloud")) >= spilled_before);
    let (status, w) = w.stop();
    assert!(status.success(), "{}", w.stderr());
}

#[test]
fn held_http_connections_starve_neither_the_pipelines_nor_the_probes() {
    // the test process holds 1,100 connections: it needs its own soft limit raised
    let me = std::process::id();
    let raised = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "prlimit --pid {me} --nofile=$(ulimit -Hn):$(ulimit -Hn)"
        ))
        .status()
        .unwrap();
    assert!(raised.success());
    let port = free_port();
    // 15,000 rows in about 15 s, into small files (each one a descriptor while written): the
    // run must outlast the held connections' header timeout (5 s) by a wide margin, or the
    // probe below may find the process already gone
    let mut w = WeirProcess::start_with(
        "CREATE SOURCE g (machine VARCHAR, ts TIMESTAMP, value DOUBLE, seq BIGINT) WITH (
            connector = 'generator', machines = '2', sensors = 'temp', rate = '1000',
            batch_rows = '20', limit = '15000');
         CREATE SINK files WITH (connector = 'file', path = 'out', format = 'ndjson', roll_rows = '50');
         INSERT INTO files SELECT * FROM g;",
        &["--http-addr", &format!("127.0.0.1:{port}")],
        &[],
    );
    w.wait_log("serving /metrics", 1);
    // its soft open-files limit was raised to the hard limit at start
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", w.pid())).unwrap();
    let open_files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .skip(3)
        .take(2)
        .collect();
    assert_eq!(open_files[0], open_files[1], "{limits}");
    // the usual limit of 1024, and more held connections than that
    let limited = Command::new("prlimit")
        .args([format!("--pid={}", w.pid()), "--nofile=1024:1024".into()])
        .status()
        .unwrap();
    assert!(limited.success());
    let held: Vec<std::net::TcpStream> = (0..1_100)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    assert!(held.len() > 1_000, "{} connections", held.len());
    // the probe answers within the header timeout of the held connections
    let start = std::time::Instant::now();
    let mut answered = None;
    while start.elapsed() < Duration::from_secs(15) {
        if let Some((200, body)) = http(port, "GET", "/healthz") {
            answered = Some((start.elapsed(), body));
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (after, _) = answered.expect("/healthz never answered");
    assert!(after < Duration::from_secs(10), "{after:?}");
    let status = w.wait_exit(Duration::from_secs(60));
    drop(held);
    let log = w.stderr();
    assert!(status.success(), "{log}");
    assert!(!log.contains("Too many open files"), "{log}");
    // every row reached the files
    let mut seqs = BTreeSet::new();
    for f in std::fs::read_dir(w.path("out")).unwrap() {
        let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            seqs.insert(v["seq"].as_i64().unwrap());
        }
    }
    assert_eq!(seqs, (0..15000).collect::<BTreeSet<i64>>());
    let metrics = http(port, "GET", "/metrics");
    assert!(metrics.is_none(), "the process has exited");
}

#[test]
fn a_sink_that_fails_every_write_logs_a_few_lines_and_exits_3() {
    // the sink's directory cannot be created: a file is in the way
    let dir = tempfile::tempdir().unwrap();
    let blocked = dir.path().join("blocked");
    std::fs::write(&blocked, "not a directory").unwrap();
    let mut w = WeirProcess::start(
        &format!(
            "CREATE SOURCE g (machine VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (
                connector = 'generator', machines = '1', sensors = 'temp', rate = '1000',
                batch_rows = '10', limit = '3000');
             CREATE SINK files WITH (connector = 'file', path = '{}/out', format = 'ndjson');
             CREATE SINK out WITH (connector = 'stdout', format = 'ndjson');
             INSERT INTO files SELECT * FROM g;
             INSERT INTO out SELECT * FROM g;",
            blocked.display()
        ),
        &[],
    );
    let status = w.wait_exit(Duration::from_secs(60));
    let log = w.stderr();
    assert_eq!(status.code(), Some(3), "{log}");
    // the other sink got every row
    assert_eq!(w.rows().len(), 3000);
    let failures: u64 = log
        .lines()
        .find_map(|l| l.trim().strip_prefix("sink write failures: "))
        .unwrap_or_else(|| panic!("{log}"))
        .parse()
        .unwrap();
    assert!(failures >= 100, "{failures}: {log}");
    // one line, then at most one per 5 s with the count of those not logged
    let lines = log.matches("sink write failed").count();
    assert!(
        (1..=2).contains(&lines),
        "{lines} lines for {failures} failures:\n{log}"
    );
    assert!(log.contains("a sink lost output: exiting 3"), "{log}");
}

/// Windows of a generator, tagged with `version`.
fn versioned(version: &str) -> String {
    format!(
        "CREATE SOURCE g (machine VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (
            connector = 'generator', machines = '2', sensors = 'temp', rate = '400',
            interval = '5ms', event_time = 'ts', watermark = '50ms');
         CREATE SINK out WITH (connector = 'stdout', format = 'ndjson');
         CREATE VIEW s AS SELECT machine, window_start, window_end, count(*) AS n, '{version}' AS version
           FROM TUMBLE(g, ts, INTERVAL '500' MILLISECOND) GROUP BY machine, window_start, window_end;
         INSERT INTO out SELECT * FROM s;"
    )
}

#[test]
fn signals_are_handled_from_the_start_sighup_reloads_sigquit_stops() {
    // a SIGTERM in the first milliseconds stops the process; it does not kill it
    for delay in [20, 50] {
        let mut w = WeirProcess::start(&versioned("v1"), &[]);
        std::thread::sleep(Duration::from_millis(delay));
        w.signal("TERM");
        let status = w.wait_exit(Duration::from_secs(30));
        assert_eq!(
            status.code(),
            Some(0),
            "{delay} ms: {status:?}\n{}",
            w.stderr()
        );
    }
    // SIGHUP reloads the files, without --watch; SIGQUIT stops as SIGTERM does
    let mut w = WeirProcess::start(&versioned("v1"), &[]);
    wait_version(&mut w, "v1");
    std::fs::write(w.path("pipeline.sql"), versioned("v2")).unwrap();
    w.signal("HUP");
    wait_version(&mut w, "v2");
    assert!(w.stderr().contains("SIGHUP received"), "{}", w.stderr());
    w.signal("QUIT");
    let status = w.wait_exit(Duration::from_secs(30));
    let log = w.stderr();
    assert_eq!(status.code(), Some(0), "{status:?}\n{log}");
    assert!(log.contains("signal received: stopping"), "{log}");
    assert!(log.contains("pipeline s:"), "the summary: {log}");
    // a stop signal during a reload: the old pipelines stop, the new ones never start
    let mut w = WeirProcess::start(&versioned("v1"), &[]);
    wait_version(&mut w, "v1");
    std::fs::write(w.path("pipeline.sql"), versioned("v3")).unwrap();
    w.signal("HUP");
    w.signal("TERM");
    let status = w.wait_exit(Duration::from_secs(30));
    let log = w.stderr();
    assert_eq!(status.code(), Some(0), "{status:?}\n{log}");
    assert!(!log.contains("starting the new pipelines"), "{log}");
    assert!(!w.rows().iter().any(|r| r["version"] == "v3"), "{log}");
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `kubernetes-validate` from the virtual environment scripts/test makes, or from PATH.
fn validator() -> PathBuf {
    let venv = root().join("target/test-tools/venv/bin/kubernetes-validate");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("kubernetes-validate")
    }
}

fn yaml_str<'a>(v: &'a serde_yaml_ng::Value, path: &[&str]) -> Option<&'a serde_yaml_ng::Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

#[test]
fn manifests_render_validate_and_carry_probes_mounts_and_security() {
    let variants: Vec<PathBuf> = std::iter::once(root().join("deploy/kubernetes/base"))
        .chain({
            let mut o: Vec<PathBuf> = std::fs::read_dir(root().join("deploy/kubernetes/overlays"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            o.sort();
            o
        })
        .collect();
    assert!(variants.len() >= 7, "base + 6 overlays");
    let out = tempfile::tempdir().unwrap();
    for dir in &variants {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let rendered = Command::new("kubectl")
            .args(["kustomize"])
            .arg(dir)
            .output()
            .expect("kubectl (with kustomize v4 or later)");
        assert!(
            rendered.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&rendered.stderr)
        );
        let file = out.path().join(format!("{name}.yaml"));
        std::fs::write(&file, &rendered.stdout).unwrap();
        let check = Command::new(validator())
            .args(["--strict", "-k", "1.31.0"])
            .arg(&file)
            .output()
            .expect("kubernetes-validate (PyPI; scripts/test installs it)");
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        assert!(
            check.status.success() && !report.contains("ERROR"),
            "{name}:\n{report}"
        );

        let docs: Vec<serde_yaml_ng::Value> =
            serde_yaml_ng::Deserializer::from_slice(&rendered.stdout)
                .map(|d| serde::Deserialize::deserialize(d).unwrap())
                .collect();
        for d in &docs {
            let kind = d["kind"].as_str().unwrap();
            assert!(
                report.contains(&format!("passed for resource {}", kind.to_lowercase())),
                "{name}: {kind} not validated\n{report}"
            );
        }
        let workload = docs
            .iter()
            .find(|d| matches!(d["kind"].as_str(), Some("DaemonSet" | "Deployment")))
            .unwrap_or_else(|| panic!("{name}: no workload"));
        let pod = &workload["spec"]["template"];
        let spec = &pod["spec"];
        let weir = spec["containers"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "weir")
            .unwrap();
        let probe = |p: &str| yaml_str(weir, &[p, "httpGet", "path"]).and_then(|v| v.as_str());
        assert_eq!(probe("livenessProbe"), Some("/healthz"), "{name}");
        assert_eq!(probe("readinessProbe"), Some("/readyz"), "{name}");
        let args: Vec<&str> = weir["args"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert!(
            args.contains(&"--watch") && args.contains(&"--http-addr=0.0.0.0:9464"),
            "{name}"
        );
        let sc = &weir["securityContext"];
        assert_eq!(sc["runAsNonRoot"].as_bool(), Some(true), "{name}");
        assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true), "{name}");
        assert!(sc["runAsUser"].as_u64().is_some_and(|u| u != 0), "{name}");
        for r in ["requests", "limits"] {
            for q in ["cpu", "memory"] {
                assert!(
                    yaml_str(weir, &["resources", r, q]).is_some(),
                    "{name}: {r}.{q}"
                );
            }
        }
        let mounts: BTreeMap<&str, &str> = weir["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["name"].as_str().unwrap(),
                    m["mountPath"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            mounts.get("pipelines"),
            Some(&"/etc/weir/pipelines"),
            "{name}"
        );
        assert_eq!(mounts.get("spill"), Some(&"/var/lib/weir"), "{name}");
        let volumes = spec["volumes"].as_sequence().unwrap();
        let volume = |n: &str| volumes.iter().find(|v| v["name"] == n).unwrap();
        assert!(
            volume("spill")["hostPath"]["path"].as_str().is_some(),
            "{name}: spill on a hostPath"
        );
        let cm = volume("pipelines")["configMap"]["name"].as_str().unwrap();
        assert!(
            docs.iter().any(|d| d["kind"] == "ConfigMap"
                && d["metadata"]["name"] == cm
                && d["data"].get("edge.sql").is_some()),
            "{name}: pipelines ConfigMap"
        );
        for v in volumes {
            let kinds: Vec<&str> = v
                .as_mapping()
                .unwrap()
                .keys()
                .filter_map(|k| k.as_str())
                .filter(|k| *k != "name")
                .collect();
            if name.starts_with("kubeedge") {
                assert!(
                    kinds
                        .iter()
                        .all(|k| ["configMap", "secret", "hostPath", "emptyDir"].contains(k)),
                    "{name}: EdgeCore volume types only: {kinds:?}"
                );
            }
        }
        let annotations = &pod["metadata"]["annotations"];
        assert_eq!(
            annotations["prometheus.io/scrape"].as_str(),
            Some("true"),
            "{name}"
        );
        assert_eq!(
            annotations["prometheus.io/port"].as_str(),
            Some("9464"),
            "{name}"
        );
        for key in [
            "node.kubernetes.io/unreachable",
            "node.kubernetes.io/not-ready",
        ] {
            let t = spec["tolerations"]
                .as_sequence()
                .unwrap()
                .iter()
                .find(|t| t["key"] == key)
                .unwrap_or_else(|| panic!("{name}: toleration {key}"));
            assert!(
                t.get("tolerationSeconds").is_none(),
                "{name}: {key} forever"
            );
        }
        let selector = |k: &str| spec["nodeSelector"].get(k).and_then(|v| v.as_str());
        match name.as_str() {
            "kubeedge" | "kubeedge-serial" => {
                assert_eq!(selector("node-role.kubernetes.io/edge"), Some(""));
                assert_eq!(
                    pod["metadata"]["labels"]["app-offline.kubeedge.io"].as_str(),
                    Some("autonomy")
                );
                assert_eq!(spec["hostNetwork"].as_bool(), Some(true));
            }
            "superedge" => assert_eq!(selector("superedge.io/node-edge"), Some("enable")),
            "openyurt" => {
                assert_eq!(workload["kind"], "Deployment");
                assert_eq!(selector("apps.openyurt.io/nodepool"), Some("factory-a"));
            }
            "deployment" => assert_eq!(workload["kind"], "Deployment"),
            "k3s" | "base" => assert_eq!(workload["kind"], "DaemonSet"),
            other => panic!("a variant the test does not know: {other}"),
        }
    }

    // the pipeline file shipped in the ConfigMap compiles, with the Secret's variables set
    let check = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["check"])
        .arg(root().join("deploy/kubernetes/base/pipelines/edge.sql"))
        .envs([
            ("WEIR_OUTPUT_URL", "s3://telemetry/edge"),
            ("WEIR_NODE_NAME", "node-1"),
            ("WEIR_S3_ENDPOINT", "http://127.0.0.1:9"),
            ("AWS_ACCESS_KEY_ID", "k"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
        ])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

// ---- the operator page, the Grafana dashboard and the alert rules ----

const PAGE_TOKEN: &str = "page-token-0815";

/// The `data-value` of cell `field` in the table row of `kind` `name` on a dumped page.
fn page_value(dom: &str, kind: &str, name: &str, field: &str) -> Option<f64> {
    let start = dom.find(&format!(r#"data-kind="{kind}" data-name="{name}""#))?;
    let row = &dom[start..start + dom[start..].find("</tr>")?];
    let at = row.find(&format!(r#"data-field="{field}" data-value=""#))?;
    let rest = &row[at..];
    let value = rest.split('"').nth(3)?;
    value.parse().ok()
}

/// `/api/status` with the token.
fn api_status(port: u16) -> serde_json::Value {
    let r = http::request_with(
        port,
        "GET",
        "/api/status",
        &[("Authorization", &format!("Bearer {PAGE_TOKEN}"))],
    )
    .unwrap();
    assert_eq!(r.code, 200, "{}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

fn named<'a>(list: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {list}"))
}

/// The `cloud` sink into an object store nothing listens for, rolling a file every 300 ms:
/// uploads fail and the files are spilled.
fn store_down_sink() -> String {
    let dead = free_port();
    format!(
        "CREATE SINK cloud WITH (connector = 'object_store', url = 's3://edge/x',
            endpoint = 'http://127.0.0.1:{dead}', region = 'us-east-1', access_key_id = 'K',
            secret_access_key = 'S', roll_interval = '300ms', timeout = '1s', spill_dir = 'spill');
         INSERT INTO cloud SELECT * FROM per_second;"
    )
}

#[test]
fn operator_page_in_a_real_browser_shows_every_part_and_the_failing_store() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut w = WeirProcess::start_with(
        &live_pipeline(&store_down_sink()),
        &["--http-addr", &addr, "--http-token", PAGE_TOKEN],
        &[],
    );
    wait_status(&mut w, port, "/readyz", 200);

    // the token: the page and its API need it, the probes and /metrics do not
    assert_eq!(http(port, "GET", "/metrics").unwrap().0, 200);
    assert_eq!(http(port, "GET", "/healthz").unwrap().0, 200);
    let page = http(port, "GET", "/").unwrap();
    assert_eq!(page.0, 401);
    assert!(
        page.1.contains("name=\"token\""),
        "a login form: {}",
        page.1
    );
    assert_eq!(http(port, "GET", "/api/status").unwrap().0, 401);
    let wrong = http::request_with(
        port,
        "GET",
        "/api/status",
        &[("Authorization", "Bearer nope")],
    );
    assert_eq!(wrong.unwrap().code, 401);
    let login = http::request_with(port, "GET", &format!("/?token={PAGE_TOKEN}"), &[]).unwrap();
    assert_eq!(login.code, 303);
    let cookie = login.header("set-cookie").unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap().to_string();
    let with_cookie = http::request_with(port, "GET", "/", &[("Cookie", &cookie)]).unwrap();
    assert_eq!(with_cookie.code, 200);
    assert!(with_cookie.body.contains("/weir.js"));
    assert!(
        with_cookie
            .header("content-security-policy")
            .is_some_and(|c| c.contains("default-src 'none'")),
        "{}",
        with_cookie.head
    );

    // wait until the store has failed and files wait in the spill directory
    w.wait_for("spilled files", Duration::from_secs(30), |_| {
        let s = api_status(port);
        let find = |list: &str, name: &str| {
            s[list]
                .as_array()
                .and_then(|l| l.iter().find(|x| x["name"] == name))
                .cloned()
        };
        find("sinks", "cloud").is_some_and(|c| c["spill_files"].as_u64() >= Some(2))
            && find("sources", "telemetry")
                .is_some_and(|t| t["rows_per_second"].as_f64() > Some(0.0))
    });

    // the JSON API agrees with /metrics taken right after it (within one 100-row batch)
    let mut last = String::new();
    let agreed = (0..20).any(|_| {
        let s = api_status(port);
        let m = samples(&http(port, "GET", "/metrics").unwrap().1);
        let metric = |k: &str| m.get(k).copied().unwrap_or(f64::NAN);
        // (list, part, field, metric, within)
        let pairs = [
            (
                "sources",
                "telemetry",
                "rows",
                r#"weir_source_rows_total{source="telemetry"}"#,
                100.0,
            ),
            (
                "pipelines",
                "per_second",
                "rows_in",
                r#"weir_pipeline_rows_in_total{pipeline="per_second"}"#,
                100.0,
            ),
            (
                "pipelines",
                "per_second",
                "windows_emitted",
                r#"weir_pipeline_windows_total{pipeline="per_second"}"#,
                1.0,
            ),
            (
                "pipelines",
                "per_second",
                "rows_out",
                r#"weir_pipeline_rows_out_total{pipeline="per_second"}"#,
                6.0,
            ),
            (
                "pipelines",
                "per_second",
                "state_groups",
                r#"weir_pipeline_state_groups{pipeline="per_second"}"#,
                6.0,
            ),
            (
                "sinks",
                "cloud",
                "rows",
                r#"weir_sink_rows_total{sink="cloud"}"#,
                6.0,
            ),
            (
                "sinks",
                "cloud",
                "uploads_failed",
                r#"weir_sink_uploads_total{sink="cloud",result="failed"}"#,
                1.0,
            ),
            (
                "sinks",
                "cloud",
                "spill_bytes",
                r#"weir_sink_spill_bytes{sink="cloud"}"#,
                20_000.0,
            ),
        ]
        .map(|(list, part, field, key, within)| {
            (named(&s[list], part)[field].as_f64(), metric(key), within)
        });
        last = format!("{pairs:?}");
        pairs
            .iter()
            .all(|(api, m, within)| api.is_some_and(|a| (m - a).abs() <= *within))
    });
    assert!(
        agreed,
        "/api/status and /metrics disagree: (api, metrics, within) {last}"
    );

    // the page in Chromium: every part by name, rates above zero, the failing store
    let url = format!("http://127.0.0.1:{port}/?token={PAGE_TOKEN}");
    let budget = Duration::from_secs(3);
    let first = weir_test_support::browser::dump_dom(&url, budget);
    let updates = weir_test_support::browser::attributes(&first, "<body", "data-updates");
    assert!(
        updates.first().is_some_and(|u| *u != "0"),
        "the page never updated:\n{first}"
    );
    for (kind, name) in [
        ("source", "telemetry"),
        ("pipeline", "per_second"),
        ("pipeline", "out"),
        ("pipeline", "cloud"),
        ("sink", "out"),
        ("sink", "cloud"),
    ] {
        assert!(
            first.contains(&format!(r#"data-kind="{kind}" data-name="{name}""#)),
            "{kind} {name} not on the page:\n{first}"
        );
    }
    let nodes = weir_test_support::browser::attributes(&first, "data-node=", "data-node");
    for name in ["telemetry", "per_second", "out", "cloud"] {
        assert!(nodes.contains(&name), "graph nodes {nodes:?}");
    }
    let edges = weir_test_support::browser::attributes(&first, "data-edge=", "data-edge");
    for e in [
        "telemetry|per_second",
        "per_second|out",
        "per_second|cloud",
        "cloud|cloud",
        "out|out",
    ] {
        assert!(edges.contains(&e), "graph edges {edges:?}");
    }
    let rate = page_value(&first, "source", "telemetry", "rows_per_second").unwrap();
    assert!(
        (1000.0..6000.0).contains(&rate),
        "source rate {rate} (3000 rows/s)"
    );
    let rate_in = page_value(&first, "pipeline", "per_second", "rows_in_per_second").unwrap();
    assert!(rate_in > 0.0, "pipeline rate {rate_in}");
    let lag = page_value(&first, "source", "telemetry", "watermark_lag_seconds").unwrap();
    assert!((0.0..5.0).contains(&lag), "watermark lag {lag}");
    assert!(page_value(&first, "sink", "cloud", "uploads_failed").unwrap() >= 1.0);
    assert!(
        first.contains(">store failing<"),
        "the failed store is shown:\n{first}"
    );
    let spilled_before = page_value(&first, "sink", "cloud", "spill_bytes").unwrap();
    assert!(spilled_before > 0.0);
    assert!(
        first.contains(r#"data-pipeline="per_second""#),
        "newest rows of the view"
    );
    std::thread::sleep(Duration::from_secs(2));
    let second = weir_test_support::browser::dump_dom(&url, budget);
    let spilled_after = page_value(&second, "sink", "cloud", "spill_bytes").unwrap();
    assert!(
        spilled_after > spilled_before,
        "the spill backlog grows: {spilled_before} -> {spilled_after}"
    );
    let points = weir_test_support::browser::attributes(
        &second,
        "data-chart=\"sink:cloud:spill\"",
        "data-points",
    );
    assert!(
        points.first().and_then(|p| p.parse::<u32>().ok()) >= Some(3),
        "the spill chart has the server's history: {points:?}"
    );

    // a screenshot, not blank
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("operator-page.png");
    weir_test_support::browser::screenshot(&url, budget, 1280, 900, &shot);
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(
        weir_test_support::browser::png_size(&png),
        Some((1280, 900))
    );
    // a blank page of this size compresses to a few KiB; text, tables and charts do not
    assert!(png.len() > 40_000, "screenshot of {} bytes", png.len());

    let (status, w) = w.stop();
    assert!(status.success(), "{}", w.stderr());
}

#[test]
fn operator_page_with_fifty_pipelines_a_failed_source_and_no_output() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.ndjson");
    std::fs::write(
        &broken,
        "{\"ts\": \"2026-01-01T00:00:00Z\", \"v\": 1}\n{\"ts\": oops}\n",
    )
    .unwrap();
    let mut pipeline = format!(
        "CREATE SOURCE telemetry (machine VARCHAR, sensor VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (
            connector = 'generator', machines = '3', sensors = 'temp,current', rate = '1000',
            event_time = 'ts', watermark = '100ms');
         CREATE SOURCE broken (ts TIMESTAMP, v BIGINT) WITH (connector = 'file', path = '{}',
            event_time = 'ts', max_bad_rows = '0');
         CREATE SINK files WITH (connector = 'file', path = 'out.ndjson', format = 'ndjson');
         INSERT INTO files SELECT CAST(v AS DOUBLE) AS value FROM broken;\n",
        broken.display()
    );
    for i in 0..50 {
        // view_49 keeps no row: it never has output
        let filter = if i == 49 {
            "value < -1000"
        } else {
            "value > 0"
        };
        pipeline.push_str(&format!(
            "CREATE VIEW view_{i} AS SELECT machine, window_start, window_end, count(*) AS n
               FROM TUMBLE(telemetry, ts, INTERVAL '1' SECOND) WHERE {filter}
               GROUP BY machine, window_start, window_end;
             INSERT INTO files SELECT CAST(n AS DOUBLE) AS value FROM view_{i};\n"
        ));
    }
    let mut w = WeirProcess::start_with(
        &pipeline,
        &["--http-addr", &addr, "--http-token", PAGE_TOKEN],
        &[],
    );
    w.wait_for(
        "the broken source to fail and windows to close",
        Duration::from_secs(30),
        |_| {
            http::request_with(
                port,
                "GET",
                "/api/status",
                &[("Authorization", &format!("Bearer {PAGE_TOKEN}"))],
            )
            .filter(|r| r.code == 200)
            .and_then(|r| serde_json::from_str::<serde_json::Value>(&r.body).ok())
            .is_some_and(|s| {
                let find = |list: &str, name: &str| {
                    s[list]
                        .as_array()
                        .and_then(|l| l.iter().find(|x| x["name"] == name))
                        .cloned()
                };
                find("sources", "broken").is_some_and(|b| b["state"] == "failed")
                    && find("pipelines", "view_0")
                        .is_some_and(|v| v["windows_emitted"].as_u64() >= Some(2))
            })
        },
    );
    let s = api_status(port);
    assert_eq!(
        s["pipelines"].as_array().unwrap().len(),
        101,
        "50 views, 51 inserts"
    );
    assert_eq!(named(&s["pipelines"], "view_49")["rows_out"], 0);
    assert_eq!(s["process"]["ready"], false, "a failed source: not ready");

    let url = format!("http://127.0.0.1:{port}/?token={PAGE_TOKEN}");
    let dom = weir_test_support::browser::dump_dom(&url, Duration::from_secs(3));
    let updates = weir_test_support::browser::attributes(&dom, "<body", "data-updates");
    assert!(
        updates.first().is_some_and(|u| *u != "0"),
        "the page never updated"
    );
    for i in 0..50 {
        assert!(
            dom.contains(&format!(r#"data-kind="pipeline" data-name="view_{i}""#)),
            "view_{i}"
        );
        assert!(
            dom.contains(&format!(r#"data-node="view_{i}""#)),
            "graph node view_{i}"
        );
    }
    assert_eq!(
        page_value(&dom, "pipeline", "view_49", "rows_out_per_second"),
        Some(0.0)
    );
    let states = weir_test_support::browser::attributes(&dom, "data-name=\"broken\"", "data-name");
    assert!(!states.is_empty());
    let row = &dom[dom
        .find(r#"data-kind="source" data-name="broken""#)
        .unwrap()..];
    assert!(
        row[..row.find("</tr>").unwrap()].contains(">failed<"),
        "the failed source is shown"
    );
    assert!(dom.contains("not ready"), "the readiness badge");
    // the layout holds: one graph with every box, and a picture of it
    assert_eq!(dom.matches("<svg class=\"graph\"").count(), 1);
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("operator-page-50.png");
    weir_test_support::browser::screenshot(&url, Duration::from_secs(3), 1280, 2400, &shot);
    assert_eq!(
        weir_test_support::browser::png_size(&std::fs::read(&shot).unwrap()),
        Some((1280, 2400))
    );
    let (_, w) = w.stop();
    drop(w);
}

/// `promtool ARGS` in `dir`: its output, and whether it succeeded.
fn promtool_in(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (Debian package prometheus; scripts/test installs it)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn alert_rules_check_and_their_unit_tests_fire_and_resolve() {
    let dir = root().join("deploy/prometheus");
    let (ok, out) = promtool_in(&dir, &["check", "rules", "weir-rules.yml"]);
    assert!(ok && out.contains("10 rules found"), "{out}");
    let (ok, out) = promtool_in(&dir, &["test", "rules", "weir-rules.test.yml"]);
    assert!(ok && out.contains("SUCCESS"), "{out}");
    // every alert has a unit test that expects it to fire
    let rules = std::fs::read_to_string(dir.join("weir-rules.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("weir-rules.test.yml")).unwrap();
    for alert in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        let firing = tests
            .split("alertname: ")
            .skip(1)
            .filter(|t| t.starts_with(alert) && t[alert.len()..].starts_with('\n'))
            .any(|t| t.contains("exp_labels"));
        assert!(
            firing,
            "{alert} is never expected to fire in weir-rules.test.yml"
        );
    }
}

/// Percent-encodes a query parameter.
fn query_param(s: &str) -> String {
    s.bytes()
        .map(|c| match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (c as char).to_string()
            }
            _ => format!("%{c:02X}"),
        })
        .collect()
}

#[test]
fn grafana_dashboard_queries_run_on_a_real_prometheus_scraping_weir() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/weir.json")).unwrap(),
    )
    .unwrap();
    let mut exprs: Vec<String> = Vec::new();
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    let vars: Vec<String> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["query"]["query"].as_str())
        .map(|q| {
            // label_values(SELECTOR, label): the selector must be a valid query too
            let inner = q.strip_prefix("label_values(").unwrap();
            inner[..inner.rfind(',').unwrap()].to_string()
        })
        .collect();
    assert!(exprs.len() >= 25, "{} panels' queries", exprs.len());
    for var in ["instance", "source", "pipeline", "sink"] {
        assert!(
            dashboard["templating"]["list"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["name"] == var),
            "template variable {var}"
        );
    }
    // every panel of the rows the issue names
    let titles: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["title"].as_str())
        .collect();
    for row in [
        "Alerts",
        "Sources",
        "Pipelines",
        "Sinks and spill",
        "Process",
    ] {
        assert!(titles.contains(&row), "row {row} in {titles:?}");
    }

    // every metric named is one /metrics serves (`weir metrics` lists them all)
    let catalogue = Command::new(weir_process::weir_bin())
        .arg("metrics")
        .output()
        .unwrap();
    let catalogue = String::from_utf8(catalogue.stdout).unwrap();
    let mut named = BTreeSet::new();
    for e in exprs.iter().chain(&vars) {
        for word in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("weir_") || word.starts_with("process_") {
                let base = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|s| word.strip_suffix(s))
                    .unwrap_or(word);
                named.insert(base.to_string());
            }
        }
    }
    for m in &named {
        assert!(
            catalogue.contains(&format!("`{m}`")),
            "{m} is not a metric Weir serves"
        );
    }

    // a live Weir (store down: spill metrics), scraped by a real Prometheus every second
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut w = WeirProcess::start_with(
        &live_pipeline(&store_down_sink()),
        &[
            "--http-addr",
            &addr,
            "--state-dir",
            "state",
            "--checkpoint-interval",
            "1s",
        ],
        &[],
    );
    wait_status(&mut w, port, "/readyz", 200);
    let prom_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        prom_dir.path().join("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: ['{}']\n\
             scrape_configs:\n  - job_name: weir\n    static_configs: [{{targets: ['{addr}']}}]\n",
            root().join("deploy/prometheus/weir-rules.yml").display()
        ),
    )
    .unwrap();
    let prom_port = free_port();
    let mut prom = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            prom_dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            prom_dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(prom_dir.path().join("log.txt")).unwrap())
        .spawn()
        .expect("prometheus (Debian package; scripts/test installs it)");
    let query = |q: &str| -> Option<serde_json::Value> {
        let (code, body) = http(
            prom_port,
            "GET",
            &format!("/api/v1/query?query={}", query_param(q)),
        )?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        Some(serde_json::json!({"code": code, "body": v}))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut scraped = false;
    while Instant::now() < deadline {
        // two scrapes at least, so that rate() over them has a value
        if let Some(r) = query("count_over_time(weir_sink_spill_bytes[1m])")
            && r["body"]["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                >= Some(3.0)
        {
            scraped = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let log = std::fs::read_to_string(prom_dir.path().join("log.txt")).unwrap_or_default();
    assert!(scraped, "Prometheus never scraped Weir:\n{log}");
    let substitute = |e: &str| {
        e.replace("$__rate_interval", "1m")
            .replace("$instance", ".*")
            .replace("$source", ".*")
            .replace("$pipeline", ".*")
            .replace("$sink", ".*")
    };
    let mut with_data = 0;
    for e in exprs.iter().chain(&vars) {
        let q = substitute(e);
        let r = query(&q).unwrap_or_else(|| panic!("no answer to {q}"));
        assert_eq!(r["code"], 200, "{q}: {}", r["body"]);
        assert_eq!(r["body"]["status"], "success", "{q}: {}", r["body"]);
        if !r["body"]["data"]["result"].as_array().unwrap().is_empty() {
            with_data += 1;
        }
    }
    // the metrics of what this run does have data: rates, spill, checkpoints, memory
    for q in [
        r#"sum by (instance, source) (rate(weir_source_rows_total{instance=~".*", source=~".*"}[1m]))"#,
        r#"weir_sink_spill_bytes{instance=~".*", sink=~".*"}"#,
        r#"weir_checkpoint_age_seconds{instance=~".*"}"#,
        r#"weir_pipeline_open_windows{instance=~".*", pipeline=~".*"}"#,
    ] {
        let r = query(q).unwrap();
        assert!(
            !r["body"]["data"]["result"].as_array().unwrap().is_empty(),
            "no data for {q}"
        );
    }
    assert!(
        with_data >= exprs.len() / 2,
        "{with_data} of {} queries have data",
        exprs.len()
    );
    let _ = prom.kill();
    let _ = prom.wait();
    let (status, w) = w.stop();
    assert!(status.success(), "{}", w.stderr());
}
