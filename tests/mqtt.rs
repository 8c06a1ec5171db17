//! The MQTT connector against a real Mosquitto broker started by the tests on free loopback
//! ports: windowed results, topic captures and payload formats, bad input, broker restarts
//! and engine stalls, TLS and password listeners, MQTT 5, and the MQTT sink.
#![allow(clippy::unwrap_used)] // a test (or bench) fails by panicking

use weir_test_support::mosquitto;
use weir_test_support::weir_process;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mosquitto::{Mosquitto, PASSWORD, USER};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use weir_process::WeirProcess;

/// 2026-01-01T00:00:00Z in milliseconds.
const T0: i64 = 1_767_225_600_000;

/// Messages a test client received: (topic, payload).
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A plain test client on the broker's anonymous listener.
struct TestClient {
    client: Client,
    acked: Arc<AtomicUsize>,
    received: Received,
}

impl TestClient {
    fn connect(port: u16, id: &str) -> TestClient {
        Self::connect_with_max(port, id, 1 << 20)
    }

    /// A client that can send and receive packets of up to `max` bytes.
    fn connect_with_max(port: u16, id: &str, max: usize) -> TestClient {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_max_packet_size(max, max);
        o.set_keep_alive(Duration::from_secs(30));
        let (client, mut connection) = Client::new(o, 1000);
        let acked = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (a, r) = (Arc::clone(&acked), Arc::clone(&received));
        std::thread::spawn(move || {
            for ev in connection.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        a.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        r.lock().unwrap().push((p.topic, p.payload.to_vec()));
                    }
                    Ok(_) => {}
                    Err(rumqttc::ConnectionError::RequestsDone) => return,
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        TestClient {
            client,
            acked,
            received,
        }
    }

    /// Publishes `messages` at QoS 1 and waits until the broker acknowledged all of them.
    fn publish_all(&self, messages: &[(String, Vec<u8>)]) {
        let before = self.acked.load(Ordering::SeqCst);
        for (topic, payload) in messages {
            self.client
                .publish(topic, QoS::AtLeastOnce, false, payload.clone())
                .unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.acked.load(Ordering::SeqCst) < before + messages.len() {
            assert!(std::time::Instant::now() < deadline, "broker did not ack");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn subscribe(&self, filter: &str) {
        self.client.subscribe(filter, QoS::AtLeastOnce).unwrap();
    }
}

fn json_message(topic: &str, v: Value) -> (String, Vec<u8>) {
    (topic.to_string(), v.to_string().into_bytes())
}

/// The first `n` rows printed by the stdout sink, as strings of the named fields.
fn field_rows(w: &WeirProcess, fields: &[&str]) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = w
        .rows()
        .iter()
        .map(|r| {
            fields
                .iter()
                .map(|f| match &r[*f] {
                    Value::String(s) => s.clone(),
                    v => v.to_string(),
                })
                .collect()
        })
        .collect();
    out.sort();
    out
}

#[test]
fn windows_over_mqtt_messages_match_an_independent_computation() {
    let broker = Mosquitto::start("");
    let mut weir = WeirProcess::start(
        &format!(
            "CREATE SOURCE telemetry (line VARCHAR, machine VARCHAR, sensor VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (
                connector = 'mqtt', url = 'mqtt://127.0.0.1:{}', topic = 'factory/{{line}}/{{machine}}/{{sensor}}',
                json_paths = 'value = data.value', event_time = 'ts', watermark = '2s');
             CREATE SINK out WITH (connector = 'stdout', format = 'ndjson');
             INSERT INTO out SELECT line, machine, sensor, window_start, count(*) AS n, sum(value) AS total, max(value) AS peak
             FROM TUMBLE(telemetry, ts, INTERVAL '1' SECOND) GROUP BY line, machine, sensor, window_start, window_end;",
            broker.port
        ),
        &[],
    );
    weir.wait_log("mqtt connected", 1);
    // 3 machines × 2 sensors, a reading every 50 ms for 10 s, published up to 1 s out of
    // order (inside the 2 s watermark)
    let mut readings = Vec::new();
    for m in 0..3 {
        for s in ["temp", "vib"] {
            for i in 0..200i64 {
                let ts = T0 + i * 50;
                let value =
                    ((i * 37 + m * 11) % 101) as f64 / 4.0 + if s == "vib" { 100.0 } else { 0.0 };
                let jitter = (i * 7919 + m * 13) % 1000;
                readings.push((ts + jitter, format!("M{m}"), s, ts, value));
            }
        }
    }
    readings.sort_by_key(|r| r.0);
    let messages: Vec<(String, Vec<u8>)> = readings
        .iter()
        .map(|(_, m, s, ts, v)| {
            json_message(
                &format!("factory/L1/{m}/{s}"),
                json!({"ts": ts, "data": {"value": v}}),
            )
        })
        .collect();
    let publisher = TestClient::connect(broker.port, "test-pub");
    publisher.publish_all(&messages);
    // a reading far later closes every window of the test data
    publisher.publish_all(&[json_message(
        "factory/L1/sentinel/x",
        json!({"ts": T0 + 60_000, "data": {"value": 0}}),
    )]);
    let mut expected: BTreeMap<(String, String, i64), (i64, f64, f64)> = BTreeMap::new();
    for (_, m, s, ts, v) in &readings {
        let e = expected
            .entry((m.clone(), s.to_string(), ts.div_euclid(1000) * 1000))
            .or_insert((0, 0.0, f64::MIN));
        e.0 += 1;
        e.1 += v;
        e.2 = e.2.max(*v);
    }
    weir.wait_rows(expected.len());
    let (status, weir) = weir.stop();
    assert!(status.success(), "{}", weir.stderr());
    let rows = weir.rows();
    let mut got = BTreeMap::new();
    for r in rows.iter().filter(|r| r["machine"] != "sentinel") {
        assert_eq!(r["line"], "L1");
        let start = r["window_start"].as_str().unwrap();
        let start_ms = chrono_ms(start);
        let key = (
            r["machine"].as_str().unwrap().to_string(),
            r["sensor"].as_str().unwrap().to_string(),
            start_ms,
        );
        let prev = got.insert(
            key,
            (
                r["n"].as_i64().unwrap(),
                r["total"].as_f64().unwrap(),
                r["peak"].as_f64().unwrap(),
            ),
        );
        assert!(prev.is_none(), "window emitted twice: {r}");
    }
    assert_eq!(got.len(), expected.len());
    for (k, (n, total, peak)) in &expected {
        let g = got.get(k).unwrap_or_else(|| panic!("missing window {k:?}"));
        assert_eq!(g.0, *n, "{k:?}");
        assert!((g.1 - total).abs() < 1e-9, "{k:?}: {} vs {total}", g.1);
        assert_eq!(g.2, *peak, "{k:?}");
    }
    assert!(
        weir.stderr().contains("0 late rows dropped"),
        "{}",
        weir.stderr()
    );
}

/// Milliseconds since the epoch of an RFC 3339-like time printed by the sinks.
fn chrono_ms(s: &str) -> i64 {
    let t = arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(s).unwrap();
    t / 1_000_000
}

#[test]
fn topic_levels_paths_arrays_time_formats_and_raw_payloads() {
    let broker = Mosquitto::start("");
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let mut weir = WeirProcess::start(
        &format!(
            "CREATE SOURCE ms (site VARCHAR, machine VARCHAR, ts TIMESTAMP, temp DOUBLE, qty INT, topic VARCHAR, received TIMESTAMP) WITH (
                connector = 'mqtt', url = '{url}', topic = 'ms/{{site}}/{{machine}}',
                json_paths = 'temp = data.temperature.value', topic_column = 'topic', arrival_time = 'received');
             CREATE SOURCE secs (machine VARCHAR, ts TIMESTAMP, ok BOOLEAN) WITH (
                connector = 'mqtt', url = '{url}', topic = 'secs/+/{{machine}}, other/{{machine}}', timestamp_unit = 's', protocol = '5');
             CREATE SOURCE raw (machine VARCHAR, line VARCHAR, received TIMESTAMP) WITH (
                connector = 'mqtt', url = '{url}', topic = 'raw/{{machine}}', format = 'raw', payload_column = 'line', arrival_time = 'received');
             CREATE SINK out WITH (connector = 'stdout', format = 'ndjson');
             CREATE SINK out2 WITH (connector = 'stdout', format = 'ndjson');
             CREATE SINK out3 WITH (connector = 'stdout', format = 'ndjson');
             INSERT INTO out SELECT 'ms' AS src, site, machine, CAST(ts AS VARCHAR) AS t, temp, qty, topic, received IS NOT NULL AS arrived FROM ms;
             INSERT INTO out2 SELECT 'secs' AS src, machine, CAST(ts AS VARCHAR) AS t, ok FROM secs;
             INSERT INTO out3 SELECT 'raw' AS src, machine, line, received IS NOT NULL AS arrived FROM raw;"
        ),
        &[],
    );
    weir.wait_log("mqtt connected", 3);
    let p = TestClient::connect(broker.port, "test-pub");
    p.publish_all(&[
        json_message("ms/north/M1", json!({"ts": 1_767_225_600_250i64, "data": {"temperature": {"value": 20.5}}, "qty": 3})),
        json_message("ms/north/M2", json!([
            {"ts": "2026-01-01T00:00:01.5Z", "data": {"temperature": {"value": "21.25"}}, "qty": "4"},
            {"TS": "1767225602000", "QTY": 5.0}
        ])),
        json_message("secs/x/M3", json!({"ts": 1_767_225_600.125, "ok": true})),
        json_message("other/M4", json!({"ts": "2026-01-01T02:00:00+02:00", "ok": "false"})),
        ("raw/M5".to_string(), b"ALARM 42".to_vec()),
    ]);
    weir.wait_rows(6);
    let (status, weir) = weir.stop();
    assert!(status.success(), "{}", weir.stderr());
    let ms = field_rows(
        &weir,
        &[
            "src", "site", "machine", "t", "temp", "qty", "topic", "arrived",
        ],
    );
    let ms: Vec<_> = ms.into_iter().filter(|r| r[0] == "ms").collect();
    let want = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        ms,
        vec![
            want(&[
                "ms",
                "north",
                "M1",
                "2026-01-01T00:00:00.250",
                "20.5",
                "3",
                "ms/north/M1",
                "true"
            ]),
            want(&[
                "ms",
                "north",
                "M2",
                "2026-01-01T00:00:01.500",
                "21.25",
                "4",
                "ms/north/M2",
                "true"
            ]),
            want(&[
                "ms",
                "north",
                "M2",
                "2026-01-01T00:00:02",
                "null",
                "5",
                "ms/north/M2",
                "true"
            ]),
        ]
    );
    let secs: Vec<_> = field_rows(&weir, &["src", "machine", "t", "ok"])
        .into_iter()
        .filter(|r| r[0] == "secs")
        .collect();
    assert_eq!(
        secs,
        vec![
            want(&["secs", "M3", "2026-01-01T00:00:00.125", "true"]),
            want(&["secs", "M4", "2026-01-01T00:00:00", "false"]),
        ]
    );
    let raw: Vec<_> = field_rows(&weir, &["src", "machine", "line", "arrived"])
        .into_iter()
        .filter(|r| r[0] == "raw")
        .collect();
    assert_eq!(raw, vec![want(&["raw", "M5", "ALARM 42", "true"])]);
}

/// A JSON source on `in/{machine}` with `max_packet_size = '1KiB'` and the dead-letter
/// `options`, printing machine and value; started and connected.
fn dead_lettering(port: u16, options: &str) -> WeirProcess {
    let mut weir = WeirProcess::start(
        &format!(
            "CREATE SOURCE s (machine VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (
                connector = 'mqtt', url = 'mqtt://127.0.0.1:{port}', topic = 'in/{{machine}}', event_time = 'ts',
                max_packet_size = '1KiB', {options});
             CREATE SINK out WITH (connector = 'stdout', format = 'ndjson');
             INSERT INTO out SELECT machine, value FROM s;"
        ),
        &[],
    );
    weir.wait_log("mqtt connected", 1);
    weir
}

#[test]
fn bad_messages_are_counted_skipped_and_kept_as_dead_letters() {
    let broker = Mosquitto::start("");
    let mut weir = dead_lettering(broker.port, "dead_letter = 'dead/letters.ndjson'");
    let p = TestClient::connect(broker.port, "test-pub");
    let big = format!(
        "{{\"ts\": {T0}, \"value\": 1, \"pad\": \"{}\"}}",
        "x".repeat(2000)
    );
    let bad: Vec<(String, Vec<u8>, &str)> = vec![
        ("in/B1".into(), b"{\"ts\": 1".to_vec(), "malformed_json"),
        ("in/B2".into(), b"{\"value\": 1}".to_vec(), "missing_field"),
        (
            "in/B3".into(),
            format!("{{\"ts\": {T0}, \"value\": \"hot\"}}").into_bytes(),
            "wrong_type",
        ),
        ("in/B4".into(), big.into_bytes(), "oversized"),
        ("in/B5".into(), b"[1, 2]".to_vec(), "not_an_object"),
    ];
    let mut messages = vec![json_message("in/G1", json!({"ts": T0, "value": 1.5}))];
    messages.extend(bad.iter().map(|(t, b, _)| (t.clone(), b.clone())));
    messages.push(json_message("in/G2", json!({"ts": T0 + 1, "value": 2.5})));
    p.publish_all(&messages);
    weir.wait_rows(2);
    let (status, weir) = weir.stop();
    assert!(status.success(), "{}", weir.stderr());
    assert_eq!(
        field_rows(&weir, &["machine", "value"]),
        vec![
            vec!["G1".to_string(), "1.5".into()],
            vec!["G2".into(), "2.5".into()]
        ]
    );
    let log = weir.stderr();
    assert!(
        log.contains("source s: 2 rows, 5 inputs skipped (malformed_json 1, missing_field 1, not_an_object 1, oversized 1, wrong_type 1)"),
        "{log}"
    );
    assert!(
        log.contains("input skipped") && log.contains("in/B1"),
        "logged with the topic: {log}"
    );
    let dead = std::fs::read_to_string(weir.path("dead/letters.ndjson")).unwrap();
    let dead: Vec<Value> = dead
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dead.len(), 5);
    for ((topic, payload, reason), d) in bad.iter().zip(&dead) {
        assert_eq!(d["context"], topic.as_str());
        assert_eq!(d["reason"], *reason);
        assert_eq!(
            d["payload"].as_str().unwrap().as_bytes(),
            payload.as_slice()
        );
    }
}

#[test]
fn dead_letter_files_are_bounded_in_size_and_per_entry() {
    let broker = Mosquitto::start("");
    let mut weir = dead_lettering(
        broker.port,
        "dead_letter = 'dead.ndjson', dead_letter_max_bytes = '64KiB', dead_letter_payload_bytes = '256'",
    );
    let p = TestClient::connect(broker.port, "test-pub");
    // 1,042 messages of 5 KB, each over max_packet_size: 5 MB that used to be kept whole
    let big = |i: usize| {
        let pad = "x".repeat(5_000);
        format!("{{\"ts\": {T0}, \"value\": {i}, \"pad\": \"{pad}\"}}").into_bytes()
    };
    let mut messages: Vec<(String, Vec<u8>)> =
        (0..1_042).map(|i| (format!("in/B{i}"), big(i))).collect();
    messages.push(json_message("in/G1", json!({"ts": T0, "value": 1.5})));
    p.publish_all(&messages);
    weir.wait_rows(1);
    let (status, weir) = weir.stop();
    let log = weir.stderr();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("source s: 1 rows, 1042 inputs skipped (oversized 1042)"),
        "{log}"
    );
    let (current, rotated) = (weir.path("dead.ndjson"), weir.path("dead.ndjson.1"));
    let read = |p: &std::path::Path| -> Vec<Value> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    for f in [&current, &rotated] {
        let size = std::fs::metadata(f).unwrap().len();
        assert!(size <= 64 << 10, "{}: {size} bytes", f.display());
    }
    assert!(log.contains("dead-letter file rotated"), "{log}");
    // the newest entries, oldest first, each its input's first 256 bytes and full size
    let entries: Vec<Value> = read(&rotated).into_iter().chain(read(&current)).collect();
    assert_eq!(entries.last().unwrap()["context"], "in/B1041");
    let first: usize = entries[0]["context"].as_str().unwrap()[4..]
        .parse()
        .unwrap();
    for (n, e) in entries.iter().enumerate() {
        let i = first + n;
        assert_eq!(e["context"], format!("in/B{i}"));
        let payload = e["payload"].as_str().unwrap().as_bytes();
        assert_eq!(payload, &big(i)[..256]);
        assert_eq!(e["truncated"], true);
        assert_eq!(e["payload_bytes"].as_u64(), Some(big(i).len() as u64));
    }
}

fn numbered(prefix: &str, range: std::ops::Range<i64>) -> Vec<(String, Vec<u8>)> {
    range
        .map(|i| json_message(&format!("plant/{prefix}"), json!({"ts": T0 + i, "seq": i})))
        .collect()
}

#[test]
fn reconnects_after_broker_restarts_and_loses_nothing_during_a_stall() {
    let mut broker = Mosquitto::start("max_queued_messages 10000\n");
    broker.kill();
    // the broker is down when the engine starts
    let mut weir = WeirProcess::start(
        &format!(
            "CREATE SOURCE s (machine VARCHAR, ts TIMESTAMP, seq BIGINT) WITH (
                connector = 'mqtt', url = 'mqtt://127.0.0.1:{}', topic = 'plant/{{machine}}', qos = '1',
                clean_session = 'false', client_id = 'weir-restart-test', keep_alive = '5s');
             CREATE SINK out WITH (connector = 'stdout', format = 'ndjson');
             INSERT INTO out SELECT machine, seq FROM s;",
            broker.port
        ),
        &[],
    );
    weir.wait_log("mqtt connection down; reconnecting", 1);
    broker.restart();
    weir.wait_log("mqtt connected", 1);
    let p = TestClient::connect(broker.port, "test-pub-1");
    p.publish_all(&numbered("A", 0..100));
    weir.wait_rows(100);
    // the broker dies and comes back: the engine reconnects and subscribes again
    broker.kill();
    weir.wait_log("mqtt connection down; reconnecting", 2);
    broker.restart();
    weir.wait_log("mqtt connected", 2);
    let p = TestClient::connect(broker.port, "test-pub-2");
    p.publish_all(&numbered("B", 100..200));
    weir.wait_rows(200);
    // the engine stalls (stopped) while messages arrive: the broker holds them
    weir.signal("STOP");
    p.publish_all(&numbered("C", 200..700));
    std::thread::sleep(Duration::from_millis(500));
    weir.signal("CONT");
    weir.wait_rows(700);
    let (status, weir) = weir.stop();
    assert!(status.success(), "{}", weir.stderr());
    let seqs: Vec<i64> = weir
        .rows()
        .iter()
        .map(|r| r["seq"].as_i64().unwrap())
        .collect();
    let unique: BTreeSet<i64> = seqs.iter().copied().collect();
    assert_eq!(
        unique,
        (0..700).collect::<BTreeSet<i64>>(),
        "every message once"
    );
    assert_eq!(seqs.len(), 700, "no duplicates");
}

#[test]
fn tls_password_and_mqtt5_listeners() {
    let broker = Mosquitto::start("");
    let pipeline = |password_env: &str| {
        format!(
            "CREATE SOURCE over_tls (machine VARCHAR, ts TIMESTAMP, v DOUBLE) WITH (
                connector = 'mqtt', url = 'mqtts://127.0.0.1:{tls}', ca_file = '{ca}', protocol = '5', topic = 'sec/{{machine}}');
             CREATE SOURCE with_password (machine VARCHAR, ts TIMESTAMP, v DOUBLE) WITH (
                connector = 'mqtt', url = 'mqtt://127.0.0.1:{pw}', username = '{USER}', password = '${{{password_env}}}', topic = 'sec/{{machine}}');
             CREATE SINK out WITH (connector = 'stdout', format = 'ndjson');
             INSERT INTO out SELECT 'tls' AS via, machine, v FROM over_tls;
             INSERT INTO out SELECT 'password' AS via, machine, v FROM with_password;",
            tls = broker.tls_port,
            ca = broker.ca_file().display(),
            pw = broker.password_port,
        )
    };
    let mut weir = WeirProcess::start(&pipeline("MQTT_PASSWORD"), &[("MQTT_PASSWORD", PASSWORD)]);
    weir.wait_log("mqtt connected", 2);
    let p = TestClient::connect(broker.port, "test-pub");
    p.publish_all(&[
        json_message("sec/M1", json!({"ts": T0, "v": 1.0})),
        json_message("sec/M2", json!({"ts": T0, "v": 2.0})),
    ]);
    weir.wait_rows(4);
    let (status, weir) = weir.stop();
    assert!(status.success(), "{}", weir.stderr());
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        field_rows(&weir, &["via", "machine", "v"]),
        vec![
            s(&["password", "M1", "1.0"]),
            s(&["password", "M2", "2.0"]),
            s(&["tls", "M1", "1.0"]),
            s(&["tls", "M2", "2.0"])
        ]
    );
    // a wrong password: a clear error, retried, never logged
    let wrong = "not-the-password";
    let mut weir = WeirProcess::start(&pipeline("MQTT_PASSWORD"), &[("MQTT_PASSWORD", wrong)]);
    weir.wait_log("refused the connection", 1);
    let (status, weir) = weir.stop();
    assert!(status.success(), "{}", weir.stderr());
    assert!(
        weir.stderr().contains("user name or password"),
        "{}",
        weir.stderr()
    );
    assert!(
        !weir.stderr().contains(wrong),
        "the password is never logged"
    );
}

#[test]
fn sink_publishes_each_row_as_json_to_its_topic() {
    let broker = Mosquitto::start("");
    let subscriber = TestClient::connect(broker.port, "test-sub");
    subscriber.subscribe("alerts/#");
    std::thread::sleep(Duration::from_millis(300));
    let mut weir = WeirProcess::start(
        &format!(
            "CREATE SOURCE g (machine VARCHAR, sensor VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (
                connector = 'generator', machines = '4', sensors = 'temp', limit = '200', rate = 'max', seed = '7',
                start = '2026-01-01T00:00:00Z');
             CREATE SINK alerts WITH (connector = 'mqtt', url = 'mqtt://127.0.0.1:{}', topic = 'alerts/{{machine}}', qos = '1', protocol = '5');
             CREATE SINK copy WITH (connector = 'file', path = 'copy', format = 'ndjson');
             INSERT INTO alerts SELECT machine, ts, value FROM g;
             INSERT INTO copy SELECT machine, ts, value FROM g;",
            broker.port
        ),
        &[],
    );
    let status = weir.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "{}", weir.stderr());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while subscriber.received.lock().unwrap().len() < 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "received {}",
            subscriber.received.lock().unwrap().len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let published: BTreeSet<String> = subscriber
        .received
        .lock()
        .unwrap()
        .iter()
        .map(|(topic, payload)| {
            let v: Value = serde_json::from_slice(payload).unwrap();
            assert_eq!(topic, &format!("alerts/{}", v["machine"].as_str().unwrap()));
            v.to_string()
        })
        .collect();
    let mut copied = BTreeSet::new();
    for f in std::fs::read_dir(weir.path("copy")).unwrap() {
        for line in std::fs::read_to_string(f.unwrap().path()).unwrap().lines() {
            copied.insert(serde_json::from_str::<Value>(line).unwrap().to_string());
        }
    }
    assert_eq!(copied.len(), 200);
    assert_eq!(
        published, copied,
        "the sink published exactly the rows the file sink wrote"
    );
    assert_eq!(
        subscriber.received.lock().unwrap().len(),
        200,
        "each row once"
    );
}

/// One message far larger than anything the source reads, under the README's production
/// settings (persistent session, QoS 1, fixed client id), on MQTT 3.1.1 and 5: it is taken
/// out at the framing level, acknowledged, counted and dead-lettered; every message after it
/// is processed; nothing is redelivered after a restart; the connection never breaks.
#[test]
fn one_oversized_message_never_stalls_a_persistent_session() {
    for protocol in ["3.1.1", "5"] {
        let broker = Mosquitto::start("");
        let pipeline = format!(
            "CREATE SOURCE s (machine VARCHAR, ts TIMESTAMP, seq BIGINT) WITH (
                connector = 'mqtt', url = 'mqtt://127.0.0.1:{}', protocol = '{protocol}',
                client_id = 'weir-edge-01', clean_session = 'false', qos = '1',
                topic = 'plant/{{machine}}', event_time = 'ts', dead_letter = 'dead.ndjson');
             CREATE SINK out WITH (connector = 'stdout', format = 'ndjson');
             INSERT INTO out SELECT machine, seq FROM s;",
            broker.port
        );
        let mut weir = WeirProcess::start(&pipeline, &[]);
        weir.wait_log("mqtt connected", 1);
        let p = TestClient::connect_with_max(broker.port, "test-big", 16 << 20);
        let mut messages = numbered("A", 0..3);
        // 8 MiB against the default max_packet_size of 1 MiB (more than 4× what was read)
        let big = format!(
            "{{\"ts\": {T0}, \"seq\": -1, \"pad\": \"{}\"}}",
            "x".repeat(8 << 20)
        );
        messages.push(("plant/BIG".to_string(), big.into_bytes()));
        messages.extend(numbered("B", 3..103));
        p.publish_all(&messages);
        weir.wait_rows(103);
        std::thread::sleep(Duration::from_millis(300));
        let (status, weir) = weir.stop();
        let log = weir.stderr();
        assert!(status.success(), "{protocol}: {log}");
        let seqs: BTreeSet<i64> = weir
            .rows()
            .iter()
            .map(|r| r["seq"].as_i64().unwrap())
            .collect();
        assert_eq!(seqs, (0..103).collect::<BTreeSet<i64>>(), "{protocol}");
        assert!(
            log.contains("source s: 103 rows, 1 inputs skipped (oversized 1)"),
            "{protocol}: {log}"
        );
        assert_eq!(
            log.matches("mqtt connected").count(),
            1,
            "{protocol}: the connection never broke: {log}"
        );
        let dead = std::fs::read_to_string(weir.path("dead.ndjson")).unwrap();
        let dead: Vec<Value> = dead
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(dead.len(), 1, "{protocol}");
        assert_eq!(dead[0]["context"], "plant/BIG");
        assert_eq!(dead[0]["reason"], "oversized");
        let kept = dead[0]["payload"].as_str().unwrap();
        assert!(
            kept.starts_with("{\"ts\"") && kept.len() == 4096,
            "{protocol}: {} bytes kept",
            kept.len()
        );
        assert_eq!(dead[0]["truncated"], true);
        assert_eq!(
            dead[0]["payload_bytes"].as_u64(),
            Some(messages[3].1.len() as u64)
        );
        // the session resumes: nothing comes again, new messages do
        let mut again = WeirProcess::start(&pipeline, &[]);
        again.wait_log("mqtt connected", 1);
        p.publish_all(&numbered("C", 103..110));
        again.wait_rows(7);
        std::thread::sleep(Duration::from_millis(300));
        let (status, again) = again.stop();
        assert!(status.success(), "{}", again.stderr());
        let seqs: BTreeSet<i64> = again
            .rows()
            .iter()
            .map(|r| r["seq"].as_i64().unwrap())
            .collect();
        assert_eq!(
            seqs,
            (103..110).collect::<BTreeSet<i64>>(),
            "{protocol}: nothing redelivered"
        );
        assert!(
            !again.stderr().contains("inputs skipped"),
            "{}",
            again.stderr()
        );
    }
}
