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

/// The rows an NDJSON file sink wrote into `dir` (a directory of files).
fn file_sink_rows(dir: &std::path::Path) -> Vec<Value> {
    std::fs::read_dir(dir)
        .unwrap()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A Sparkplug B row as compared: (message type, device, metric, event time in ms (none for
/// a will's stale rows), value as text (numbers normalised), historical, stale).
type SparkplugRow = (
    String,
    Option<String>,
    String,
    Option<i64>,
    Option<String>,
    bool,
    bool,
);

/// A value as the comparison shows it: numbers through f64, the rest as text.
fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Number(n) => Some(format!("{}", n.as_f64().unwrap())),
        // numbers in a text column, as numbers
        Value::String(s) => Some(match serde_json::from_str::<serde_json::Number>(s) {
            Ok(n) => format!("{}", n.as_f64().unwrap()),
            Err(_) => s.clone(),
        }),
        other => Some(other.to_string()),
    }
}

/// The rows Weir must make of what the Tahu edge node sent, computed here from its log:
/// births name aliases; data resolves them; a device death makes its metrics stale; the
/// node's will (its death after `exit`) makes the node's metrics stale.
fn expected_sparkplug_rows(sent: &[(String, Value)]) -> Vec<SparkplugRow> {
    let mut out = Vec::new();
    let mut names: BTreeMap<(Option<String>, u64), String> = BTreeMap::new();
    let mut declared: BTreeMap<Option<String>, Vec<String>> = BTreeMap::new();
    for (topic, p) in sent {
        let levels: Vec<&str> = topic.split('/').collect();
        let (kind, device) = (levels[2], levels.get(4).map(|d| d.to_string()));
        let payload_ts = p["timestamp"].as_i64();
        let metrics = p["metrics"].as_array().cloned().unwrap_or_default();
        if kind.ends_with("BIRTH") {
            declared.insert(
                device.clone(),
                metrics
                    .iter()
                    .map(|m| m["name"].as_str().unwrap().to_string())
                    .collect(),
            );
        }
        for m in &metrics {
            let name = match m["name"].as_str() {
                Some(n) => {
                    if let Some(a) = m["alias"].as_u64() {
                        names.insert((device.clone(), a), n.to_string());
                    }
                    n.to_string()
                }
                None => names[&(device.clone(), m["alias"].as_u64().unwrap())].clone(),
            };
            out.push((
                kind.to_string(),
                device.clone(),
                name,
                m["timestamp"].as_i64().or(payload_ts),
                value_text(&m["value"]),
                m["isHistorical"] == true,
                false,
            ));
        }
        if kind == "DDEATH" {
            for name in &declared[&device] {
                out.push((
                    kind.into(),
                    device.clone(),
                    name.clone(),
                    payload_ts,
                    None,
                    false,
                    true,
                ));
            }
        }
    }
    // the will: the node's own metrics of its last birth
    for name in &declared[&None] {
        out.push(("NDEATH".into(), None, name.clone(), None, None, false, true));
    }
    out.sort();
    out
}

#[test]
fn sparkplug_b_from_an_eclipse_tahu_edge_node() {
    use weir_test_support::http::{free_port, request};
    use weir_test_support::sparkplug::Tahu;

    let broker = Mosquitto::start("");
    let http = free_port();
    let flight = format!("127.0.0.1:{}", free_port());
    let mut weir = WeirProcess::start_with(
        &format!(
            "CREATE SOURCE plant (group VARCHAR, edge_node VARCHAR, device VARCHAR, metric VARCHAR, ts TIMESTAMP,
                value VARCHAR, datatype VARCHAR, is_historical BOOLEAN, is_null BOOLEAN, stale BOOLEAN, seq BIGINT,
                message_type VARCHAR) WITH (
                connector = 'mqtt', url = 'mqtt://127.0.0.1:{}', topic = 'spBv1.0/Plant1/#,spAv1.0/#', qos = '1',
                format = 'sparkplug_b', rebirth = 'true', host_id = 'weir-edge-01', event_time = 'ts',
                watermark = '10m', dead_letter = 'dead.ndjson');
             CREATE SINK out WITH (connector = 'stdout', format = 'ndjson');
             CREATE SINK windows WITH (connector = 'file', path = 'windows', format = 'ndjson');
             CREATE VIEW vibration AS
               SELECT device, window_start, count(*) AS n, sum(CAST(value AS DOUBLE)) AS total,
                      max(CAST(value AS DOUBLE)) AS peak
               FROM TUMBLE(plant, ts, INTERVAL '1' SECOND)
               WHERE metric = 'Vibration' AND message_type = 'DDATA' AND NOT is_historical
               GROUP BY device, window_start, window_end;
             INSERT INTO out SELECT * FROM plant;
             INSERT INTO windows SELECT * FROM vibration;",
            broker.port
        ),
        &[
            "--http-addr",
            &format!("127.0.0.1:{http}"),
            "--flight-addr",
            &flight,
            "--flight-no-auth",
        ],
        &[],
    );
    weir.wait_log("mqtt connected", 1);
    // Weir as primary host: its retained birth now, its death when it stops
    let host = TestClient::connect(broker.port, "scada");
    host.subscribe("spBv1.0/STATE/#");
    let host_states = || -> Vec<Value> {
        host.received
            .lock()
            .unwrap()
            .iter()
            .inspect(|(topic, _)| assert_eq!(topic, "spBv1.0/STATE/weir-edge-01"))
            .map(|(_, p)| serde_json::from_slice(p).unwrap())
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while host_states().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no retained STATE birth"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(host_states()[0]["online"], true);
    let mut node = Tahu::edge_node(broker.port, "Plant1", "Line2", "Pump7", T0);
    node.command("data 60");
    node.command("historical");
    // a sequence gap: Weir asks for a rebirth, the node publishes its births again
    node.command("gap");
    node.command("data 5");
    node.wait_event("rebirth", 1);
    node.command("data 40");
    // not Sparkplug: counted, dead-lettered, the source goes on
    let p = TestClient::connect_with_max(broker.port, "test-pub", 4 << 20);
    let mut huge_name = vec![0x12]; // field 2 (metrics), length-delimited
    let name_len = 1 << 20;
    let mut metric = vec![0x0a]; // field 1 (name)
    let mut n = name_len;
    while n >= 0x80 {
        metric.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    metric.push(n as u8);
    metric.extend(std::iter::repeat_n(b'x', name_len));
    let mut len = metric.len();
    while len >= 0x80 {
        huge_name.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    huge_name.push(len as u8);
    huge_name.extend(metric);
    p.publish_all(&[
        (
            "spBv1.0/Plant1/NDATA/Bad".into(),
            vec![0xff, 0xfe, 0x01, 0x02, 0x03],
        ),
        ("spBv1.0/Plant1/NDATA/Bad".into(), vec![0x12, 0x40, 0x0a]),
        ("spAv1.0/Plant1/NDATA/Old".into(), vec![]),
        ("spBv1.0/Plant1/NDATA/Huge".into(), huge_name),
    ]);
    node.command("ddeath");
    node.command("exit");
    node.wait();
    let expected = expected_sparkplug_rows(&node.sent());
    weir.wait_rows(expected.len());
    let metrics = request(http, "GET", "/metrics").unwrap().1;
    let value = |series: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
    };
    assert_eq!(
        value("weir_sparkplug_seq_errors_total{source=\"plant\"}"),
        1.0
    );
    assert!(value("weir_sparkplug_rebirths_total{source=\"plant\"}") >= 1.0);
    assert_eq!(
        value("weir_sparkplug_nodes{source=\"plant\",state=\"offline\"}"),
        1.0
    );
    let skipped = |reason: &str| {
        value(&format!(
            "weir_source_skipped_total{{source=\"plant\",reason=\"{reason}\"}}"
        ))
    };
    assert_eq!(skipped("malformed_protobuf"), 2.0);
    assert_eq!(skipped("wrong_topic"), 1.0);
    // the 1 MiB metric name: over the source's max_packet_size
    assert_eq!(skipped("oversized"), 1.0);
    let dead = std::fs::read_to_string(weir.path("dead.ndjson")).unwrap();
    assert!(dead.lines().count() >= 3, "{dead}");
    assert!(
        weir.stderr().contains("sparkplug rebirth requested"),
        "{}",
        weir.stderr()
    );
    // the node's state over Flight SQL
    let nodes =
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(weir_test_support::flight::sql_until(
                &flight,
                None,
                "SELECT * FROM system.sparkplug_nodes",
                Duration::from_secs(10),
                |rows| rows.iter().any(|r| r["state"] == "offline"),
            ));
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    let n = &nodes[0];
    assert_eq!(
        (
            &n["source"],
            &n["group"],
            &n["edge_node"],
            &n["births"],
            &n["seq_errors"]
        ),
        (
            &json!("plant"),
            &json!("Plant1"),
            &json!("Line2"),
            &json!(2),
            &json!(1)
        ),
        "{n:?}"
    );
    assert_eq!(
        (&n["devices"], &n["devices_online"]),
        (&json!(1), &json!(0))
    );
    let (status, weir) = weir.stop();
    assert!(status.success(), "{}", weir.stderr());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while host_states().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no STATE death after stopping"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let states = host_states();
    assert_eq!(states[1]["online"], false);
    assert_eq!(
        states[0]["timestamp"], states[1]["timestamp"],
        "Sparkplug 3.0: the death carries the birth's timestamp"
    );
    let rows = weir.rows();
    let mut got: Vec<SparkplugRow> = rows
        .iter()
        .map(|r| {
            let stale = r["stale"] == true;
            assert_eq!(r["group"], "Plant1");
            assert_eq!(r["edge_node"], "Line2");
            assert_eq!(r["is_null"], stale || r["value"].is_null());
            (
                r["message_type"].as_str().unwrap().to_string(),
                r["device"].as_str().map(str::to_string),
                r["metric"].as_str().unwrap().to_string(),
                (r["message_type"] != "NDEATH").then(|| chrono_ms(r["ts"].as_str().unwrap())),
                value_text(&r["value"]),
                r["is_historical"] == true,
                stale,
            )
        })
        .collect();
    got.sort();
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(g, e);
    }
    // the datatypes the births declared, by name
    let types: BTreeMap<&str, &str> = rows
        .iter()
        .filter(|r| r["message_type"] == "NBIRTH")
        .map(|r| {
            (
                r["metric"].as_str().unwrap(),
                r["datatype"].as_str().unwrap(),
            )
        })
        .collect();
    for t in [
        "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64", "Float",
        "Double", "Boolean", "String", "DateTime", "Text", "UUID", "Bytes",
    ] {
        assert_eq!(types[format!("Props/{t}").as_str()], t);
    }
    // windows over the device's vibration, against a computation over what the node sent
    let mut want: BTreeMap<i64, (i64, f64, f64)> = BTreeMap::new();
    for (topic, p) in node.sent() {
        if !topic.contains("/DDATA/") {
            continue;
        }
        for m in p["metrics"].as_array().unwrap() {
            if m["alias"] == 100 && m["isHistorical"] != true {
                let (ts, v) = (
                    m["timestamp"].as_i64().unwrap(),
                    m["value"].as_f64().unwrap(),
                );
                let w = want
                    .entry(ts.div_euclid(1000) * 1000)
                    .or_insert((0, 0.0, f64::MIN));
                w.0 += 1;
                w.1 += v;
                w.2 = w.2.max(v);
            }
        }
    }
    let windows: BTreeMap<i64, (i64, f64, f64)> = file_sink_rows(&weir.path("windows"))
        .into_iter()
        .map(|r| {
            (
                chrono_ms(r["window_start"].as_str().unwrap()),
                (
                    r["n"].as_i64().unwrap(),
                    r["total"].as_f64().unwrap(),
                    r["peak"].as_f64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(
        windows.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (k, (n, total, peak)) in &want {
        let g = windows[k];
        assert_eq!((g.0, g.2), (*n, *peak), "window {k}");
        assert!((g.1 - total).abs() < 1e-9, "window {k}: {} vs {total}", g.1);
    }
}

/// A message a Tahu script published or received: (topic, payload as JSON).
type TahuMessage = (String, Value);

/// A number, or a number in a string (the host prints 64-bit values as strings).
fn number(v: &Value) -> f64 {
    match v {
        Value::String(s) => s.parse().unwrap(),
        v => v.as_f64().unwrap_or_else(|| panic!("not a number: {v}")),
    }
}

/// The messages the host received from edge node `edge_node`, by type.
fn from_edge<'a>(received: &'a [(String, Value)], kind: &str) -> Vec<&'a (String, Value)> {
    received
        .iter()
        .filter(|(t, _)| t.split('/').nth(2) == Some(kind) && t.split('/').nth(3) == Some("weir"))
        .collect()
}

#[test]
fn sparkplug_b_sink_read_by_an_eclipse_tahu_host() {
    use weir_test_support::sparkplug::Tahu;

    let broker = Mosquitto::start("");
    let mut host = Tahu::host(broker.port);
    let pipeline = format!(
        "CREATE SOURCE telemetry (machine VARCHAR, sensor VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (
            connector = 'generator', machines = '3', sensors = 'vib_x', rate = '3000', interval = '2ms',
            event_time = 'ts', watermark = '100ms');
         CREATE SINK spb WITH (connector = 'mqtt', url = 'mqtt://127.0.0.1:{}', format = 'sparkplug_b',
            group = 'Plant1', edge_node = 'weir', device_column = 'machine', time_column = 'window_end');
         CREATE SINK files WITH (connector = 'file', path = 'rows', format = 'ndjson');
         CREATE VIEW health AS
           SELECT machine, window_start, window_end, count(*) AS n, CAST(count(*) AS INT) AS n32,
                  avg(value) AS mean, CAST(max(value) AS FLOAT) AS peak32, max(value) > 0 AS positive,
                  'ok' AS label
           FROM TUMBLE(telemetry, ts, INTERVAL '1' SECOND)
           GROUP BY machine, window_start, window_end;
         INSERT INTO spb SELECT * FROM health;
         INSERT INTO files SELECT * FROM health;",
        broker.port
    );
    let wait_for = |host: &Tahu, what: &str, done: &dyn Fn(&[TahuMessage]) -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !done(&host.received()) {
            let r = host.received();
            assert!(
                std::time::Instant::now() < deadline,
                "the host never saw {what}; {} messages, the last: {:?}",
                r.len(),
                r.iter().rev().take(3).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let weir = WeirProcess::start(&pipeline, &[]);
    wait_for(&host, "an NBIRTH", &|r| from_edge(r, "NBIRTH").len() == 1);
    wait_for(&host, "6 DDATA", &|r| from_edge(r, "DDATA").len() >= 6);
    // a host asks for a rebirth: births again, sequence from 0
    host.command("rebirth Plant1 weir");
    wait_for(&host, "a second NBIRTH", &|r| {
        from_edge(r, "NBIRTH").len() == 2
    });
    let before = from_edge(&host.received(), "DDATA").len();
    wait_for(&host, "more DDATA", &|r| {
        from_edge(r, "DDATA").len() >= before + 6
    });
    let (status, weir) = weir.stop();
    assert!(status.success(), "{}", weir.stderr());
    // a clean stop publishes the NDEATH itself
    wait_for(&host, "an NDEATH", &|r| from_edge(r, "NDEATH").len() == 1);
    let received = host.received();
    let bd_seq = |p: &Value| -> String {
        let m = p["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "bdSeq")
            .unwrap();
        assert_eq!(m["type"], "UInt64");
        m["value"].to_string()
    };
    let births = from_edge(&received, "NBIRTH");
    for (_, b) in &births {
        assert_eq!(
            bd_seq(b),
            bd_seq(&from_edge(&received, "NDEATH")[0].1),
            "NDEATH bdSeq = NBIRTH bdSeq"
        );
        assert!(
            b["metrics"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["name"] == "Node Control/Rebirth" && m["type"] == "Boolean")
        );
    }
    // sequence numbers: 0 at each NBIRTH, then one more per message, wrapping at 256
    let mut expected_seq = None;
    for (topic, p) in received
        .iter()
        .filter(|(t, _)| t.split('/').nth(3) == Some("weir"))
    {
        let kind = topic.split('/').nth(2).unwrap();
        if kind == "NDEATH" || kind == "NCMD" {
            continue;
        }
        let seq = number(&p["seq"]) as u64;
        if kind == "NBIRTH" {
            assert_eq!(seq, 0);
        } else {
            assert_eq!(Some(seq), expected_seq, "{topic}");
        }
        expected_seq = Some((seq + 1) % 256);
    }
    // the births declare every column but the device and time columns, aliases in column order
    let declared = [
        ("window_start", "DateTime"),
        ("n", "Int64"),
        ("n32", "Int32"),
        ("mean", "Double"),
        ("peak32", "Float"),
        ("positive", "Boolean"),
        ("label", "String"),
    ];
    let mut names: BTreeMap<(String, String), String> = BTreeMap::new();
    for (topic, p) in from_edge(&received, "DBIRTH") {
        let device = topic.split('/').nth(4).unwrap().to_string();
        let metrics = p["metrics"].as_array().unwrap();
        let got: Vec<(&str, &str)> = metrics
            .iter()
            .map(|m| (m["name"].as_str().unwrap(), m["type"].as_str().unwrap()))
            .collect();
        assert_eq!(got, declared, "{topic}");
        for (i, m) in metrics.iter().enumerate() {
            assert_eq!(number(&m["alias"]) as usize, i + 1);
            names.insert(
                (device.clone(), m["alias"].to_string()),
                m["name"].as_str().unwrap().to_string(),
            );
        }
    }
    // every DDATA is one row: aliases only, resolved by the births; equal to the file sink's rows
    let row_key = |machine: &str,
                   start: i64,
                   end: i64,
                   n: f64,
                   n32: f64,
                   mean: f64,
                   peak: f64,
                   positive: bool,
                   label: &str| {
        format!("{machine}|{start}|{end}|{n}|{n32}|{mean:.9}|{peak:.3}|{positive}|{label}")
    };
    let mut got: Vec<String> = Vec::new();
    for (topic, p) in from_edge(&received, "DDATA") {
        let device = topic.split('/').nth(4).unwrap();
        let mut row: BTreeMap<String, Value> = BTreeMap::new();
        let mut ts = None;
        for m in p["metrics"].as_array().unwrap() {
            assert!(m["name"].is_null(), "data carry aliases only: {m}");
            let name = &names[&(device.to_string(), m["alias"].to_string())];
            row.insert(name.clone(), m["value"].clone());
            ts = Some(number(&m["timestamp"]) as i64);
        }
        got.push(row_key(
            device,
            number(&row["window_start"]) as i64,
            ts.unwrap(),
            number(&row["n"]),
            number(&row["n32"]),
            number(&row["mean"]),
            number(&row["peak32"]),
            row["positive"] == true,
            row["label"].as_str().unwrap(),
        ));
    }
    let mut want: Vec<String> = file_sink_rows(&weir.path("rows"))
        .into_iter()
        .map(|r| {
            row_key(
                r["machine"].as_str().unwrap(),
                chrono_ms(r["window_start"].as_str().unwrap()),
                chrono_ms(r["window_end"].as_str().unwrap()),
                number(&r["n"]),
                number(&r["n32"]),
                number(&r["mean"]),
                number(&r["peak32"]),
                r["positive"] == true,
                r["label"].as_str().unwrap(),
            )
        })
        .collect();
    got.sort();
    want.sort();
    assert!(want.len() >= 12, "{want:?}");
    assert_eq!(got, want);

    // a second run through a link that goes silent: the broker publishes the will (NDEATH,
    // this run's bdSeq), the sink is born again once it reconnects and sends the rows that
    // waited as historical data; killed, the broker publishes the will again
    let proxy = weir_test_support::tcp_proxy::TcpProxy::start(broker.port);
    let pipeline = pipeline.replace(
        &format!("127.0.0.1:{}'", broker.port),
        &format!("127.0.0.1:{}', keep_alive = '1s'", proxy.port),
    );
    let mut weir = WeirProcess::start(&pipeline, &[]);
    wait_for(&host, "a third NBIRTH", &|r| {
        from_edge(r, "NBIRTH").len() == 3
    });
    proxy.cut();
    wait_for(&host, "the will of the silent link", &|r| {
        from_edge(r, "NDEATH").len() == 2
    });
    std::thread::sleep(Duration::from_secs(1));
    proxy.restore();
    wait_for(&host, "an NBIRTH after reconnecting", &|r| {
        from_edge(r, "NBIRTH").len() == 4
    });
    wait_for(&host, "historical rows after the rebirth", &|r| {
        let reborn = r
            .iter()
            .rposition(|(t, _)| t == "spBv1.0/Plant1/NBIRTH/weir")
            .unwrap();
        r[reborn..]
            .iter()
            .any(|(t, p)| t.contains("/DDATA/") && p["metrics"][0]["isHistorical"] == true)
    });
    weir.kill9();
    wait_for(&host, "the will of the killed process", &|r| {
        from_edge(r, "NDEATH").len() == 3
    });
    let received = host.received();
    let (births, deaths) = (
        from_edge(&received, "NBIRTH"),
        from_edge(&received, "NDEATH"),
    );
    assert_eq!(bd_seq(&deaths[1].1), bd_seq(&births[2].1));
    assert_eq!(bd_seq(&deaths[2].1), bd_seq(&births[3].1));
    drop(host);
}
