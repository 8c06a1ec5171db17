//! MQTT ingestion: messages/s from a real local Mosquitto broker into a windowed pipeline,
//! next to a plain rumqttc subscriber that only counts messages, in the same run.
//!
//! Both drain an identical backlog: each has a persistent session subscribed to `bench/#`;
//! the bench publishes N JSON messages (~100 bytes) at QoS 1, which the broker queues for
//! both sessions; then each connects and is timed until it has taken in all N (for Weir:
//! until the windows it emitted count all N rows). Alternating order, median of 7 rounds.
//!
//! With `checkpoint` (`cargo bench --bench mqtt -- checkpoint`), the same drain by Weir with
//! exactly-once acknowledgements (`--state-dir`: a message is acknowledged once the two
//! newest checkpoints cover it) against acknowledgement on read, alternated in one run, for
//! broker limits of unacknowledged messages per client (`max_inflight_messages`) of 20 (the
//! default), 200 and 1000 (issue: crash safety).
//!
//! With `sparkplug` (`cargo bench --bench mqtt -- sparkplug`), the same drain of Sparkplug B
//! NDATA messages (alias-only payloads, 20 Double metrics each, after an NBIRTH and a
//! DBIRTH that name the aliases) by Weir's `format = 'sparkplug_b'` source into a 1 s
//! window per metric, against the plain subscriber (issue: Sparkplug B); messages/s and
//! metrics/s.
//!
//! Run: `cargo bench --bench mqtt` (needs Debian's mosquitto and openssl, as the tests do).
#![allow(clippy::unwrap_used)] // a test (or bench) fails by panicking

use weir_test_support::mosquitto;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use mosquitto::Mosquitto;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::watch;
use weir_engine::PipelineError;
use weir_engine::connector::{Sink, SinkFactory, SinkSpec};
use weir_engine::parse::options::OptionSpec;
use weir_engine::parse::{Options, parse_file};
use weir_engine::runtime::{RunControl, run};

const N: u64 = 200_000;
const ROUNDS: usize = 7;
const T0: i64 = 1_767_225_600_000;

/// Adds up column `n` of every batch it gets.
struct CountSink(Arc<AtomicU64>);

#[async_trait]
impl Sink for CountSink {
    async fn write(&mut self, batch: RecordBatch) -> anyhow::Result<()> {
        let n = batch.column_by_name("n").expect("column n");
        let n = n.as_primitive::<Int64Type>();
        let total: i64 = (0..n.len()).map(|i| n.value(i)).sum();
        self.0.fetch_add(total as u64, Ordering::Relaxed);
        Ok(())
    }
    async fn close(&mut self, _deadline: tokio::time::Instant) -> anyhow::Result<()> {
        Ok(())
    }
}

struct CountSinkFactory(Arc<AtomicU64>);

impl SinkFactory for CountSinkFactory {
    fn name(&self) -> &'static str {
        "count"
    }
    fn description(&self) -> &'static str {
        "counts rows for the benchmark"
    }
    fn options(&self) -> &'static [&'static [OptionSpec]] {
        &[]
    }
    fn build(&self, _: &SinkSpec, _: &Options) -> Result<Box<dyn Sink>, PipelineError> {
        Ok(Box::new(CountSink(Arc::clone(&self.0))))
    }
}

fn options(id: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_clean_session(false);
    o.set_max_packet_size(1 << 20, 1 << 20);
    o.set_keep_alive(Duration::from_secs(30));
    o
}

/// Connects `id` with a persistent session, subscribes to `bench/#` at QoS 1, disconnects.
async fn make_session(id: &str, port: u16) {
    make_session_on(id, port, "bench/#").await;
}

/// Connects `id` with a persistent session, subscribes to `filter` at QoS 1, disconnects.
async fn make_session_on(id: &str, port: u16, filter: &str) {
    let (c, mut l) = AsyncClient::new(options(id, port), 10);
    c.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = l.poll().await.unwrap() {
            break;
        }
    }
    c.disconnect().await.unwrap();
    // until the DISCONNECT is written (Mosquitto 2.0.21 does not close the socket itself)
    while let Ok(e) = l.poll().await {
        if let Event::Outgoing(Outgoing::Disconnect) = e {
            break;
        }
    }
}

/// Reading `i` of a backlog whose times start at `t0`.
fn payload(t0: i64, i: u64) -> Vec<u8> {
    format!(
        "{{\"ts\":{},\"machine\":\"M{:02}\",\"sensor\":\"vib_x\",\"value\":{:.6},\"status\":\"ok\",\"seq\":{i}}}",
        t0 + i as i64,
        i % 16,
        (i % 1000) as f64 / 7.0
    )
    .into_bytes()
}

/// Publishes the backlog of `round` at QoS 1 (and a last reading far ahead that closes every
/// window). Each round's times start ten days after the last's, so that a message of an
/// earlier round delivered again (its acknowledgement cut off when the engine stopped) is
/// late, not ahead of the new backlog.
async fn publish_backlog(port: u16, round: i64) {
    publish_n(port, round, N).await;
}

/// [`publish_backlog`] of `n` messages.
async fn publish_n(port: u16, round: i64, n: u64) {
    let t0 = T0 + round * 10 * 86_400_000;
    // no more messages in flight than the smallest broker limit of the bench: Mosquitto
    // 2.0.13+ holds an MQTT 3.1.1 publisher to `max_inflight_messages` too
    let mut o = options("bench-publisher", port);
    o.set_inflight(20);
    let (c, mut l) = AsyncClient::new(o, 1000);
    let poller = tokio::spawn(async move {
        let mut acked = 0u64;
        while acked < n + 1 {
            if let Event::Incoming(Packet::PubAck(_)) = l.poll().await.unwrap() {
                acked += 1;
            }
        }
    });
    for i in 0..n {
        c.publish(
            format!("bench/L1/M{:02}", i % 16),
            QoS::AtLeastOnce,
            false,
            payload(t0, i),
        )
        .await
        .unwrap();
    }
    let end = format!(
        "{{\"ts\":{},\"machine\":\"end\",\"value\":0}}",
        t0 + n as i64 + 3_600_000
    );
    c.publish("bench/L1/end", QoS::AtLeastOnce, false, end.into_bytes())
        .await
        .unwrap();
    poller.await.unwrap();
}

/// Plain subscriber: messages/s until it has received N.
async fn drain_plain(port: u16) -> f64 {
    drain_plain_as("bench-plain", port, N, 1).await
}

/// Plain subscriber `id`: messages/s until it has received `n`, then `more` that follow
/// them (not timed).
async fn drain_plain_as(id: &str, port: u16, n: u64, more: u64) -> f64 {
    let start = Instant::now();
    let (_c, mut l) = AsyncClient::new(options(id, port), 10);
    let mut got = 0u64;
    while got < n {
        if let Event::Incoming(Packet::Publish(_)) = l.poll().await.unwrap() {
            got += 1;
        }
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    // take the closing reading too, so the session is empty for the next round
    while got < n + more {
        if let Event::Incoming(Packet::Publish(_)) = l.poll().await.unwrap() {
            got += 1;
        }
    }
    rate
}

/// Weir: messages/s until its windows have counted N rows.
async fn drain_weir(port: u16) -> f64 {
    drain_weir_with(port, N, None).await.0
}

/// Weir: messages/s until its windows have counted `n` rows, and the checkpoints taken; with
/// `exactly_once`, a state directory (checkpoints every 10 s, and whenever half of
/// `max_unacked` is held back) and that `max_unacked`.
async fn drain_weir_with(port: u16, n: u64, exactly_once: Option<u64>) -> (f64, u64) {
    let counted = Arc::new(AtomicU64::new(0));
    let mut connectors = weir_connectors::all();
    connectors.add_sink(Arc::new(CountSinkFactory(Arc::clone(&counted))));
    let max_unacked = exactly_once.unwrap_or(20);
    let sql = format!(
        "CREATE SOURCE s (line VARCHAR, machine VARCHAR, sensor VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (
            connector = 'mqtt', url = 'mqtt://127.0.0.1:{port}', topic = 'bench/{{line}}/#', qos = '1',
            client_id = 'bench-weir', clean_session = 'false', event_time = 'ts', batch_rows = '4096',
            max_unacked = '{max_unacked}');
         CREATE SINK out WITH (connector = 'count');
         INSERT INTO out SELECT machine, window_start, count(*) AS n, avg(value) AS v
         FROM TUMBLE(s, ts, INTERVAL '1' SECOND) GROUP BY machine, window_start, window_end;"
    );
    let file = parse_file("bench.sql", &sql, &|_| None).expect("parses");
    let project = weir_engine::compile(vec![file], &connectors, false)
        .await
        .expect("compiles");
    let (stop_tx, stop) = watch::channel(false);
    let mut control = RunControl::new(stop);
    let state = tempfile::tempdir().unwrap();
    let telemetry = Arc::<weir_engine::observe::telemetry::CheckpointTelemetry>::default();
    if exactly_once.is_some() {
        control.checkpoints = Some(weir_engine::runtime::RunCheckpoints {
            store: Arc::new(
                weir_engine::checkpoint::CheckpointStore::open(state.path(), false).unwrap(),
            ),
            interval: Duration::from_secs(10),
            keep_open_windows: false,
            telemetry: Arc::clone(&telemetry),
        });
    }
    let start = Instant::now();
    let running = tokio::spawn(run(project, control));
    while counted.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let taken = telemetry.counts().taken;
    stop_tx.send(true).unwrap();
    running.await.unwrap();
    (rate, taken)
}

/// Exactly-once acknowledgements against acknowledgement on read, per broker limit.
async fn exactly_once() {
    println!(
        "mqtt exactly-once: drain a backlog of JSON messages (QoS 1) with acknowledgements after checkpoints vs on read, alternated, median of 3 rounds"
    );
    // Mosquitto 2.0.11 (Debian 12) refills its in-flight window by more than one message
    // per acknowledgement (fixed in 2.0.13), so it lets far more than its limit through;
    // later versions (WEIR_MOSQUITTO_DIR) and rumqttd (100) hold to it
    println!("  broker: {}", Mosquitto::version());
    for (inflight, n) in [
        (20u64, 20_000u64),
        (200, 100_000),
        (1000, 100_000),
        (2000, 100_000),
        (5000, 100_000),
    ] {
        let broker = Mosquitto::start_anonymous(&format!(
            "max_queued_messages 0\nmax_inflight_messages {inflight}\nset_tcp_nodelay true\n"
        ));
        compare(
            &format!("mosquitto max_inflight_messages {inflight:>5}"),
            broker.port,
            inflight,
            n,
        )
        .await;
    }
    match Rumqttd::start() {
        Some(broker) => {
            let what = format!("rumqttd in flight {RUMQTTD_INFLIGHT:>17}");
            compare(&what, broker.port, RUMQTTD_INFLIGHT, 100_000).await;
        }
        None => println!("  rumqttd: not installed (cargo install rumqttd), skipped"),
    }
}

/// Drains of `n` messages from the broker on `port` on read and exactly once (with
/// `max_unacked` = `inflight`), alternated; prints the medians and their ratio.
async fn compare(what: &str, port: u16, inflight: u64, n: u64) {
    make_session("bench-weir", port).await;
    let (mut read, mut once, mut checkpoints) = (vec![], vec![], vec![]);
    for round in 0..3 {
        publish_n(port, 2 * round, n).await;
        read.push(drain_weir_with(port, n, None).await.0);
        // what the stopped run had not acknowledged comes again: drain it first
        publish_n(port, 2 * round + 1, n).await;
        let (rate, taken) = drain_weir_with(port, n, Some(inflight)).await;
        once.push(rate);
        checkpoints.push(taken as f64);
    }
    let (r, o, c) = (median(read), median(once), median(checkpoints));
    // a broker that holds to its limit lets at most `inflight` messages through per two
    // checkpoints: more per checkpoint means it let more through
    println!(
        "  {what} (max_unacked {inflight:>5}): on read {r:>8.0} msg/s, exactly once {o:>8.0} msg/s: {:.0}%; {c:.0} checkpoints, {:.0} messages per checkpoint",
        100.0 * o / r,
        n as f64 / c.max(1.0)
    );
}

/// rumqttd (`cargo install rumqttd`), a broker that holds to its limit of 100 unacknowledged
/// messages per client, on a free loopback port; `None` when it is not installed.
struct Rumqttd {
    port: u16,
    _dir: tempfile::TempDir,
    _process: weir_test_support::process::ServerProcess,
}

impl Rumqttd {
    fn start() -> Option<Rumqttd> {
        let program = std::env::var_os("HOME")
            .map(|h| std::path::Path::new(&h).join(".cargo/bin/rumqttd"))
            .filter(|p| p.exists())?;
        let dir = tempfile::tempdir().unwrap();
        let port = weir_test_support::http::free_port();
        let config = dir.path().join("rumqttd.toml");
        std::fs::write(
            &config,
            format!(
                "id = 0\n[router]\nid = 0\nmax_connections = 100\nmax_outgoing_packet_count = 200\n\
                 max_segment_size = 104857600\nmax_segment_count = 10\n\
                 [v4.1]\nname = \"v4\"\nlisten = \"127.0.0.1:{port}\"\nnext_connection_delay_ms = 1\n\
                 [v4.1.connections]\nconnection_timeout_ms = 60000\nmax_payload_size = 20480\n\
                 max_inflight_count = {RUMQTTD_INFLIGHT}\ndynamic_filters = true\n"
            ),
        )
        .unwrap();
        let mut process =
            weir_test_support::process::ServerProcess::new("rumqttd", dir.path().join("log"));
        process.start(
            std::process::Command::new(program)
                .arg("-q")
                .arg("-c")
                .arg(&config),
            &[port],
        );
        Some(Rumqttd {
            port,
            _dir: dir,
            _process: process,
        })
    }
}

/// rumqttd's limit of unacknowledged messages per client (fixed in its router).
const RUMQTTD_INFLIGHT: u64 = 100;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Metrics per Sparkplug NDATA message of the bench.
const SPARKPLUG_METRICS: u64 = 20;

/// A Sparkplug B payload of the bench: sequence number `seq`, time `ts` (ms).
fn spb_payload(
    seq: u64,
    ts: i64,
    metrics: Vec<weir_connectors::mqtt::sparkplug::proto::Metric>,
) -> Vec<u8> {
    use prost::Message as _;
    weir_connectors::mqtt::sparkplug::proto::Payload {
        timestamp: Some(ts as u64),
        metrics,
        seq: Some(seq % 256),
        ..Default::default()
    }
    .encode_to_vec()
}

/// The DBIRTH metrics of the bench's device: 20 Doubles `m01`..`m20`, aliases 1..=20.
fn spb_birth_metrics() -> Vec<weir_connectors::mqtt::sparkplug::proto::Metric> {
    use weir_connectors::mqtt::sparkplug::proto::{DataType, Metric, Value};
    (1..=SPARKPLUG_METRICS)
        .map(|a| Metric {
            name: Some(format!("m{a:02}")),
            alias: Some(a),
            datatype: Some(DataType::Double as u32),
            value: Some(Value::DoubleValue(0.0)),
            ..Metric::default()
        })
        .collect()
}

/// The metrics of DDATA message `i`: the 20 by alias only.
fn spb_data_metrics(i: u64) -> Vec<weir_connectors::mqtt::sparkplug::proto::Metric> {
    use weir_connectors::mqtt::sparkplug::proto::{Metric, Value};
    (1..=SPARKPLUG_METRICS)
        .map(|a| Metric {
            alias: Some(a),
            value: Some(Value::DoubleValue((i % 1000) as f64 / 7.0 + a as f64)),
            ..Metric::default()
        })
        .collect()
}

/// The Sparkplug backlog of `round`: NBIRTH, DBIRTH (20 Double metrics, aliases 1..=20),
/// `n` alias-only DDATA messages 1 ms apart, and one far ahead that closes every window.
async fn publish_sparkplug(port: u16, round: i64, n: u64) {
    use weir_connectors::mqtt::sparkplug::proto::{DataType, Metric, Value};
    let t0 = T0 + round * 10 * 86_400_000;
    let mut o = options("bench-publisher", port);
    o.set_inflight(100);
    let (c, mut l) = AsyncClient::new(o, 1000);
    let total = n + 3;
    let poller = tokio::spawn(async move {
        let mut acked = 0u64;
        while acked < total {
            if let Event::Incoming(Packet::PubAck(_)) = l.poll().await.unwrap() {
                acked += 1;
            }
        }
    });
    let bd_seq = Metric {
        name: Some("bdSeq".into()),
        datatype: Some(DataType::UInt64 as u32),
        value: Some(Value::LongValue(round as u64)),
        ..Metric::default()
    };
    let mut messages = vec![
        (
            "spBv1.0/Bench/NBIRTH/E1".to_string(),
            spb_payload(0, t0, vec![bd_seq]),
        ),
        (
            "spBv1.0/Bench/DBIRTH/E1/D1".to_string(),
            spb_payload(1, t0, spb_birth_metrics()),
        ),
    ];
    for i in 0..=n {
        // the last one is an hour ahead: it closes the windows
        let ts = if i == n {
            t0 + n as i64 + 3_600_000
        } else {
            t0 + i as i64
        };
        let data = spb_data_metrics(i);
        messages.push((
            "spBv1.0/Bench/DDATA/E1/D1".to_string(),
            spb_payload(i + 2, ts, data),
        ));
    }
    for (topic, body) in messages {
        c.publish(topic, QoS::AtLeastOnce, false, body)
            .await
            .unwrap();
    }
    poller.await.unwrap();
}

/// Weir's Sparkplug source: messages/s until its windows have counted the metrics of `n`
/// DDATA messages.
async fn drain_weir_sparkplug(port: u16, n: u64) -> f64 {
    let counted = Arc::new(AtomicU64::new(0));
    let mut connectors = weir_connectors::all();
    connectors.add_sink(Arc::new(CountSinkFactory(Arc::clone(&counted))));
    let sql = format!(
        "CREATE SOURCE s (device VARCHAR, metric VARCHAR, ts TIMESTAMP, value DOUBLE, message_type VARCHAR) WITH (
            connector = 'mqtt', url = 'mqtt://127.0.0.1:{port}', topic = 'spBv1.0/Bench/#', qos = '1',
            client_id = 'bench-weir-spb', clean_session = 'false', format = 'sparkplug_b',
            event_time = 'ts', batch_rows = '4096');
         CREATE SINK out WITH (connector = 'count');
         INSERT INTO out SELECT metric, window_start, count(*) AS n, avg(value) AS v
         FROM TUMBLE(s, ts, INTERVAL '1' SECOND) WHERE message_type = 'DDATA'
         GROUP BY metric, window_start, window_end;"
    );
    let file = parse_file("bench.sql", &sql, &|_| None).expect("parses");
    let project = weir_engine::compile(vec![file], &connectors, false)
        .await
        .expect("compiles");
    let (stop_tx, stop) = watch::channel(false);
    let start = Instant::now();
    let running = tokio::spawn(run(project, RunControl::new(stop)));
    let want = n * SPARKPLUG_METRICS;
    while counted.load(Ordering::Relaxed) < want {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    stop_tx.send(true).unwrap();
    running.await.unwrap();
    rate
}

/// The Sparkplug decoder alone, in this thread: messages/s over `n` DDATA messages of the
/// bench's shape (after their births), to tell decoding from the rest of the run.
fn sparkplug_decoder_alone(n: u64) -> f64 {
    use arrow::datatypes::{DataType as Arrow, Field, Schema, TimeUnit};
    use weir_connectors::mqtt::sparkplug::decode::{Behaviour, SparkplugDecoder, parts};
    let schema = Arc::new(Schema::new(vec![
        Field::new("device", Arrow::Utf8, true),
        Field::new("metric", Arrow::Utf8, true),
        Field::new("ts", Arrow::Timestamp(TimeUnit::Nanosecond, None), true),
        Field::new("value", Arrow::Float64, true),
        Field::new("message_type", Arrow::Utf8, true),
    ]));
    let parts = parts(&schema, &[]).unwrap();
    let mut d = SparkplugDecoder::new(
        schema,
        parts,
        Behaviour {
            rebirth: false,
            death_rows: true,
        },
    );
    d.decode("spBv1.0/Bench/NBIRTH/E1", &spb_payload(0, T0, vec![]), 0)
        .unwrap();
    d.decode(
        "spBv1.0/Bench/DBIRTH/E1/D1",
        &spb_payload(1, T0, spb_birth_metrics()),
        0,
    )
    .unwrap();
    let messages: Vec<Vec<u8>> = (0..n)
        .map(|i| spb_payload(i + 2, T0, spb_data_metrics(i)))
        .collect();
    let start = Instant::now();
    for (i, m) in messages.iter().enumerate() {
        d.decode("spBv1.0/Bench/DDATA/E1/D1", m, 0).unwrap();
        if i % 200 == 199 {
            d.finish().unwrap();
        }
    }
    d.finish().unwrap();
    n as f64 / start.elapsed().as_secs_f64()
}

/// Sparkplug B ingest against the plain subscriber.
async fn sparkplug() {
    let n = N / 2;
    let broker = Mosquitto::start("max_queued_messages 0\nmax_inflight_messages 1000\n");
    let port = broker.port;
    make_session_on("bench-plain-spb", port, "spBv1.0/Bench/#").await;
    make_session_on("bench-weir-spb", port, "spBv1.0/Bench/#").await;
    println!(
        "mqtt sparkplug: drain a backlog of {n} Sparkplug B DDATA messages ({SPARKPLUG_METRICS} Double metrics by alias, QoS 1) from a local Mosquitto, median of {ROUNDS} rounds"
    );
    let (mut plain, mut weir) = (vec![], vec![]);
    for round in 0..ROUNDS {
        publish_sparkplug(port, round as i64, n).await;
        // the plain subscriber is timed over the data messages, after the two births
        let drain_plain = || drain_plain_as("bench-plain-spb", port, n + 2, 1);
        if round % 2 == 0 {
            plain.push(drain_plain().await);
            weir.push(drain_weir_sparkplug(port, n).await);
        } else {
            weir.push(drain_weir_sparkplug(port, n).await);
            plain.push(drain_plain().await);
        }
        println!(
            "  round {round}: plain subscriber {:.0} msg/s, weir {:.0} msg/s",
            plain[round], weir[round]
        );
    }
    let paired = median(plain.iter().zip(&weir).map(|(p, w)| w / p).collect());
    let (p, w) = (median(plain), median(weir));
    println!("  plain rumqttc subscriber (counts only)        {p:>9.0} messages/s");
    println!(
        "  weir: sparkplug_b source → 1 s window/metric   {w:>9.0} messages/s, {:>9.0} metrics/s ({:.0}% of the plain subscriber)",
        w * SPARKPLUG_METRICS as f64,
        100.0 * w / p
    );
    println!(
        "  median of the rounds' ratios (weir / plain, drained back to back)  {:.0}%",
        100.0 * paired
    );
    let alone = median((0..ROUNDS).map(|_| sparkplug_decoder_alone(n)).collect());
    println!(
        "  the Sparkplug decoder alone (one thread, into 4,000-row batches) {alone:>9.0} messages/s, {:>9.0} metrics/s",
        alone * SPARKPLUG_METRICS as f64
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().skip(1).any(|a| a == "checkpoint") {
        return exactly_once().await;
    }
    if std::env::args().skip(1).any(|a| a == "sparkplug") {
        return sparkplug().await;
    }
    let broker = Mosquitto::start("max_queued_messages 0\nmax_inflight_messages 1000\n");
    let port = broker.port;
    make_session("bench-plain", port).await;
    make_session("bench-weir", port).await;
    println!(
        "mqtt: drain a backlog of {N} JSON messages (~{} bytes, QoS 1) from a local Mosquitto, median of {ROUNDS} rounds",
        payload(T0, 12345).len()
    );
    let (mut plain, mut weir) = (vec![], vec![]);
    for round in 0..ROUNDS {
        publish_backlog(port, round as i64).await;
        if round % 2 == 0 {
            plain.push(drain_plain(port).await);
            weir.push(drain_weir(port).await);
        } else {
            weir.push(drain_weir(port).await);
            plain.push(drain_plain(port).await);
        }
        println!(
            "  round {round}: plain subscriber {:.0} msg/s, weir {:.0} msg/s",
            plain[round], weir[round]
        );
    }
    // each round's two drains run back to back: their ratio is the least disturbed by the
    // shared machine's load changing between rounds
    let paired = median(plain.iter().zip(&weir).map(|(p, w)| w / p).collect());
    let (p, w) = (median(plain), median(weir));
    println!(
        "  plain rumqttc subscriber (counts only)       {:>9.0} messages/s",
        p
    );
    println!(
        "  weir: mqtt source → 1 s tumbling window       {:>9.0} messages/s  ({:.0}% of the plain subscriber)",
        w,
        100.0 * w / p
    );
    println!(
        "  median of the rounds' ratios (weir / plain, drained back to back)  {:.0}%",
        100.0 * paired
    );
}
