//! Live state over Arrow Flight SQL against a running `weir`: live tables equal what the
//! sink received, history and ring-buffer bounds, token and TLS, error codes, metadata
//! commands, prepared statements, plain Flight by table name, `weir query`, and clients
//! written elsewhere (pyarrow's Flight client and the ADBC Flight SQL driver, from PyPI).
#![allow(clippy::unwrap_used)] // a test (or bench) fails by panicking

use weir_test_support::certs;
use weir_test_support::flight;
use weir_test_support::http;
use weir_test_support::weir_process;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetDbSchemas, CommandGetTables, SqlInfo};
use arrow_flight::{Criteria, FlightDescriptor, Ticket};
use flight::{channel, fetch, json_rows, sql, sql_until};
use futures::TryStreamExt;
use http::free_port;
use serde_json::{Map, Value};
use tonic::Code;
use weir_process::WeirProcess;

/// 2 machines × 2 sensors, each sampled every 10 ms in real time; 1-second windows per
/// machine and sensor, printed as ndjson.
const PIPELINE: &str = r#"
CREATE SOURCE gen (
    line VARCHAR, machine VARCHAR, sensor VARCHAR, ts TIMESTAMP, value DOUBLE
) WITH (
    connector = 'generator', machines = '2', sensors = 'temp,current',
    rate = '400', batch_rows = '20', event_time = 'ts', watermark = '50ms'
);
CREATE SINK out WITH (connector = 'stdout', format = 'ndjson');
CREATE VIEW per_second AS
SELECT machine, sensor, window_start, window_end,
       count(*) AS n, avg(value) AS mean, max(value) AS peak
FROM TUMBLE(gen, ts, INTERVAL '1' SECOND)
GROUP BY machine, sensor, window_start, window_end;
INSERT INTO out SELECT * FROM per_second;
"#;

const TOKEN: &str = "plant-floor-token-7";

/// Samples per full window and key (one every 10 ms).
const FULL_WINDOW: u64 = 100;

type Row = Map<String, Value>;

/// Starts the pipeline with Flight SQL on a free port; returns it and the address.
fn start(args: &[&str], env: &[(&str, &str)]) -> (WeirProcess, String) {
    start_pipeline(PIPELINE, args, env)
}

/// Starts `pipeline` with Flight SQL on a free port.
fn start_pipeline(pipeline: &str, args: &[&str], env: &[(&str, &str)]) -> (WeirProcess, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut all = vec!["--flight-addr", addr.as_str()];
    all.extend_from_slice(args);
    let mut w = WeirProcess::start_with(pipeline, &all, env);
    w.wait_log("Flight SQL listening", 1);
    // the run's tables are published before its sources start
    w.wait_log("source starting", 1);
    (w, addr)
}

fn text(r: &Row, k: &str) -> String {
    match &r[k] {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// A window row as one comparable string.
fn window(r: &Row) -> String {
    [
        "machine",
        "sensor",
        "window_start",
        "window_end",
        "n",
        "mean",
        "peak",
    ]
    .iter()
    .map(|k| text(r, k))
    .collect::<Vec<_>>()
    .join("|")
}

fn key(r: &Row) -> (String, String) {
    (text(r, "machine"), text(r, "sensor"))
}

#[tokio::test(flavor = "multi_thread")]
async fn live_tables_equal_what_the_sink_received() {
    let (w, addr) = start(&["--flight-no-auth"], &[]);
    sql_until(
        &addr,
        None,
        "SELECT count(DISTINCT window_end) AS w FROM history.per_second",
        Duration::from_secs(30),
        |r| r[0]["w"].as_u64() >= Some(3),
    )
    .await;
    // one query, one snapshot: history and latest together
    let rows = json_rows(
        &sql(
            channel(&addr, None).await.unwrap(),
            None,
            "SELECT 'history' AS t, * FROM history.per_second \
             UNION ALL SELECT 'latest' AS t, * FROM latest.per_second",
        )
        .await
        .unwrap(),
    );
    let (status, w) = w.stop();
    assert!(status.success(), "{}", w.stderr());
    let (history, latest): (Vec<Row>, Vec<Row>) =
        rows.into_iter().partition(|r| r["t"] == "history");
    let newest = history.iter().map(|r| text(r, "window_end")).max().unwrap();
    // the sink got exactly the windows the live history shows, up to its newest window
    let sink: Vec<Row> = w
        .rows()
        .into_iter()
        .map(|v| v.as_object().unwrap().clone())
        .collect();
    let received: BTreeSet<String> = sink
        .iter()
        .filter(|r| text(r, "window_end") <= newest)
        .map(window)
        .collect();
    let live: BTreeSet<String> = history.iter().map(window).collect();
    assert_eq!(live.len(), history.len(), "a window twice in history");
    assert_eq!(live, received);
    assert!(
        sink.len() > history.len(),
        "the sink also got the later windows"
    );
    // latest: per machine and sensor, the newest window of the history
    let mut newest_per_key: BTreeMap<(String, String), &Row> = BTreeMap::new();
    for r in &history {
        let e = newest_per_key.entry(key(r)).or_insert(r);
        if text(r, "window_end") > text(e, "window_end") {
            *e = r;
        }
    }
    assert_eq!(newest_per_key.len(), 4);
    let expected: BTreeSet<String> = newest_per_key.values().map(|r| window(r)).collect();
    let got: BTreeSet<String> = latest.iter().map(window).collect();
    assert_eq!(got, expected);
    assert_eq!(latest.len(), 4);
    // and the windows are right: every window after a key's first holds 100 samples
    let mut by_key: BTreeMap<(String, String), Vec<&Row>> = BTreeMap::new();
    for r in &history {
        by_key.entry(key(r)).or_default().push(r);
    }
    for (k, mut rows) in by_key {
        rows.sort_by_key(|r| text(r, "window_start"));
        for r in &rows[1..] {
            assert_eq!(r["n"].as_u64(), Some(FULL_WINDOW), "{k:?}: {r:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn history_and_ring_buffer_bounds_hold() {
    let (mut by_rows, rows_addr) = start(
        &[
            "--flight-no-auth",
            "--live-history-rows",
            "6",
            "--live-source-rows",
            "25",
        ],
        &[],
    );
    let (mut by_age, age_addr) = start(&["--flight-no-auth", "--live-history-age", "1200ms"], &[]);
    // by rows: 4 rows per window, so 6 rows once two windows closed; the ring holds the
    // newest 25 raw rows
    let snapshot = "SELECT \
        (SELECT count(*) FROM history.per_second) AS history_rows, \
        (SELECT count(*) FROM sources.gen) AS ring_rows, \
        (SELECT max(ts) FROM sources.gen) AS ring_newest, \
        (SELECT max_event_time FROM system.sources WHERE name = 'gen') AS newest_read, \
        (SELECT rows FROM system.sources WHERE name = 'gen') AS rows_read, \
        (SELECT max(window_end) FROM history.per_second) AS history_end, \
        (SELECT max(window_end) FROM latest.per_second) AS latest_end, \
        (SELECT windows_emitted FROM system.pipelines WHERE name = 'per_second') AS windows";
    let r = sql_until(&rows_addr, None, snapshot, Duration::from_secs(30), |r| {
        r[0]["windows"].as_u64() >= Some(12)
    })
    .await;
    let r = &r[0];
    assert_eq!(r["history_rows"].as_u64(), Some(6), "{r:?}");
    assert_eq!(r["ring_rows"].as_u64(), Some(25), "{r:?}");
    assert!(r["rows_read"].as_u64() > Some(1000), "{r:?}");
    assert_eq!(r["ring_newest"], r["newest_read"], "{r:?}");
    assert_eq!(r["history_end"], r["latest_end"], "{r:?}");
    // by age: windows close once a second with 4 rows; 1.2 s keeps at most two closings
    let mut most = 0;
    for _ in 0..12 {
        let b = sql(
            channel(&age_addr, None).await.unwrap(),
            None,
            "SELECT count(*) AS n, count(DISTINCT window_end) AS ends FROM history.per_second",
        )
        .await
        .unwrap();
        let r = &json_rows(&b)[0];
        let ends = r["ends"].as_u64().unwrap();
        assert!(ends <= 2, "{r:?}");
        assert!(r["n"].as_u64().unwrap() <= 8, "{r:?}");
        most = most.max(ends);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(most >= 1);
    let emitted = json_rows(
        &sql(
            channel(&age_addr, None).await.unwrap(),
            None,
            "SELECT windows_emitted FROM system.pipelines WHERE name = 'per_second'",
        )
        .await
        .unwrap(),
    );
    assert!(
        emitted[0]["windows_emitted"].as_u64() > Some(8),
        "{emitted:?}"
    );
    assert!(by_rows.is_running() && by_age.is_running());
}

/// A group key per row: every window brings new keys and none comes back.
const CHURNING_KEYS: &str = r#"
CREATE SOURCE gen (machine VARCHAR, ts TIMESTAMP, value DOUBLE, seq BIGINT) WITH (
    connector = 'generator', machines = '1', rate = '300', batch_rows = '10',
    event_time = 'ts', watermark = '20ms'
);
CREATE SINK out WITH (connector = 'stdout', format = 'ndjson');
CREATE VIEW per_row AS
SELECT seq, window_start, window_end, count(*) AS n
FROM TUMBLE(gen, ts, INTERVAL '100' MILLISECOND)
GROUP BY seq, window_start, window_end;
INSERT INTO out SELECT seq, window_end FROM per_row;
"#;

#[tokio::test(flavor = "multi_thread")]
async fn latest_tables_are_bounded_in_keys_and_age() {
    let http_port = free_port();
    let http_addr = format!("127.0.0.1:{http_port}");
    let (mut by_keys, keys_addr) = start_pipeline(
        CHURNING_KEYS,
        &[
            "--flight-no-auth",
            "--live-latest-keys",
            "50",
            "--http-addr",
            &http_addr,
        ],
        &[],
    );
    let (mut by_age, age_addr) = start_pipeline(
        CHURNING_KEYS,
        &["--flight-no-auth", "--live-latest-age", "1s"],
        &[],
    );
    // by keys: once the latest table has taken the newest window of the history, it holds
    // exactly the 50 keys updated last: the last 50 rows of the history, in emission order
    // window ends as nanoseconds: RFC 3339 text with a fraction does not sort as text
    let both = "SELECT 'history' AS t, seq, CAST(window_end AS BIGINT) AS end_ns FROM history.per_row \
        UNION ALL SELECT 'latest' AS t, seq, CAST(window_end AS BIGINT) AS end_ns FROM latest.per_row";
    let consistent = |rows: &[Row]| {
        let newest = |t: &str| {
            rows.iter()
                .filter(|r| r["t"] == t)
                .map(|r| r["end_ns"].as_i64().unwrap())
                .max()
        };
        let history = rows.iter().filter(|r| r["t"] == "history").count();
        history > 200 && newest("history") == newest("latest")
    };
    let rows = sql_until(&keys_addr, None, both, Duration::from_secs(30), |r| {
        consistent(r)
    })
    .await;
    let history: Vec<i64> = rows
        .iter()
        .filter(|r| r["t"] == "history")
        .map(|r| r["seq"].as_i64().unwrap())
        .collect();
    let mut latest: Vec<i64> = rows
        .iter()
        .filter(|r| r["t"] == "latest")
        .map(|r| r["seq"].as_i64().unwrap())
        .collect();
    latest.sort_unstable();
    let mut expected = history[history.len() - 50..].to_vec();
    expected.sort_unstable();
    assert_eq!(latest, expected);
    // the counters in system.pipelines are those of the dataflow's last snapshot, which can
    // be taken just before the latest table's thread took the newest rows: they catch up
    let taken = history.len() as u64;
    let status = sql_until(
        &keys_addr,
        None,
        "SELECT latest_keys, latest_evicted FROM system.pipelines WHERE name = 'per_row'",
        Duration::from_secs(10),
        |r| r[0]["latest_evicted"].as_u64() >= Some(taken - 50),
    )
    .await;
    assert_eq!(status[0]["latest_keys"].as_u64(), Some(50), "{status:?}");
    let metrics = http::request(http_port, "GET", "/metrics").unwrap().1;
    assert!(
        metrics.contains("weir_live_latest_keys{pipeline=\"per_row\"} 50"),
        "{metrics}"
    );
    assert!(
        metrics.contains("weir_live_latest_evicted_total{pipeline=\"per_row\",reason=\"keys\"}")
    );
    // by age: keys not updated for a second leave (looked for once a second), so every
    // key kept was updated in the last ~2 s of event time (the generator's clock is the
    // wall clock) while the run has gone on longer
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = sql_until(
        &age_addr,
        None,
        "SELECT (SELECT max(seq) - min(seq) FROM latest.per_row) AS span, \
                (SELECT count(*) FROM latest.per_row) AS kept, \
                (SELECT latest_evicted FROM system.pipelines WHERE name = 'per_row') AS evicted, \
                (SELECT rows_out FROM system.pipelines WHERE name = 'per_row') AS out",
        Duration::from_secs(10),
        |r| r[0]["kept"].as_u64() > Some(0),
    )
    .await;
    let r = &r[0];
    // 300 keys a second: about 2 s of them (5 s allowed for a generator catching up)
    assert!(r["span"].as_u64() <= Some(1500), "{r:?}");
    assert!(r["evicted"].as_u64() > Some(0), "{r:?}");
    assert!(r["kept"].as_u64() < r["out"].as_u64(), "{r:?}");
    assert!(by_keys.is_running() && by_age.is_running());
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_tokens_are_slowed_down_per_address_and_never_echoed() {
    let (w, addr) = start(&["--log-level", "debug"], &[("WEIR_FLIGHT_TOKEN", TOKEN)]);
    let ch = channel(&addr, None).await.unwrap();
    // the token without a scheme: refused, and not quoted back
    let mut bare = FlightSqlServiceClient::new(ch.clone());
    bare.set_header("authorization", TOKEN);
    let e = bare.execute("SELECT 1".into(), None).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("authorization header without a scheme"),
        "{e}"
    );
    assert!(!e.to_string().contains(TOKEN), "{e}");
    // a success starts afresh; then 5 failures are answered as such, the 6th starts a
    // backoff in which even the right token is refused unchecked
    sql(ch.clone(), Some(TOKEN), "SELECT 1").await.unwrap();
    for _ in 0..6 {
        let e = sql(ch.clone(), Some("guess"), "SELECT 1")
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    }
    let e = sql(ch.clone(), Some(TOKEN), "SELECT 1").await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(
        e.message().starts_with("too many failed authentications"),
        "{e:?}"
    );
    // guessing as fast as possible for 2 s: the backoff doubles, so only a few guesses are
    // looked at (100 + 200 + 400 + 800 ms ...), the rest refused unchecked
    let start = std::time::Instant::now();
    let (mut checked, mut refused) = (0, 0);
    while start.elapsed() < Duration::from_secs(2) {
        match sql(ch.clone(), Some("guess"), "SELECT 1")
            .await
            .unwrap_err()
            .code()
        {
            Code::Unauthenticated => checked += 1,
            Code::ResourceExhausted => refused += 1,
            c => panic!("{c:?}"),
        }
    }
    assert!(checked <= 5, "{checked} guesses checked in 2 s");
    assert!(refused > 20, "{refused}");
    // after the longest backoff the right token is accepted again
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    sql(ch.clone(), Some(TOKEN), "SELECT 1").await.unwrap();
    let (_, w) = w.stop();
    assert!(w.stderr().contains("Flight SQL call refused"), "debug log");
    assert!(!w.stderr().contains(TOKEN), "the token is in the log");
}

fn certificates() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    certs::make_certificates(dir.path());
    let p = |n: &str| dir.path().join(n);
    let (ca, cert, key) = (p("ca.crt"), p("server.crt"), p("server.key"));
    (dir, ca, cert, key)
}

fn weir_query(
    addr: &str,
    ca: Option<&Path>,
    token: Option<&str>,
    args: &[&str],
) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir"));
    cmd.args(["query", "--addr", addr])
        .args(args)
        .env_remove("WEIR_FLIGHT_TOKEN");
    if let Some(ca) = ca {
        cmd.arg("--tls-ca").arg(ca);
    }
    if let Some(t) = token {
        cmd.env("WEIR_FLIGHT_TOKEN", t);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn token_and_tls_accept_and_reject() {
    let (_dir, ca, cert, key) = certificates();
    let (_w, addr) = start(
        &[
            "--flight-tls-cert",
            cert.to_str().unwrap(),
            "--flight-tls-key",
            key.to_str().unwrap(),
        ],
        &[("WEIR_FLIGHT_TOKEN", TOKEN)],
    );
    let ch = channel(&addr, Some(&ca)).await.unwrap();
    let ok = sql(ch.clone(), Some(TOKEN), "SELECT name FROM system.sources")
        .await
        .unwrap();
    assert_eq!(json_rows(&ok)[0]["name"], "gen");
    let missing = sql(ch.clone(), None, "SELECT 1").await.unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    assert!(
        missing.message().starts_with("missing credentials"),
        "{missing:?}"
    );
    let wrong = sql(ch.clone(), Some("guess"), "SELECT 1")
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert!(wrong.message().starts_with("invalid token"), "{wrong:?}");
    // Basic handshake with the token as password hands out the bearer token
    let mut client = FlightSqlServiceClient::new(ch.clone());
    client.handshake("operator", TOKEN).await.unwrap();
    assert_eq!(client.token().map(String::as_str), Some(TOKEN));
    let info = client
        .execute("SELECT count(*) AS n FROM system.pipelines".into(), None)
        .await
        .unwrap();
    assert_eq!(json_rows(&fetch(&mut client, info).await)[0]["n"], 2);
    let mut bad = FlightSqlServiceClient::new(ch.clone());
    assert!(bad.handshake("operator", "guess").await.is_err());
    // plain text to the TLS port, and TLS with a CA that did not sign the server: refused
    if let Ok(plain) = channel(&addr, None).await {
        assert!(sql(plain, Some(TOKEN), "SELECT 1").await.is_err());
    }
    let (_other, other_ca, _, _) = certificates();
    match channel(&addr, Some(&other_ca)).await {
        Err(e) => assert!(
            e.contains("certificate") || e.contains("Certificate"),
            "{e}"
        ),
        Ok(ch) => assert!(sql(ch, Some(TOKEN), "SELECT 1").await.is_err()),
    }
    // `weir query` over TLS with the token from the environment
    let port = addr.rsplit(':').next().unwrap();
    let host = format!("localhost:{port}");
    let (ok, out, err) = weir_query(
        &host,
        Some(&ca),
        Some(TOKEN),
        &[
            "--format",
            "csv",
            "SELECT name, connector FROM system.sources",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out, "name,connector\ngen,generator\n");
    let (ok, _, err) = weir_query(&host, Some(&ca), None, &["SELECT 1"]);
    assert!(!ok);
    assert!(
        err.contains("unauthenticated") && err.contains("missing credentials"),
        "{err}"
    );
}

#[test]
fn a_tls_key_that_does_not_parse_is_an_error_at_start() {
    let (dir, _ca, cert, _key) = certificates();
    let bad_key = dir.path().join("bad.key");
    std::fs::write(
        &bad_key,
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("p.sql"), PIPELINE).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "p.sql", "--flight-addr"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--flight-tls-cert")
        .arg(&cert)
        .arg("--flight-tls-key")
        .arg(&bad_key)
        .env("WEIR_FLIGHT_TOKEN", TOKEN)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("Flight SQL TLS"), "{err}");
    assert!(!err.contains("Flight SQL listening"), "{err}");
}

#[test]
fn no_auth_is_refused_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.sql"), PIPELINE).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "p.sql", "--flight-no-auth", "--flight-addr"])
        .arg(format!("0.0.0.0:{}", free_port()))
        .current_dir(dir.path())
        .env_remove("WEIR_FLIGHT_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to serve Flight SQL without authentication on 0.0.0.0"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_metadata_prepared_statements_and_plain_flight() {
    let (_w, addr) = start(&["--flight-no-auth"], &[]);
    sql_until(
        &addr,
        None,
        "SELECT count(*) AS n FROM latest.per_second",
        Duration::from_secs(30),
        |r| r[0]["n"] == 4,
    )
    .await;
    // system tables
    let sys = sql_until(
        &addr,
        None,
        "SELECT (SELECT rows FROM system.sinks WHERE name = 'out') AS sink_rows, \
                (SELECT connector FROM system.sinks WHERE name = 'out') AS sink_connector, \
                (SELECT count(*) FROM system.watermarks WHERE watermark IS NOT NULL) AS marks, \
                (SELECT count(*) FROM system.source_errors) AS errors, \
                (SELECT state FROM system.sources WHERE name = 'gen') AS state, \
                (SELECT state FROM system.pipelines WHERE name = 'per_second') AS running",
        Duration::from_secs(30),
        |r| r[0]["sink_rows"].as_u64() >= Some(4),
    )
    .await;
    let sys = &sys[0];
    assert_eq!(sys["sink_connector"], "stdout");
    // the source's and the windowed view's (the insert has no window of its own)
    assert_eq!(sys["marks"], 2, "{sys:?}");
    assert_eq!(sys["errors"], 0);
    assert_eq!(sys["state"], "active");
    assert_eq!(sys["running"], "running");
    let ch = channel(&addr, None).await.unwrap();
    // errors: the client's fault gets a code that says so
    for (q, code, says) in [
        ("SELEC 1", Code::InvalidArgument, "SQL error"),
        (
            "SELECT nope FROM latest.per_second",
            Code::InvalidArgument,
            "nope",
        ),
        ("SELECT * FROM latest.nope", Code::NotFound, "latest.nope"),
        (
            "CREATE TABLE t AS SELECT 1",
            Code::InvalidArgument,
            "DDL not supported",
        ),
        (
            "DROP TABLE latest.per_second",
            Code::InvalidArgument,
            "not supported",
        ),
    ] {
        let e = sql(ch.clone(), None, q).await.unwrap_err();
        assert_eq!(e.code(), code, "{q}: {e:?}");
        assert!(e.message().contains(says), "{q}: {e:?}");
    }
    // a long flat expression (it overflowed the server thread's stack once) is refused, the
    // server stays up and ingestion goes on
    let source_rows = |ch| async move {
        let r = json_rows(
            &sql(
                ch,
                None,
                "SELECT rows FROM system.sources WHERE name = 'gen'",
            )
            .await
            .unwrap(),
        );
        r[0]["rows"].as_u64().unwrap()
    };
    let before = source_rows(ch.clone()).await;
    for terms in [800, 6000] {
        let deep = format!("SELECT 1 WHERE {}", vec!["1 = 1"; terms].join(" OR "));
        let e = sql(ch.clone(), None, &deep).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("nested too deeply"), "{e:?}");
    }
    let shallow = format!("SELECT 1 AS one WHERE {}", vec!["1 = 1"; 100].join(" OR "));
    assert_eq!(
        json_rows(&sql(ch.clone(), None, &shallow).await.unwrap())[0]["one"],
        1
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(source_rows(ch.clone()).await > before, "ingestion goes on");
    // metadata commands
    let mut c = FlightSqlServiceClient::new(ch.clone());
    let info = c.get_catalogs().await.unwrap();
    let catalogs = json_rows(&fetch(&mut c, info).await);
    assert_eq!(catalogs.len(), 1);
    assert_eq!(catalogs[0]["catalog_name"], "weir");
    let info = c
        .get_db_schemas(CommandGetDbSchemas {
            catalog: None,
            db_schema_filter_pattern: None,
        })
        .await
        .unwrap();
    let schemas: Vec<String> = json_rows(&fetch(&mut c, info).await)
        .iter()
        .map(|r| text(r, "db_schema_name"))
        .collect();
    assert_eq!(
        schemas,
        ["history", "latest", "sources", "system", "tables"]
    );
    let tables = |schema: Option<&str>| CommandGetTables {
        catalog: None,
        db_schema_filter_pattern: schema.map(String::from),
        table_name_filter_pattern: None,
        table_types: vec![],
        include_schema: true,
    };
    let info = c.get_tables(tables(None)).await.unwrap();
    let all = fetch(&mut c, info).await;
    let names: BTreeSet<String> = json_rows(&all)
        .iter()
        .map(|r| format!("{}.{}", text(r, "db_schema_name"), text(r, "table_name")))
        .collect();
    for t in [
        "latest.per_second",
        "history.per_second",
        "history.out",
        "sources.gen",
        "system.pipelines",
        "system.sources",
        "system.source_errors",
        "system.watermarks",
        "system.sinks",
    ] {
        assert!(names.contains(t), "{t} not in {names:?}");
    }
    assert!(all[0].schema().field_with_name("table_schema").is_ok());
    let info = c.get_tables(tables(Some("sys%"))).await.unwrap();
    assert_eq!(json_rows(&fetch(&mut c, info).await).len(), 5);
    let info = c.get_table_types().await.unwrap();
    let types: Vec<String> = json_rows(&fetch(&mut c, info).await)
        .iter()
        .map(|r| text(r, "table_type"))
        .collect();
    assert_eq!(types, ["SYSTEM TABLE", "TABLE"]);
    let info = c
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::FlightSqlServerReadOnly,
        ])
        .await
        .unwrap();
    assert_eq!(fetch(&mut c, info).await[0].num_rows(), 2);
    // a prepared statement: schema up front, rows on execute
    let mut p = c
        .prepare(
            "SELECT machine, count(*) AS windows FROM history.per_second GROUP BY machine ORDER BY machine".into(),
            None,
        )
        .await
        .unwrap();
    let fields: Vec<String> = p
        .dataset_schema()
        .unwrap()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(fields, ["machine", "windows"]);
    let info = p.execute().await.unwrap();
    let per_machine = json_rows(&fetch(&mut c, info).await);
    assert_eq!(
        per_machine
            .iter()
            .map(|r| text(r, "machine"))
            .collect::<Vec<_>>(),
        ["M1", "M2"]
    );
    p.close().await.unwrap();
    // plain Flight: list, info by path, DoGet by table name
    let mut plain = FlightServiceClient::new(ch.clone());
    let listed: Vec<Vec<String>> = plain
        .list_flights(Criteria::default())
        .await
        .unwrap()
        .into_inner()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.flight_descriptor.unwrap().path)
        .collect();
    assert!(listed.contains(&vec!["system".to_string(), "sinks".to_string()]));
    assert_eq!(listed.len(), names.len());
    let info = plain
        .get_flight_info(FlightDescriptor::new_path(vec!["per_second".into()]))
        .await
        .unwrap()
        .into_inner();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    assert_eq!(&ticket.ticket[..], b"latest.per_second");
    let mut c2 = FlightSqlServiceClient::new(ch.clone());
    let by_name = c2.do_get(Ticket::new("system.sources")).await.unwrap();
    let rows = json_rows(&by_name.try_collect::<Vec<_>>().await.unwrap());
    assert_eq!(rows[0]["name"], "gen");
    let e = plain.do_get(Ticket::new("latest.nope")).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

use weir_test_support::process::python;

#[tokio::test(flavor = "multi_thread")]
async fn pyarrow_and_adbc_clients_get_the_expected_rows() {
    let (_w, addr) = start(&[], &[("WEIR_FLIGHT_TOKEN", TOKEN)]);
    // two windows per key, so the latest ones are full
    loop {
        let ch = channel(&addr, None).await.unwrap();
        let r = json_rows(
            &sql(
                ch,
                Some(TOKEN),
                "SELECT windows_emitted AS w FROM system.pipelines WHERE name = 'per_second'",
            )
            .await
            .unwrap(),
        );
        if r[0]["w"].as_u64() >= Some(8) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/flight_clients.py");
    let out = Command::new(python())
        .arg(&script)
        .args([&addr, TOKEN])
        .output()
        .expect("python3 with pyarrow and adbc-driver-flightsql (scripts/test installs them)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    let flights: Vec<&str> = got["pyarrow"]["flights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for t in [
        "latest.per_second",
        "history.out",
        "sources.gen",
        "system.pipelines",
    ] {
        assert!(flights.contains(&t), "{t}: {flights:?}");
    }
    assert_eq!(
        got["pyarrow"]["sources"],
        serde_json::json!([{"name": "gen", "connector": "generator"}])
    );
    let adbc = &got["adbc"];
    let latest = adbc["latest"].as_array().unwrap();
    let keys: Vec<(String, String)> = latest
        .iter()
        .map(|r| {
            (
                r["machine"].as_str().unwrap().into(),
                r["sensor"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = ["M1", "M2"]
        .iter()
        .flat_map(|m| ["current", "temp"].map(|s| (m.to_string(), s.to_string())))
        .collect();
    assert_eq!(keys, expected);
    for r in latest {
        assert_eq!(r["n"].as_u64(), Some(FULL_WINDOW), "{r}");
    }
    assert_eq!(
        adbc["pipelines"],
        serde_json::json!([
            {"name": "out", "target": "sink"},
            {"name": "per_second", "target": "view"}
        ])
    );
    assert_eq!(adbc["catalogs"], serde_json::json!(["weir"]));
    assert_eq!(adbc["tables"].as_array().unwrap().len(), flights.len());
    assert_eq!(adbc["tables"], got["pyarrow"]["flights"]);
    assert_eq!(
        adbc["table_types"],
        serde_json::json!(["SYSTEM TABLE", "TABLE"])
    );
}

/// A source at a fixed 20k rows/s, and a one-second window over it.
const STEADY: &str = r#"
CREATE SOURCE gen (machine VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (
    connector = 'generator', machines = '20', sensors = 'temp', rate = '20000', batch_rows = '200',
    event_time = 'ts', watermark = '50ms'
);
CREATE SINK out WITH (connector = 'stdout', format = 'ndjson');
INSERT INTO out SELECT machine, window_start, count(*) AS n FROM TUMBLE(gen, ts, INTERVAL '1' SECOND) GROUP BY machine, window_start, window_end;
"#;

/// `weir_source_rows_total` of source `gen`, from /metrics.
fn rows_read(http_port: u16) -> f64 {
    let (_, body) = http::request(http_port, "GET", "/metrics").unwrap();
    body.lines()
        .find(|l| l.starts_with("weir_source_rows_total{source=\"gen\"}"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Resident memory of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

/// Rows per second the source delivered over `over`.
async fn ingestion_rate(http_port: u16, over: Duration) -> f64 {
    let before = rows_read(http_port);
    tokio::time::sleep(over).await;
    (rows_read(http_port) - before) / over.as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_queries_are_refused_and_do_not_slow_ingestion() {
    use arrow::array::AsArray;
    let http_port = free_port();
    let http_addr = format!("127.0.0.1:{http_port}");
    let (w, addr) = start_pipeline(
        STEADY,
        &[
            "--flight-no-auth",
            "--http-addr",
            &http_addr,
            "--flight-query-memory",
            "32MiB",
            "--flight-query-timeout",
            "4s",
            "--flight-query-concurrency",
            "1",
        ],
        &[],
    );
    // the timeout is advertised (milliseconds)
    let mut c = FlightSqlServiceClient::new(channel(&addr, None).await.unwrap());
    let info = c
        .get_sql_info(vec![SqlInfo::FlightSqlServerStatementTimeout])
        .await
        .unwrap();
    let b = &fetch(&mut c, info).await[0];
    let value = b.column(1).as_union();
    assert_eq!(
        b.column(0)
            .as_primitive::<arrow::datatypes::UInt32Type>()
            .value(0),
        100
    );
    let timeout_ms = value
        .child(value.type_id(0))
        .as_primitive::<arrow::datatypes::Int32Type>()
        .value(value.value_offset(0));
    assert_eq!(timeout_ms, 4000);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let quiet_rss = rss_kib(w.pid());
    let quiet = ingestion_rate(http_port, Duration::from_secs(3)).await;
    assert!(quiet > 15_000.0, "quiet ingestion {quiet} rows/s");
    // a query that only burns CPU: it runs until the timeout, while ingestion goes on
    let burn = "SELECT count(*) FROM generate_series(1, 100000000000) AS t(x) WHERE x % 7 = 3";
    let a = addr.clone();
    let burning =
        tokio::spawn(async move { sql(channel(&a, None).await.unwrap(), None, burn).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // only one query at a time: a second is refused while it runs
    let e = sql(channel(&addr, None).await.unwrap(), None, "SELECT 1")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("--flight-query-concurrency"), "{e:?}");
    let busy = ingestion_rate(http_port, Duration::from_secs(3)).await;
    let e = burning.await.unwrap().unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(e.message().contains("--flight-query-timeout (4s)"), "{e:?}");
    eprintln!("ingestion: quiet {quiet:.0} rows/s, during a CPU-bound query {busy:.0} rows/s");
    assert!(
        busy >= 0.95 * quiet,
        "ingestion fell from {quiet:.0} to {busy:.0} rows/s while a query ran"
    );
    // a query whose result would take gigabytes is refused at the memory limit
    let e = sql(
        channel(&addr, None).await.unwrap(),
        None,
        "SELECT * FROM generate_series(1, 400000000)",
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("--flight-query-memory"), "{e:?}");
    // so is one whose operators would (a sort of the same rows; nothing spills)
    let e = sql(
        channel(&addr, None).await.unwrap(),
        None,
        "SELECT value FROM generate_series(1, 50000000) AS t(value) ORDER BY value DESC LIMIT 3 OFFSET 40000000",
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    // the memory goes back: RSS returns to under 1.2× the quiet level within seconds
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut rss = rss_kib(w.pid());
    while rss as f64 > 1.2 * quiet_rss as f64 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        rss = rss_kib(w.pid());
    }
    eprintln!("RSS: quiet {quiet_rss} KiB, after the refused queries {rss} KiB");
    assert!(
        rss as f64 <= 1.2 * quiet_rss as f64,
        "RSS {rss} KiB after the queries, {quiet_rss} KiB before"
    );
    // and the server answers again
    let ok = sql(channel(&addr, None).await.unwrap(), None, "SELECT 1 AS one")
        .await
        .unwrap();
    assert_eq!(ok[0].num_rows(), 1);
    let metrics = http::request(http_port, "GET", "/metrics").unwrap().1;
    for result in ["busy", "timed_out", "too_large"] {
        assert!(
            metrics.contains(&format!("weir_flight_queries_total{{result=\"{result}\"}}")),
            "{result}"
        );
    }
}

/// Machines' classes, enriched into 1-second windows; the table is looked at every 100 ms.
const ENRICHED: &str = r#"
CREATE SOURCE gen (machine VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (
    connector = 'generator', machines = '2', sensors = 'temp',
    rate = '200', batch_rows = '10', event_time = 'ts', watermark = '50ms'
);
CREATE TABLE assets (machine VARCHAR PRIMARY KEY, class VARCHAR, site VARCHAR)
    WITH (connector = 'file', path = 'assets.csv', reload = '100ms');
CREATE SINK out WITH (connector = 'stdout', format = 'ndjson');
CREATE VIEW enriched AS
SELECT g.machine, a.class, window_start, window_end, count(*) AS n
FROM TUMBLE(gen, ts, INTERVAL '1' SECOND) g JOIN assets a ON g.machine = a.machine
GROUP BY g.machine, a.class, window_start, window_end;
INSERT INTO out SELECT * FROM enriched;
"#;

#[tokio::test(flavor = "multi_thread")]
async fn reference_tables_are_served_and_reloaded_while_running() {
    let addr = format!("127.0.0.1:{}", free_port());
    let first = "machine,class,site\nM1,group1_rigid,north\nM2,group2_rigid,south\n";
    let mut w = WeirProcess::start_with_files(
        ENRICHED,
        &[("assets.csv", first.as_bytes())],
        &["--flight-addr", addr.as_str(), "--flight-no-auth"],
        &[],
    );
    w.wait_log("Flight SQL listening", 1);
    let rows = sql_until(
        &addr,
        None,
        "SELECT machine, class, site FROM tables.assets ORDER BY machine",
        Duration::from_secs(30),
        |r| r.len() == 2,
    )
    .await;
    assert_eq!(rows[0]["class"], "group1_rigid");
    assert_eq!(rows[1]["site"], "south");
    sql_until(
        &addr,
        None,
        "SELECT count(*) AS n FROM latest.enriched WHERE class = 'group1_rigid'",
        Duration::from_secs(30),
        |r| r[0]["n"] == 1,
    )
    .await;
    // a ConfigMap-style swap: a new file renamed over the old one
    let next = "machine,class,site\nM1,group2_flexible,north\nM2,group2_rigid,south\n";
    std::fs::write(w.path("next.csv"), next).unwrap();
    std::fs::rename(w.path("next.csv"), w.path("assets.csv")).unwrap();
    sql_until(
        &addr,
        None,
        "SELECT class FROM tables.assets WHERE machine = 'M1'",
        Duration::from_secs(30),
        |r| r[0]["class"] == "group2_flexible",
    )
    .await;
    // windows closed after the reload carry the new class
    sql_until(
        &addr,
        None,
        "SELECT class FROM latest.enriched WHERE machine = 'M1' ORDER BY window_end DESC LIMIT 1",
        Duration::from_secs(30),
        |r| r.first().is_some_and(|r| r["class"] == "group2_flexible"),
    )
    .await;
    w.wait_log("reference table reloaded", 1);
    // a bad file: logged with its line, the version in use stays
    std::fs::write(w.path("assets.csv"), "machine,class,site\nM1,x\n").unwrap();
    w.wait_log("reference table not reloaded", 1);
    assert!(w.stderr().contains("assets.csv:2:"), "{}", w.stderr());
    let rows = sql_until(
        &addr,
        None,
        "SELECT count(*) AS n FROM tables.assets",
        Duration::from_secs(5),
        |r| r[0]["n"] == 2,
    )
    .await;
    assert_eq!(rows.len(), 1);
}
