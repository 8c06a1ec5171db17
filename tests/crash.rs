//! Crash safety: Weir killed with SIGKILL at random moments (during checkpoint writes,
//! uploads, while the store is down) and started again with the same state directory
//! loses and doubles nothing. Every output is checked against DataFusion batch SQL over the
//! input rows (and, for the generator, against an uninterrupted run); real Mosquitto and
//! s3s-fs, the real `weir` binary.
#![allow(clippy::unwrap_used)] // a test (or bench) fails by panicking

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use weir_test_support::compare::{assert_rows_eq, batch_sql, concat, parquet_dir, rows_of};
use weir_test_support::harness::Lcg;
use weir_test_support::http::{free_port, request};
use weir_test_support::weir_process::WeirProcess;

/// The windows every crash test runs over a source `telemetry (machine, sensor, ts, value)`:
/// each into a Parquet file sink under `out/`: 1-second and 1-minute tumbling windows, a
/// hopping window, a session window, an `ewma` across 1-second windows, and the raw rows.
const WINDOWS: &str = "
CREATE SINK raw  WITH (connector = 'file', path = 'out/raw',  format = 'parquet');
CREATE SINK t1s  WITH (connector = 'file', path = 'out/t1s',  format = 'parquet');
CREATE SINK t1m  WITH (connector = 'file', path = 'out/t1m',  format = 'parquet');
CREATE SINK hop  WITH (connector = 'file', path = 'out/hop',  format = 'parquet');
CREATE SINK sess WITH (connector = 'file', path = 'out/sess', format = 'parquet');
CREATE SINK ew   WITH (connector = 'file', path = 'out/ew',   format = 'parquet');
INSERT INTO raw SELECT machine, sensor, ts, value FROM telemetry;
CREATE VIEW per_second AS SELECT machine, sensor, window_start, window_end, count(*) AS n,
    sum(value) AS total, min(value) AS lo, max(value) AS hi, avg(value) AS mean
  FROM TUMBLE(telemetry, ts, INTERVAL '1' SECOND) GROUP BY machine, sensor, window_start, window_end;
INSERT INTO t1s SELECT * FROM per_second;
INSERT INTO t1m SELECT machine, window_start, count(*) AS n, sum(value) AS total
  FROM TUMBLE(telemetry, ts, INTERVAL '1' MINUTE) GROUP BY machine, window_start;
INSERT INTO hop SELECT machine, window_start, window_end, count(*) AS n, avg(value) AS mean
  FROM HOP(telemetry, ts, INTERVAL '2' SECOND, INTERVAL '6' SECOND) GROUP BY machine, window_start, window_end;
INSERT INTO sess SELECT machine, window_start, window_end, count(*) AS n
  FROM SESSION(telemetry, ts, INTERVAL '50' MILLISECOND)
  WHERE sensor = 'vib' AND value > 0.9 GROUP BY machine, window_start, window_end;
CREATE VIEW temp_1s AS SELECT machine, window_end, avg(value) AS m
  FROM TUMBLE(telemetry, ts, INTERVAL '1' SECOND) WHERE sensor = 'temp'
  GROUP BY machine, window_start, window_end;
INSERT INTO ew SELECT machine, window_end, m, ewma(m, 0.3) OVER (PARTITION BY machine ORDER BY window_end) AS e
  FROM temp_1s;
";

/// Per sink of [`WINDOWS`] (but `raw`), the batch SQL over the input table
/// `t (machine, sensor, ts, value)` that computes the same rows.
const REFERENCES: &[(&str, &str)] = &[
    (
        "t1s",
        "SELECT machine, sensor, date_bin(INTERVAL '1 second', ts) AS ws, \
           date_bin(INTERVAL '1 second', ts) + INTERVAL '1 second' AS we, \
           count(*), sum(value), min(value), max(value), avg(value) FROM t GROUP BY 1, 2, 3, 4",
    ),
    (
        "t1m",
        "SELECT machine, date_bin(INTERVAL '1 minute', ts), count(*), sum(value) FROM t GROUP BY 1, 2",
    ),
    (
        "hop",
        // every row is in the three windows starting at its 2-second slot and the two before
        "SELECT machine, ws, ws + INTERVAL '6 seconds', count(*), avg(value) FROM ( \
           SELECT machine, value, date_bin(INTERVAL '2 seconds', ts) AS ws FROM t UNION ALL \
           SELECT machine, value, date_bin(INTERVAL '2 seconds', ts) - INTERVAL '2 seconds' FROM t UNION ALL \
           SELECT machine, value, date_bin(INTERVAL '2 seconds', ts) - INTERVAL '4 seconds' FROM t) \
         GROUP BY machine, ws",
    ),
    (
        "sess",
        // a new session wherever a row is 50 ms or more after the previous one of its machine
        "WITH f AS (SELECT machine, ts, CAST(ts AS BIGINT) AS n FROM t WHERE sensor = 'vib' AND value > 0.9), \
         g AS (SELECT machine, ts, CASE WHEN n - lag(n) OVER (PARTITION BY machine ORDER BY n) < 50000000 \
                 THEN 0 ELSE 1 END AS fresh FROM f), \
         h AS (SELECT machine, ts, sum(fresh) OVER (PARTITION BY machine ORDER BY ts, fresh DESC \
                 ROWS UNBOUNDED PRECEDING) AS sid FROM g) \
         SELECT machine, min(ts), max(ts) + INTERVAL '50 milliseconds', count(*) FROM h GROUP BY machine, sid",
    ),
    (
        "ew",
        "SELECT machine, we, m, ewma(m, 0.3) OVER (PARTITION BY machine ORDER BY we) FROM ( \
           SELECT machine, date_bin(INTERVAL '1 second', ts) + INTERVAL '1 second' AS we, avg(value) AS m \
           FROM t WHERE sensor = 'temp' GROUP BY machine, we)",
    ),
];

/// Asserts that every window sink under `dir/out` holds exactly what batch SQL computes over
/// `input` (`machine, sensor, ts, value`), and that the raw sink holds exactly `input`.
async fn assert_exact(dir: &Path, input: &[RecordBatch]) {
    let raw = concat(&parquet_dir(&dir.join("out/raw"))).expect("raw rows");
    let want = concat(input).unwrap();
    assert_rows_eq(&rows_of(&raw), &rows_of(&want));
    for (sink, sql) in REFERENCES {
        let got = concat(&parquet_dir(&dir.join("out").join(sink)))
            .unwrap_or_else(|| panic!("sink {sink} wrote nothing"));
        let want = batch_sql(input, sql).await;
        assert!(want.num_rows() > 0, "{sink}: the reference is empty");
        let (got, want) = (rows_of(&got), rows_of(&want));
        if got != want {
            assert_rows_eq(&got, &want);
        }
        eprintln!("{sink}: {} rows, exact", got.len());
    }
}

/// The newest complete checkpoint's directory.
fn newest_checkpoint(state: &Path) -> Option<std::path::PathBuf> {
    let mut all: Vec<_> = std::fs::read_dir(state.join("checkpoints"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.parse::<u64>().is_ok())
        })
        .collect();
    all.sort();
    all.pop()
}

/// Damages the newest checkpoint as a bad disk would: its largest file loses its tail.
fn tear_newest_checkpoint(state: &Path) -> bool {
    let Some(dir) = newest_checkpoint(state) else {
        return false;
    };
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| (e.metadata().unwrap().len(), e.path()))
        .filter(|(_, p)| !p.ends_with("SUMS"))
        .collect();
    files.sort();
    let Some((len, file)) = files.pop() else {
        return false;
    };
    let f = std::fs::File::options().write(true).open(&file).unwrap();
    f.set_len(len / 2).unwrap();
    true
}

/// `args` and `--open-windows emit`: the last run of a test emits its open windows when it
/// is stopped.
fn emitting<'a>(args: &[&'a str]) -> Vec<&'a str> {
    args.iter()
        .copied()
        .chain(["--open-windows", "emit"])
        .collect()
}

/// True while a checkpoint is being written (its temporary directory exists).
fn writing_checkpoint(state: &Path) -> bool {
    std::fs::read_dir(state.join("checkpoints")).is_ok_and(|d| {
        d.flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
    })
}

/// Kills `w` with SIGKILL `kills` times at random moments (`min_ms`..`max_ms` after each
/// start), starting it again with `args` each time; the second kill comes while a checkpoint
/// is being written, and the newest checkpoint is torn after the kill numbered `tear_after`
/// (once the checkpoint before it was complete and committed); `between(kill number)` runs
/// while it is down.
fn kill_loop(
    w: &mut WeirProcess,
    args: &[&str],
    kills: usize,
    (min_ms, max_ms): (u64, u64),
    tear_after: Option<usize>,
    seed: u64,
    mut between: impl FnMut(usize),
) {
    let mut rng = Lcg(seed);
    let state = w.path("state");
    for k in 1..=kills {
        std::thread::sleep(Duration::from_millis(min_ms + rng.below(max_ms - min_ms)));
        if k == 2 {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !writing_checkpoint(&state) {
                assert!(Instant::now() < deadline, "no checkpoint written");
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        if tear_after == Some(k) {
            // a checkpoint completes and its output is committed: then the disk damages it
            let before = newest_checkpoint(&state);
            let deadline = Instant::now() + Duration::from_secs(10);
            while newest_checkpoint(&state) == before {
                assert!(Instant::now() < deadline, "no new checkpoint");
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(80));
        }
        assert!(
            w.is_running(),
            "weir ended before kill {k}:\n{}",
            w.stderr()
        );
        w.kill9();
        if tear_after == Some(k) {
            assert!(tear_newest_checkpoint(&state), "nothing to tear");
        }
        between(k);
        w.respawn(args, &[]);
    }
}

/// Columns `machine, sensor, ts, value` of `batches` (the raw sink's or the input's).
fn input_columns(batches: &[RecordBatch]) -> Vec<RecordBatch> {
    batches
        .iter()
        .map(|b| {
            let idx: Vec<usize> = ["machine", "sensor", "ts", "value"]
                .iter()
                .map(|c| b.schema().index_of(c).unwrap())
                .collect();
            b.project(&idx).unwrap()
        })
        .collect()
}

const GENERATOR: &str = "CREATE SOURCE telemetry (machine VARCHAR, sensor VARCHAR, ts TIMESTAMP, value DOUBLE, seq BIGINT) WITH (
    connector = 'generator', machines = '3', sensors = 'vib,temp', interval = '10ms', limit = '36000',
    start = '2026-01-01T00:00:00Z', seed = '7', disorder = '40ms', event_time = 'ts', watermark = '100ms'{rate});
CREATE SINK seqs WITH (connector = 'file', path = 'out/seqs', format = 'parquet');
INSERT INTO seqs SELECT seq FROM telemetry;";

/// The acceptance test with the generator: killed 12 times (once with the newest checkpoint
/// torn afterwards), every row of every window exactly once, equal to batch SQL over the
/// input and the input equal to an uninterrupted run's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generator_killed_twelve_times_loses_and_doubles_nothing() {
    let pipeline = format!(
        "{}{WINDOWS}",
        GENERATOR.replace("{rate}", ", rate = '3000'")
    );
    let args = ["--state-dir", "state", "--checkpoint-interval", "200ms"];
    let mut w = WeirProcess::start_with(&pipeline, &args, &[]);
    kill_loop(&mut w, &args, 12, (300, 1300), Some(6), 17, |_| {});
    let status = w.wait_exit(Duration::from_secs(120));
    let log = w.stderr();
    assert!(status.success(), "{log}");
    assert!(log.contains("checkpoint is torn or corrupt"), "{log}");
    assert!(
        log.matches("restored the newest checkpoint").count() >= 10,
        "{log}"
    );
    // every generated row exactly once
    let seqs = concat(&parquet_dir(&w.path("out/seqs"))).unwrap();
    let mut seen: Vec<i64> = seqs.column(0).as_primitive::<Int64Type>().values().to_vec();
    seen.sort_unstable();
    assert_eq!(seen, (0..36_000).collect::<Vec<i64>>());
    // the same rows as a run that was never killed (no checkpoints, no pacing)
    let mut whole = WeirProcess::start(
        &format!(
            "{}{WINDOWS}",
            GENERATOR.replace("{rate}", ", rate = '10000000'")
        ),
        &[],
    );
    assert!(whole.wait_exit(Duration::from_secs(60)).success());
    let killed_raw = input_columns(&parquet_dir(&w.path("out/raw")));
    let whole_raw = input_columns(&parquet_dir(&whole.path("out/raw")));
    assert_eq!(
        rows_of(&concat(&killed_raw).unwrap()),
        rows_of(&concat(&whole_raw).unwrap())
    );
    assert_exact(w.dir.path(), &whole_raw).await;
    // and the summary counts every row once, across the restarts
    assert!(log.contains("source telemetry: 36000 rows"), "{log}");
}

/// Rows every 10 ms for 30 s of event time: machines M1..M3, a vibration sine (sessions
/// form where it peaks) and a temperature.
fn telemetry_rows() -> Vec<(String, String, i64, f64)> {
    let mut rows = Vec::new();
    let mut rng = Lcg(23);
    for tick in 0..3000i64 {
        let t = T0_MS + tick * 10;
        for m in 1..=3 {
            let s = t as f64 / 1000.0;
            let vib = (std::f64::consts::TAU * 13.0 * s + m as f64).sin();
            let temp = 60.0 + m as f64 + (rng.below(1000) as f64) / 1000.0;
            rows.push((format!("M{m}"), "vib".to_string(), t, vib));
            rows.push((format!("M{m}"), "temp".to_string(), t, temp));
        }
    }
    rows
}

/// 2026-01-01T00:00:00Z in milliseconds.
const T0_MS: i64 = 1_767_225_600_000;

/// `rows` as a batch `machine, sensor, ts, value` (the reference's input table).
fn telemetry_batch(rows: &[(String, String, i64, f64)]) -> RecordBatch {
    use arrow::array::{Float64Array, StringArray, TimestampNanosecondArray};
    RecordBatch::try_from_iter([
        (
            "machine",
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.0))) as _,
        ),
        (
            "sensor",
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.1))) as _,
        ),
        (
            "ts",
            Arc::new(TimestampNanosecondArray::from_iter_values(
                rows.iter().map(|r| r.2 * 1_000_000),
            )) as _,
        ),
        (
            "value",
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.3))) as _,
        ),
    ])
    .unwrap()
}

/// The file source replaying a CSV file at 3× its event-time pace, killed 10 times: every
/// window equals batch SQL over the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_source_killed_ten_times_resumes_where_its_checkpoint_left_off() {
    let rows = telemetry_rows();
    let mut csv = String::from("machine,sensor,ts,value\n");
    for (m, s, t, v) in &rows {
        csv.push_str(&format!("{m},{s},{t},{v}\n"));
    }
    let pipeline = format!(
        "CREATE SOURCE telemetry (machine VARCHAR, sensor VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (
            connector = 'file', path = 'input.csv', pace = 'original', speed = '3', batch_rows = '120',
            event_time = 'ts', watermark = '100ms');
         {WINDOWS}"
    );
    let args = ["--state-dir", "state", "--checkpoint-interval", "250ms"];
    let mut w =
        WeirProcess::start_with_files(&pipeline, &[("input.csv", csv.as_bytes())], &args, &[]);
    kill_loop(&mut w, &args, 10, (300, 1200), None, 29, |_| {});
    let status = w.wait_exit(Duration::from_secs(120));
    let log = w.stderr();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("resuming after the checkpoint's position"),
        "{log}"
    );
    assert_exact(w.dir.path(), &[telemetry_batch(&rows)]).await;
}

/// The value of the metric line starting with `series` on a Prometheus page.
fn metric(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Publishes `rows` as JSON messages at QoS 1 on `plant/data`, about `per_second` a second,
/// each acknowledged by the broker.
fn publish(port: u16, rows: Vec<(String, String, i64, f64)>, per_second: u64) {
    use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
    let mut o = MqttOptions::new("crash-publisher", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut connection) = Client::new(o, 200);
    let acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let a = Arc::clone(&acked);
    std::thread::spawn(move || {
        for ev in connection.iter() {
            match ev {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                Err(rumqttc::ConnectionError::RequestsDone) => return,
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
                _ => {}
            }
        }
    });
    let started = Instant::now();
    let n = rows.len();
    for (i, (m, s, t, v)) in rows.into_iter().enumerate() {
        let due = started + Duration::from_micros(i as u64 * 1_000_000 / per_second);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let payload = serde_json::json!({ "machine": m, "sensor": s, "ts": t, "value": v });
        client
            .publish("plant/data", QoS::AtLeastOnce, false, payload.to_string())
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.load(std::sync::atomic::Ordering::SeqCst) < n {
        assert!(
            Instant::now() < deadline,
            "the broker did not take every message"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = client.disconnect();
}

/// The acceptance test: a QoS 1 publisher into real Mosquitto, Weir with a persistent
/// session writing windows to s3s-fs and to file sinks, killed 12 times at random moments
/// (during checkpoint writes, during uploads, once while the store is down and files are
/// spilled, once with its newest checkpoint torn afterwards). In the end the bucket and the
/// file sinks hold exactly what batch SQL computes over the published messages: nothing
/// lost, nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_to_s3_killed_twelve_times_is_exactly_once() {
    use weir_test_support::mosquitto::Mosquitto;
    use weir_test_support::s3::{ACCESS_KEY, BUCKET, S3Server, SECRET_KEY};
    // the broker may hold 200 unacknowledged messages per client and queues without limit
    // while Weir is down
    let broker = Mosquitto::start("max_inflight_messages 200\nmax_queued_messages 0");
    let mut s3 = S3Server::start();
    let http = free_port();
    let pipeline = format!(
        "CREATE SOURCE telemetry (machine VARCHAR, sensor VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (
            connector = 'mqtt', url = 'mqtt://127.0.0.1:{port}', topic = 'plant/data', qos = '1',
            client_id = 'weir-crash', clean_session = 'false', max_unacked = '200',
            batch_latency = '20ms', event_time = 'ts', watermark = '200ms', idle_timeout = '1h');
         CREATE SINK cloud WITH (connector = 'object_store', url = 's3://{BUCKET}/crash', endpoint = '{endpoint}',
            region = 'us-east-1', access_key_id = '{ACCESS_KEY}', secret_access_key = '{SECRET_KEY}',
            spill_dir = 'spill', timeout = '2s');
         {WINDOWS}
         INSERT INTO cloud SELECT * FROM per_second;",
        port = broker.port,
        endpoint = s3.endpoint(),
    );
    let http_arg = format!("127.0.0.1:{http}");
    let args = [
        "--state-dir",
        "state",
        "--checkpoint-interval",
        "300ms",
        "--http-addr",
        &http_arg,
    ];
    let rows = telemetry_rows();
    let mut w = WeirProcess::start_with(&pipeline, &args, &[]);
    w.wait_log("mqtt connected", 1);
    std::thread::sleep(Duration::from_millis(500)); // the persistent session's subscription
    let (port, published) = (broker.port, rows.clone());
    let publisher = std::thread::spawn(move || publish(port, published, 1500));
    let spilled = std::cell::Cell::new(false);
    let spill_dir = w.path("spill/cloud");
    kill_loop(&mut w, &args, 12, (300, 1300), Some(9), 41, |k| match k {
        // the store goes down: files spill, and Weir is killed with spilled files
        3 => s3.kill(),
        5 => {
            spilled.set(
                std::fs::read_dir(&spill_dir)
                    .map(|d| {
                        d.flatten()
                            .any(|e| e.path().extension().is_some_and(|x| x == "parquet"))
                    })
                    .unwrap_or(false),
            );
            s3.restart();
        }
        _ => {}
    });
    publisher.join().unwrap();
    assert!(spilled.get(), "files were spilled while the store was down");
    // the last run takes the rest; stopped, it emits its open windows
    w.kill9();
    w.respawn(&emitting(&args), &[]);
    let n = rows.len() as f64;
    let counted = || {
        request(http, "GET", "/metrics")
            .and_then(|(_, page)| metric(&page, "weir_source_rows_total{source=\"telemetry\"}"))
            .unwrap_or(0.0)
    };
    w.wait_for("every message counted", Duration::from_secs(120), |_| {
        counted() >= n
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(counted(), n, "every message exactly once");
    let (status, w) = w.stop();
    let log = w.stderr();
    assert!(status.success(), "{log}");
    assert!(log.contains("checkpoint is torn or corrupt"), "{log}");
    assert!(log.contains("restored the newest checkpoint"), "{log}");
    let input = [telemetry_batch(&rows)];
    assert_exact(w.dir.path(), &input).await;
    // the bucket holds the 1-second windows exactly once
    let objects = s3.objects("crash").await;
    let batches: Vec<RecordBatch> = objects.into_iter().flat_map(|(_, b)| b).collect();
    let cloud = concat(&batches).expect("objects in the bucket");
    let want = batch_sql(&input, REFERENCES[0].1).await;
    assert_rows_eq(&rows_of(&cloud), &rows_of(&want));
    drop(broker);
}

/// Exactly-once acknowledgements are not bound to the checkpoint interval (an hour here):
/// the broker stops at 20 unacknowledged messages, and the source asks for the checkpoints
/// that let it acknowledge them — at half of `max_unacked`, or, told a limit ten times too
/// high, when the messages stop coming. Every message arrives, once. (Mosquitto 2.0.11
/// holds the first 20 back and may let more through later, so how many checkpoints that
/// takes depends on the broker; that none comes from the interval does not.)
#[test]
fn exactly_once_mqtt_is_not_bound_to_the_checkpoint_interval() {
    use weir_test_support::mosquitto::Mosquitto;
    let rows: Vec<_> = telemetry_rows().into_iter().take(3000).collect();
    for max_unacked in [20, 200] {
        let broker = Mosquitto::start("max_inflight_messages 20\nmax_queued_messages 0");
        let http = free_port();
        let pipeline = format!(
            "CREATE SOURCE telemetry (machine VARCHAR, sensor VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (
                connector = 'mqtt', url = 'mqtt://127.0.0.1:{port}', topic = 'plant/data', qos = '1',
                client_id = 'weir-early', clean_session = 'false', max_unacked = '{max_unacked}',
                batch_latency = '20ms', event_time = 'ts');
             CREATE SINK raw WITH (connector = 'file', path = 'out/raw', format = 'parquet');
             INSERT INTO raw SELECT * FROM telemetry;",
            port = broker.port,
        );
        let http_arg = format!("127.0.0.1:{http}");
        let args = [
            "--state-dir",
            "state",
            "--checkpoint-interval",
            "1h",
            "--http-addr",
            &http_arg,
        ];
        let mut w = WeirProcess::start_with(&pipeline, &args, &[]);
        w.wait_log("mqtt connected", 1);
        std::thread::sleep(Duration::from_millis(300));
        publish(broker.port, rows.clone(), 100_000);
        let page = || {
            request(http, "GET", "/metrics")
                .map(|(_, p)| p)
                .unwrap_or_default()
        };
        let counted = || metric(&page(), "weir_source_rows_total{source=\"telemetry\"}");
        w.wait_for("every message", Duration::from_secs(60), |_| {
            counted() == Some(rows.len() as f64)
        });
        // a checkpoint asked for is taken a moment later: wait for the last one to complete
        let asked_and_taken = || {
            let p = page();
            let asked = metric(
                &p,
                "weir_mqtt_checkpoints_asked_total{source=\"telemetry\"}",
            );
            (asked, metric(&p, "weir_checkpoints_total{result=\"ok\"}"))
        };
        w.wait_for(
            "every checkpoint asked for",
            Duration::from_secs(30),
            |_| {
                let (asked, taken) = asked_and_taken();
                taken >= asked
            },
        );
        let (asked, taken) = asked_and_taken();
        let (status, w) = w.stop();
        let log = w.stderr();
        assert!(status.success(), "{log}");
        // two checkpoints at least to acknowledge the first 20, every one asked for
        assert!(asked >= Some(2.0), "{asked:?} asked for");
        assert!(taken >= asked, "{taken:?} taken, {asked:?} asked for");
        let raw = concat(&parquet_dir(&w.path("out/raw"))).unwrap();
        assert_eq!(raw.num_rows(), rows.len(), "each message once");
    }
}

/// A generator into a 1-minute window `a` that never changes and a 1-minute window `b` whose
/// aggregate does; the raw rows with their sequence numbers.
fn changing_pipeline(b_aggregate: &str) -> String {
    format!(
        "CREATE SOURCE telemetry (machine VARCHAR, ts TIMESTAMP, value DOUBLE, seq BIGINT) WITH (
            connector = 'generator', machines = '3', sensors = 'temp', interval = '10ms', limit = '24000',
            rate = '3000', start = '2026-01-01T00:00:00Z', seed = '3', event_time = 'ts', watermark = '100ms');
         CREATE SINK raw WITH (connector = 'file', path = 'out/raw', format = 'parquet');
         CREATE SINK a WITH (connector = 'file', path = 'out/a', format = 'parquet');
         CREATE SINK b WITH (connector = 'file', path = 'out/b', format = 'parquet');
         INSERT INTO raw SELECT machine, ts, value, seq FROM telemetry;
         INSERT INTO a SELECT machine, window_start, count(*) AS n, sum(value) AS total
           FROM TUMBLE(telemetry, ts, INTERVAL '1' MINUTE) GROUP BY machine, window_start;
         INSERT INTO b SELECT machine, window_start, {b_aggregate} AS x
           FROM TUMBLE(telemetry, ts, INTERVAL '1' MINUTE) GROUP BY machine, window_start;"
    )
}

/// A pipeline whose query changes — on a `--watch` reload, and while Weir is down after a
/// crash — starts empty with a warning naming it; the unchanged pipeline keeps its open
/// 1-minute window through both, and it equals batch SQL over every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_pipelines_start_empty_and_unchanged_ones_keep_their_window() {
    let args = [
        "--state-dir",
        "state",
        "--checkpoint-interval",
        "200ms",
        "--watch",
        "--watch-interval",
        "200ms",
    ];
    let mut w = WeirProcess::start_with(&changing_pipeline("max(value)"), &args, &[]);
    w.wait_log("source starting", 1);
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::write(w.path("pipeline.sql"), changing_pipeline("min(value)")).unwrap();
    w.wait_log("reloaded: starting the new pipelines", 1);
    w.wait_log("changed since the checkpoint: it starts empty", 1);
    std::thread::sleep(Duration::from_millis(1500));
    w.kill9();
    std::fs::write(w.path("pipeline.sql"), changing_pipeline("avg(value)")).unwrap();
    w.respawn(&args[..4], &[]);
    let status = w.wait_exit(Duration::from_secs(60));
    let log = w.stderr();
    assert!(status.success(), "{log}");
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("changed since the checkpoint: it starts empty"))
        .collect();
    assert_eq!(warnings.len(), 2, "{log}");
    assert!(
        warnings.iter().all(|l| l.contains("pipeline=b")),
        "{warnings:?}"
    );
    let raw = concat(&parquet_dir(&w.path("out/raw"))).unwrap();
    let mut seqs: Vec<i64> = raw.column(3).as_primitive::<Int64Type>().values().to_vec();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..24_000).collect::<Vec<i64>>());
    // a: its minute went through the reload and the crash
    let a = concat(&parquet_dir(&w.path("out/a"))).unwrap();
    let want = batch_sql(
        std::slice::from_ref(&raw),
        "SELECT machine, date_bin(INTERVAL '1 minute', ts), count(*), sum(value) FROM t GROUP BY 1, 2",
    )
    .await;
    assert_rows_eq(&rows_of(&a), &rows_of(&want));
    // b: only what came after the restored checkpoint of the last start
    let restored_at: i64 = log
        .lines()
        .rev()
        .find(|l| l.contains("restored the newest checkpoint"))
        .and_then(|l| l.split("{\"rows\":").nth(1))
        .and_then(|r| r.split('}').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(restored_at > 0 && restored_at < 24_000);
    let b = concat(&parquet_dir(&w.path("out/b"))).unwrap();
    let want = batch_sql(
        std::slice::from_ref(&raw),
        &format!(
            "SELECT machine, date_bin(INTERVAL '1 minute', ts), avg(value) FROM t WHERE seq >= {restored_at} GROUP BY 1, 2"
        ),
    )
    .await;
    assert_rows_eq(&rows_of(&b), &rows_of(&want));
}

/// Modbus and OPC UA sources cannot replay what they missed: after a restart their
/// pipelines' open windows are restored, the gap is logged and on `/metrics`, and the
/// windows count every value read before and after it.
#[test]
fn live_sources_restore_their_windows_and_report_the_gap() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    use weir_opcua_testserver::{PlantConfig, PlantServer};
    use weir_test_support::modbus_server::{ModbusServer, device};
    let modbus = ModbusServer::tcp(device(&[1]));
    let dir = tempfile::tempdir().unwrap();
    let _opcua = PlantServer::start(PlantConfig::new(
        free_port(),
        &dir.path().join("server-pki"),
    ));
    let url = _opcua.url();
    let pipeline = format!(
        "CREATE SOURCE plc (unit INT, ts TIMESTAMP, a BIGINT) WITH (connector = 'modbus',
            url = 'tcp://127.0.0.1:{modbus}', unit_id = '1', unit_column = 'unit', time_column = 'ts',
            interval = '100ms', registers = 'a = holding 0', event_time = 'ts', watermark = '1s');
         CREATE SOURCE ua (node TEXT, value DOUBLE, source_timestamp TIMESTAMP, status TEXT) WITH (
            connector = 'opcua', url = '{url}', pki_dir = '{pki}', publishing_interval = '100ms',
            nodes = 'M1.Temperature = ns=2;s=Machine1.Temperature',
            event_time = 'source_timestamp', watermark = '1s');
         CREATE SINK mb WITH (connector = 'file', path = 'out/mb', format = 'parquet');
         CREATE SINK ub WITH (connector = 'file', path = 'out/ub', format = 'parquet');
         CREATE SINK mb_raw WITH (connector = 'file', path = 'out/mb_raw', format = 'parquet');
         CREATE SINK ub_raw WITH (connector = 'file', path = 'out/ub_raw', format = 'parquet');
         INSERT INTO mb SELECT window_start, count(*) AS n FROM TUMBLE(plc, ts, INTERVAL '1' HOUR) GROUP BY window_start;
         INSERT INTO ub SELECT window_start, count(*) AS n FROM TUMBLE(ua, source_timestamp, INTERVAL '1' HOUR) GROUP BY window_start;
         INSERT INTO mb_raw SELECT ts FROM plc;
         INSERT INTO ub_raw SELECT source_timestamp FROM ua;",
        modbus = modbus.port,
        pki = dir.path().join("client-pki").display(),
    );
    let http = free_port();
    let http_arg = format!("127.0.0.1:{http}");
    let args = ["--state-dir", "state", "--http-addr", &http_arg];
    let mut w = WeirProcess::start_with(&pipeline, &args, &[]);
    let rows = |_: &WeirProcess, source: &str| {
        request(http, "GET", "/metrics")
            .and_then(|(_, p)| {
                metric(
                    &p,
                    &format!("weir_source_rows_total{{source=\"{source}\"}}"),
                )
            })
            .unwrap_or(0.0)
    };
    w.wait_for("values from both sources", Duration::from_secs(60), |w| {
        rows(w, "plc") >= 10.0 && rows(w, "ua") >= 5.0
    });
    // a stop keeps the open windows in the final checkpoint
    let (status, mut w) = w.stop();
    assert!(status.success(), "{}", w.stderr());
    std::thread::sleep(Duration::from_secs(2));
    w.respawn(&emitting(&args), &[]);
    w.wait_log("cannot replay", 2);
    let page = request(http, "GET", "/metrics").unwrap().1;
    for source in ["plc", "ua"] {
        let gap = metric(
            &page,
            &format!("weir_source_gap_seconds{{source=\"{source}\"}}"),
        )
        .unwrap();
        assert!((2.0..30.0).contains(&gap), "{source}: gap {gap}");
    }
    let before = rows(&w, "plc");
    w.wait_for("values after the restart", Duration::from_secs(60), |w| {
        rows(w, "plc") >= before + 10.0
    });
    std::thread::sleep(Duration::from_millis(500));
    let (status, w) = w.stop();
    let log = w.stderr();
    assert!(status.success(), "{log}");
    for (sink, raw) in [("mb", "mb_raw"), ("ub", "ub_raw")] {
        let raw = concat(&parquet_dir(&w.path(&format!("out/{raw}")))).unwrap();
        let windows = concat(&parquet_dir(&w.path(&format!("out/{sink}")))).unwrap();
        let want = runtime.block_on(batch_sql(
            std::slice::from_ref(&raw),
            &format!(
                "SELECT date_bin(INTERVAL '1 hour', {c}), count(*) FROM t GROUP BY 1",
                c = raw.schema().field(0).name()
            ),
        ));
        assert_rows_eq(&rows_of(&windows), &rows_of(&want));
        // the hour's window holds values from before and after the restart
        let times: Vec<i64> = raw
            .column(0)
            .as_primitive::<arrow::datatypes::TimestampNanosecondType>()
            .values()
            .to_vec();
        let mut sorted = times.clone();
        sorted.sort_unstable();
        let widest = sorted.windows(2).map(|p| p[1] - p[0]).max().unwrap();
        assert!(
            widest >= 1_500_000_000,
            "{sink}: a gap of {widest} ns at most"
        );
    }
}

/// A Parquet file source every reader of which filters on its sensor: the reader leaves the
/// other rows out (half the rows are read, the results are the same), and it goes on
/// exactly where its checkpoint left off after each of 8 kills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_parquet_source_reads_only_what_its_pipelines_want() {
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;
    let rows = telemetry_rows();
    let input = telemetry_batch(&rows);
    let mut parquet = Vec::new();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(2000))
        .build();
    let mut w = ArrowWriter::try_new(&mut parquet, input.schema(), Some(props)).unwrap();
    w.write(&input).unwrap();
    w.close().unwrap();
    let pipeline = "CREATE SOURCE telemetry (machine VARCHAR, sensor VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (
            connector = 'file', path = 'input.parquet', pace = 'original', speed = '3', batch_rows = '100',
            event_time = 'ts', watermark = '100ms');
         CREATE SINK per_second WITH (connector = 'file', path = 'out/per_second', format = 'parquet');
         CREATE SINK peaks WITH (connector = 'file', path = 'out/peaks', format = 'parquet');
         INSERT INTO per_second SELECT machine, window_start, count(*) AS n, avg(value) AS mean
           FROM TUMBLE(telemetry, ts, INTERVAL '1' SECOND) WHERE sensor = 'vib'
           GROUP BY machine, window_start, window_end;
         INSERT INTO peaks SELECT machine, ts, value FROM telemetry WHERE sensor = 'vib' AND value > 0.9;";
    let args = ["--state-dir", "state", "--checkpoint-interval", "250ms"];
    let mut w = WeirProcess::start_with_files(
        pipeline,
        &[("input.parquet", parquet.as_slice())],
        &args,
        &[],
    );
    kill_loop(&mut w, &args, 8, (300, 1100), None, 53, |_| {});
    let status = w.wait_exit(Duration::from_secs(120));
    let log = w.stderr();
    assert!(status.success(), "{log}");
    assert!(log.contains("rows no pipeline reads are left out"), "{log}");
    let vib = rows.iter().filter(|r| r.1 == "vib").count();
    assert!(
        log.contains(&format!("source telemetry: {vib} rows")),
        "only the vibration rows are read: {log}"
    );
    let input = [input];
    for (sink, sql) in [
        (
            "per_second",
            "SELECT machine, date_bin(INTERVAL '1 second', ts), count(*), avg(value) FROM t WHERE sensor = 'vib' GROUP BY 1, 2",
        ),
        (
            "peaks",
            "SELECT machine, ts, value FROM t WHERE sensor = 'vib' AND value > 0.9",
        ),
    ] {
        let got = concat(&parquet_dir(&w.path(&format!("out/{sink}")))).unwrap();
        assert_rows_eq(&rows_of(&got), &rows_of(&batch_sql(&input, sql).await));
    }
}
