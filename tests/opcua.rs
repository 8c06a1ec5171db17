//! The OPC UA connector against a real OPC UA server (async-opcua's server, run by the test
//! on a free loopback port with a simulated plant whose values follow a known schedule):
//! subscriptions and polling in long and wide rows, every value type, signed and encrypted
//! endpoints with user, password and certificates, server restarts, refused nodes and
//! mismatched types, and 1 s windows over subscribed values.
#![allow(clippy::unwrap_used)] // a test (or bench) fails by panicking

use weir_test_support::harness::DrivenSink;
use weir_test_support::http;
use weir_test_support::run_output;
use weir_test_support::tcp_proxy;
use weir_test_support::weir_process;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use run_output::{now_ms, skipped, time_ms};
use serde_json::Value;
use tcp_proxy::TcpProxy;
use weir_opcua_testserver::schedule::{self, Value as Expected};
use weir_opcua_testserver::{
    OpcDateTime, PlantConfig, PlantServer, USER, Variant, make_user_certificate,
};
use weir_process::WeirProcess;

const TICK_MS: i64 = 100;

fn plant(dir: &Path) -> PlantServer {
    PlantServer::start(PlantConfig::new(http::free_port(), &dir.join("server-pki")))
}

/// The JSON the stdout sink prints for a schedule value.
fn json(e: &Expected) -> Value {
    match e {
        Expected::Bool(b) => (*b).into(),
        Expected::Int(i) => (*i).into(),
        Expected::UInt(u) => (*u).into(),
        Expected::Float(f) => (*f).into(),
        Expected::Text(s) => s.clone().into(),
        Expected::TimeMs(_) => panic!("compare times with time_ms"),
        Expected::Floats(v) => v.iter().map(|f| Value::from(*f)).collect(),
        Expected::Ints(v) => v.iter().map(|i| Value::from(*i)).collect(),
    }
}

/// `weir run` of `source` (a CREATE SOURCE statement of a source called `src`) printing
/// every row of it as JSON.
fn run_source(source: &str) -> WeirProcess {
    WeirProcess::start(
        &format!(
            "{source}
             CREATE SINK out WITH (connector = 'stdout', format = 'ndjson');
             INSERT INTO out SELECT * FROM src;"
        ),
        &[],
    )
}

/// Stops `weir`, checks it exited cleanly and returns its rows and log.
fn finish(weir: WeirProcess) -> (Vec<Value>, String) {
    let (status, weir) = weir.stop();
    assert!(status.success(), "{}", weir.stderr());
    (weir.rows(), weir.stderr())
}

/// Checks rows of Machine1's temperature against the schedule.
fn machine1_temperatures(rows: &[Value]) {
    assert!(!rows.is_empty());
    for r in rows {
        let k = time_ms(&r["source_timestamp"]) / TICK_MS;
        let want = schedule::temperature(1, k);
        assert_eq!(r["value"].as_f64().unwrap(), want, "{r}");
    }
}

/// Ticks of the rows, checked to follow one another without a gap.
fn contiguous(ticks: &BTreeSet<i64>, what: &str) {
    let (first, last) = (ticks.first().unwrap(), ticks.last().unwrap());
    assert_eq!(
        (last - first + 1) as usize,
        ticks.len(),
        "{what}: ticks missing between {first} and {last}"
    );
}

/// A numeric schedule value as a DOUBLE column holds it.
fn number(e: Expected) -> f64 {
    match e {
        Expected::Bool(b) => b as i64 as f64,
        Expected::Int(i) => i as f64,
        Expected::UInt(u) => u as f64,
        Expected::Float(f) => f,
        other => panic!("{other:?} is not a number"),
    }
}

/// The machine variables of machines 1..=3 but `except`, listed for a long-shape source:
/// names `M<m>.<Var>`, the counters by numeric id and machine 3's temperature by namespace
/// URI.
fn machine_nodes(except: &[&str]) -> String {
    let mut nodes = Vec::new();
    for m in 1..=3 {
        for var in schedule::MACHINE_VARIABLES
            .iter()
            .filter(|v| !except.contains(v))
        {
            let id = match (m, *var) {
                (_, "Counter") => format!("ns=2;i={}", schedule::counter_id(m)),
                (3, "Temperature") => "nsu=urn:weir:test-plant;s=Machine3.Temperature".into(),
                _ => format!("ns=2;s=Machine{m}.{var}"),
            };
            nodes.push(format!("M{m}.{var} = {id}"));
        }
    }
    nodes.join(",\n")
}

/// Checks long rows of `nodes` nodes against the schedule: every value, status and
/// timestamp, every tick.
fn check_long_rows(rows: &[Value], nodes: usize, min_ticks: usize) {
    let mut ticks: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    for r in rows {
        let node = r["node"].as_str().unwrap();
        let (m, var) = node.trim_start_matches('M').split_once('.').unwrap();
        let m: u32 = m.parse().unwrap();
        let source = time_ms(&r["source_timestamp"]);
        assert_eq!(source % TICK_MS, 0, "{r}");
        let k = source / TICK_MS;
        let want = number(schedule::machine_value(var, m, k));
        assert_eq!(r["value"].as_f64().unwrap(), want, "{r}");
        let uncertain = var == "Pressure" && schedule::pressure_uncertain(k);
        let status = if uncertain {
            "UncertainLastUsableValue"
        } else {
            "Good"
        };
        assert_eq!(r["status"], status, "{r}");
        let server = time_ms(&r["server_timestamp"]);
        assert!(server >= source && server - source < 5_000, "{r}");
        ticks.entry(node.to_string()).or_default().insert(k);
    }
    assert_eq!(
        ticks.len(),
        nodes,
        "every node delivers: {:?}",
        ticks.keys()
    );
    for (node, t) in &ticks {
        assert!(t.len() >= min_ticks, "{node}: {} ticks", t.len());
        contiguous(t, node);
    }
}

#[test]
fn subscribed_values_follow_the_schedule_in_long_and_wide_rows() {
    let dir = tempfile::tempdir().unwrap();
    let server = plant(dir.path());
    let pki = dir.path().join("client-pki");
    let long = run_source(&format!(
        "CREATE SOURCE src (node TEXT, node_id TEXT, value DOUBLE, source_timestamp TIMESTAMP,
            server_timestamp TIMESTAMP, status TEXT) WITH (connector = 'opcua', url = '{url}',
            pki_dir = '{pki}', mode = 'subscribe', sampling_interval = '100ms',
            publishing_interval = '200ms', nodes = '{nodes}');",
        url = server.url(),
        pki = pki.display(),
        nodes = machine_nodes(&["Running"]),
    ));
    let mut wide = run_source(&format!(
        "CREATE SOURCE src (ts TIMESTAMP, temperature DOUBLE, speed INT, running BOOLEAN,
            pressure REAL, pressure_status TEXT, counter BIGINT UNSIGNED) WITH (connector = 'opcua',
            url = '{url}', pki_dir = '{pki}', shape = 'wide', time_column = 'ts',
            publishing_interval = '300ms', queue_size = '10',
            nodes = 'temperature = ns=2;s=Machine2.Temperature, speed = ns=2;s=Machine2.Speed,
                     running = ns=2;s=Machine2.Running, pressure = ns=2;s=Machine2.Pressure,
                     counter = ns=2;i={counter}');",
        url = server.url(),
        pki = dir.path().join("client-pki-2").display(),
        counter = schedule::counter_id(2),
    ));
    wide.wait_for("30 wide rows", Duration::from_secs(60), |w| {
        w.rows().len() >= 30
    });
    let (long, log) = finish(long);
    let (wide, _) = finish(wide);
    assert!(
        pki.join("own").join("cert.der").exists(),
        "the client's certificate is created on first start"
    );
    check_long_rows(&long, 12, 20);
    assert!(skipped(&log, "src").is_empty(), "{log}");
    // the client library's ERROR line for publish requests a server answers with
    // BadNoSubscription while the subscription is being created is left out
    assert!(
        !log.lines()
            .any(|l| l.contains("ERROR") && l.contains("BadNoSubscription")),
        "{log}"
    );
    // wide: one row per tick with every node's value of that tick
    let mut ticks = BTreeSet::new();
    for r in &wide {
        let k = time_ms(&r["ts"]) / TICK_MS;
        assert_eq!(time_ms(&r["ts"]) % TICK_MS, 0);
        assert!(ticks.insert(k), "one row per instant: {r}");
        for (column, var) in [
            ("temperature", "Temperature"),
            ("speed", "Speed"),
            ("running", "Running"),
            ("pressure", "Pressure"),
            ("counter", "Counter"),
        ] {
            let want = json(&schedule::machine_value(var, 2, k));
            assert_eq!(r[column], want, "{column}: {r}");
        }
        let uncertain = schedule::pressure_uncertain(k);
        assert_eq!(
            r["pressure_status"],
            if uncertain {
                "UncertainLastUsableValue"
            } else {
                "Good"
            }
        );
    }
    assert!(ticks.len() >= 30);
    contiguous(&ticks, "wide rows");
}

#[test]
fn polled_values_of_every_type_in_wide_and_long_rows() {
    let dir = tempfile::tempdir().unwrap();
    let server = plant(dir.path());
    let pki = dir.path().join("client-pki");
    let names = schedule::TYPE_VARIABLES;
    let types = [
        "BOOLEAN",
        "TINYINT",
        "TINYINT UNSIGNED",
        "SMALLINT",
        "SMALLINT UNSIGNED",
        "INT",
        "INT UNSIGNED",
        "BIGINT",
        "BIGINT UNSIGNED",
        "REAL",
        "DOUBLE",
        "TEXT",
        "TIMESTAMP",
        "DOUBLE[]",
        "INT[]",
    ];
    let columns: Vec<String> = names
        .iter()
        .zip(types)
        .map(|(n, t)| format!("v_{} {t}", n.to_lowercase()))
        .collect();
    let nodes: Vec<String> = names
        .iter()
        .map(|n| format!("v_{} = ns=2;s=Types.{n}", n.to_lowercase()))
        .collect();
    let mut typed = run_source(&format!(
        "CREATE SOURCE src (polled TIMESTAMP, {columns}) WITH (connector = 'opcua', url = '{url}',
            pki_dir = '{pki}', mode = 'poll', interval = '250ms', shape = 'wide',
            time_column = 'polled', nodes = '{nodes}');",
        columns = columns.join(", "),
        nodes = nodes.join(", "),
        url = server.url(),
        pki = pki.display(),
    ));
    let long = run_source(&format!(
        "CREATE SOURCE src (node TEXT, value DOUBLE, source_timestamp TIMESTAMP,
            server_timestamp TIMESTAMP, status TEXT) WITH (connector = 'opcua', url = '{url}',
            pki_dir = '{pki}', mode = 'poll', interval = '200ms', nodes = '{machines}');",
        url = server.url(),
        pki = dir.path().join("client-pki-2").display(),
        machines = machine_nodes(&[]),
    ));
    typed.wait_for("12 polls", Duration::from_secs(60), |w| {
        w.rows().len() >= 12
    });
    let (typed, _) = finish(typed);
    let (long, log) = finish(long);
    let mut polls = Vec::new();
    for r in &typed {
        // the tick of this read, from its String value; every other value is of that tick
        let k: i64 = r["v_string"]
            .as_str()
            .unwrap()
            .trim_start_matches("batch-")
            .parse()
            .unwrap();
        for n in names {
            let got = &r[format!("v_{}", n.to_lowercase()).as_str()];
            match schedule::type_value(n, k, TICK_MS) {
                Expected::TimeMs(ms) => assert_eq!(time_ms(got), ms, "{n}: {r}"),
                e => assert_eq!(*got, json(&e), "{n}: {r}"),
            }
        }
        let polled = time_ms(&r["polled"]);
        assert!(polled >= k * TICK_MS && polled - k * TICK_MS < 2_000, "{r}");
        polls.push(polled);
    }
    // one read per interval
    let gaps: Vec<i64> = polls.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().all(|g| (150..=600).contains(g)), "{gaps:?}");
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &long {
        let node = r["node"].as_str().unwrap();
        *per_node.entry(node).or_default() += 1;
        let (m, var) = node.trim_start_matches('M').split_once('.').unwrap();
        let k = time_ms(&r["source_timestamp"]) / TICK_MS;
        let want = number(schedule::machine_value(var, m.parse().unwrap(), k));
        assert_eq!(r["value"].as_f64().unwrap(), want, "{r}");
    }
    // a Boolean does not fit a DOUBLE column: counted per read, the other nodes unaffected
    assert_eq!(per_node.len(), 12, "{per_node:?}");
    assert!(per_node.values().all(|n| *n >= 10), "{per_node:?}");
    let skips = skipped(&log, "src");
    assert!(skips["conversion"] >= 3 * 10, "{skips:?}");
    assert!(log.contains("does not fit the Float64 column"), "{log}");
}

#[test]
fn secure_endpoints_with_user_identity_and_clear_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let (user_cert, user_key) = make_user_certificate(&dir.path().join("user"));
    let mut config = PlantConfig::new(http::free_port(), &dir.path().join("server-pki"));
    config.x509_user_cert = Some(user_cert.clone());
    let server = PlantServer::start(config);
    let pki = dir.path().join("client-pki");
    server.trust_in(&pki);
    let user = format!("username = '{USER}', password = '${{OPCUA_PASSWORD}}'");
    let x509 = format!(
        "user_certificate = '{}', user_private_key = '{}'",
        user_cert.display(),
        user_key.display()
    );
    let source = |name: &str, policy: &str, mode: &str, pki: &Path, identity: &str| {
        format!(
            "CREATE SOURCE {name} (node TEXT, value DOUBLE, source_timestamp TIMESTAMP, status TEXT) WITH (
                connector = 'opcua', url = '{url}', security_policy = '{policy}', security_mode = '{mode}',
                {identity}, pki_dir = '{pki}', publishing_interval = '200ms',
                nodes = 'M1.Temperature = ns=2;s=Machine1.Temperature');",
            url = server.url(),
            pki = pki.display()
        )
    };
    let password = server.config().password.clone();
    let mut weir = WeirProcess::start(
        &format!(
            "{} {} {}
             CREATE SINK out WITH (connector = 'stdout', format = 'ndjson');
             INSERT INTO out SELECT 'a' AS src, * FROM basic256;
             INSERT INTO out SELECT 'b' AS src, * FROM aes128;
             INSERT INTO out SELECT 'c' AS src, * FROM aes256;",
            source("basic256", "Basic256Sha256", "SignAndEncrypt", &pki, &user),
            source(
                "aes128",
                "Aes128_Sha256_RsaOaep",
                "SignAndEncrypt",
                &pki,
                &user
            ),
            source("aes256", "Aes256_Sha256_RsaPss", "Sign", &pki, &x509),
        ),
        &[("OPCUA_PASSWORD", &password)],
    );
    weir.wait_for(
        "values over every secure endpoint",
        Duration::from_secs(60),
        |w| {
            let rows = w.rows();
            ["a", "b", "c"]
                .iter()
                .all(|s| rows.iter().filter(|r| r["src"] == *s).count() >= 5)
        },
    );
    let (rows, _) = finish(weir);
    machine1_temperatures(&rows);

    // one Basic256Sha256 + SignAndEncrypt source, printing its rows
    let basic256 = |pki: &Path, identity: &str, password: &str| {
        WeirProcess::start(
            &format!(
                "{} CREATE SINK out WITH (connector = 'stdout', format = 'ndjson');
                 INSERT INTO out SELECT * FROM basic256;",
                source(
                    "basic256",
                    "Basic256Sha256",
                    "SignAndEncrypt",
                    pki,
                    identity
                )
            ),
            &[("OPCUA_PASSWORD", password)],
        )
    };

    // a wrong password: refused, said so, retried, never a row
    let mut wrong = basic256(&pki, &user, "not-the-password");
    wrong.wait_log("the server refused the user identity", 1);
    wrong.wait_log("opcua cannot connect; retrying", 1);
    let (status, wrong) = wrong.stop();
    assert!(status.success());
    assert!(wrong.rows().is_empty());
    assert!(!wrong.stderr().contains(&password) && !wrong.stderr().contains("not-the-password"));
    assert!(
        skipped(&wrong.stderr(), "basic256")["auth"] >= 1,
        "{}",
        wrong.stderr()
    );

    // anonymous on an endpoint that takes only users and certificates: said so, as auth
    let mut anonymous = basic256(&pki, "queue_size = '10'", &password);
    anonymous.wait_log("does not accept anonymous (no username) logins", 1);
    let (_, anonymous) = anonymous.stop();
    assert!(anonymous.rows().is_empty());
    let log = anonymous.stderr();
    assert!(log.contains("it accepts username and password"), "{log}");
    assert!(
        !log.contains("offers no endpoint with security policy"),
        "{log}"
    );
    assert!(skipped(&log, "basic256")["auth"] >= 1, "{log}");

    // a server certificate nobody trusted: refused, stored as rejected, said where
    let fresh = dir.path().join("fresh-pki");
    let mut untrusted = basic256(&fresh, &user, &password);
    untrusted.wait_log("the server's certificate is not trusted", 1);
    let (_, untrusted) = untrusted.stop();
    assert!(untrusted.rows().is_empty());
    let log = untrusted.stderr();
    assert!(
        log.contains(&format!("{}/rejected", fresh.display())),
        "{log}"
    );
    assert!(skipped(&log, "basic256")["certificate"] >= 1, "{log}");
    let rejected = std::fs::read_dir(fresh.join("rejected")).unwrap().count();
    assert_eq!(rejected, 1, "the server's certificate waits in rejected/");

    // trust_server_cert for commissioning: accepted, loudly
    let commissioning_pki = dir.path().join("other-pki");
    let trusting = format!("{user}, trust_server_cert = 'true'");
    let mut commissioning = basic256(&commissioning_pki, &trusting, &password);
    commissioning.wait_rows(3);
    let (_, commissioning) = commissioning.stop();
    assert!(commissioning.stderr().contains("TRUST_SERVER_CERT IS ON"));
}

#[test]
fn the_source_waits_for_the_server_and_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = http::free_port();
    let pki = dir.path().join("client-pki");
    let mut weir = WeirProcess::start(
        &format!(
            "CREATE SOURCE plc (node TEXT, value DOUBLE, source_timestamp TIMESTAMP, status TEXT) WITH (
                connector = 'opcua', url = 'opc.tcp://127.0.0.1:{port}/', pki_dir = '{pki}',
                publishing_interval = '200ms', nodes = 'M1.Temperature = ns=2;s=Machine1.Temperature');
             CREATE SINK out WITH (connector = 'stdout', format = 'ndjson');
             INSERT INTO out SELECT * FROM plc;",
            pki = pki.display()
        ),
        &[],
    );
    // no server yet: retried, never exits
    weir.wait_log("opcua cannot start reading; retrying", 1);
    let mut server = PlantServer::start(PlantConfig::new(port, &dir.path().join("server-pki")));
    weir.wait_rows(10);
    server.stop();
    let before = weir.rows().len();
    weir.wait_log("opcua connection lost", 1);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        weir.rows().len() <= before + 2,
        "no values while the server is down"
    );
    let down_from = weir
        .rows()
        .iter()
        .map(|r| time_ms(&r["source_timestamp"]))
        .max()
        .unwrap();
    server.restart();
    weir.wait_for("values after the restart", Duration::from_secs(60), |w| {
        w.rows()
            .iter()
            .filter(|r| time_ms(&r["source_timestamp"]) > down_from + 2_000)
            .count()
            >= 10
    });
    assert!(weir.is_running());
    let (rows, log) = finish(weir);
    machine1_temperatures(&rows);
    assert!(log.matches("opcua session connected").count() >= 2, "{log}");
}

/// Waits until `weir` printed `n` values sampled after `after_ms`.
fn wait_values_after(weir: &mut WeirProcess, after_ms: i64, n: usize, what: &str) {
    weir.wait_for(what, Duration::from_secs(60), |w| {
        w.rows()
            .iter()
            .filter(|r| time_ms(&r["source_timestamp"]) > after_ms)
            .count()
            >= n
    });
}

#[test]
fn a_silent_network_cut_and_a_timed_out_session_are_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let server = plant(dir.path());
    let proxy = TcpProxy::start(server.config().port);
    let mut weir = WeirProcess::start(
        &format!(
            "CREATE SOURCE plc (node TEXT, value DOUBLE, source_timestamp TIMESTAMP, status TEXT) WITH (
                connector = 'opcua', url = 'opc.tcp://127.0.0.1:{}/', pki_dir = '{}',
                session_timeout = '3s', timeout = '1s', publishing_interval = '200ms',
                nodes = 'M1.Temperature = ns=2;s=Machine1.Temperature');
             CREATE SINK out WITH (connector = 'stdout', format = 'ndjson');
             INSERT INTO out SELECT * FROM plc;",
            proxy.port,
            dir.path().join("client-pki").display()
        ),
        &[],
    );
    weir.wait_rows(10);
    // the network stops carrying packets: found out by the keep-alives, not by a closed socket
    proxy.cut();
    weir.wait_log("opcua connection lost", 1);
    proxy.restore();
    wait_values_after(
        &mut weir,
        now_ms() + 500,
        10,
        "values after the network came back",
    );
    // weir stands still longer than the session timeout: the server drops the session
    weir.signal("STOP");
    std::thread::sleep(Duration::from_secs(5));
    weir.signal("CONT");
    wait_values_after(
        &mut weir,
        now_ms() + 500,
        10,
        "values after the session timed out",
    );
    let (rows, log) = finish(weir);
    assert!(log.matches("opcua session connected").count() >= 3, "{log}");
    machine1_temperatures(&rows);
}

#[test]
fn unknown_nodes_and_mismatched_types_are_counted_and_the_rest_flows() {
    let dir = tempfile::tempdir().unwrap();
    let server = plant(dir.path());
    let pki = dir.path().join("client-pki");
    let mut weir = WeirProcess::start(
        &format!(
            "CREATE SOURCE plc (ts TIMESTAMP, temperature DOUBLE, ghost DOUBLE, speed BOOLEAN, label DOUBLE)
                WITH (connector = 'opcua', url = '{url}', pki_dir = '{pki}', shape = 'wide',
                time_column = 'ts', publishing_interval = '200ms',
                nodes = 'temperature = ns=2;s=Machine1.Temperature, ghost = ns=2;s=Machine9.Nothing,
                         speed = ns=2;s=Machine1.Speed, label = ns=2;s=Types.String');
             CREATE SINK out WITH (connector = 'stdout', format = 'ndjson');
             INSERT INTO out SELECT * FROM plc;",
            url = server.url(),
            pki = pki.display()
        ),
        &[],
    );
    weir.wait_rows(20);
    let (status, weir) = weir.stop();
    assert!(status.success(), "{}", weir.stderr());
    let rows = weir.rows();
    let mut ticks = BTreeSet::new();
    for r in &rows {
        let k = time_ms(&r["ts"]) / TICK_MS;
        ticks.insert(k);
        assert_eq!(
            r["temperature"].as_f64(),
            Some(schedule::temperature(1, k)),
            "{r} {rows:?}"
        );
        assert!(
            r["ghost"].is_null() && r["speed"].is_null() && r["label"].is_null(),
            "{r}"
        );
    }
    contiguous(&ticks, "temperature");
    let log = weir.stderr();
    let skips = skipped(&log, "plc");
    assert_eq!(skips["node"], 1, "{log}");
    // every value of speed and label was refused: two per row
    assert!(
        skips["conversion"] >= 2 * rows.len() as u64 - 4,
        "{skips:?} for {} rows",
        rows.len()
    );
    assert!(log.contains("BadNodeIdUnknown"), "{log}");
    assert!(log.contains("does not fit the Boolean column"), "{log}");
}

#[test]
fn browsed_folder_in_one_second_windows_matches_the_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let server = plant(dir.path());
    let pki = dir.path().join("client-pki");
    let mut weir = WeirProcess::start(
        &format!(
            "CREATE SOURCE plant (node TEXT, value DOUBLE, source_timestamp TIMESTAMP, status TEXT) WITH (
                connector = 'opcua', url = '{url}', pki_dir = '{pki}', browse = 'ns=2;s=Plant',
                status_filter = 'good_only', publishing_interval = '200ms',
                event_time = 'source_timestamp', watermark = '500ms');
             CREATE SINK out WITH (connector = 'stdout', format = 'ndjson');
             INSERT INTO out SELECT node, window_start, count(*) AS n, avg(value) AS mean,
                    min(value) AS low, max(value) AS high
             FROM TUMBLE(plant, source_timestamp, INTERVAL '1' SECOND)
             WHERE node LIKE '%/Temperature' OR node LIKE '%/Pressure'
             GROUP BY node, window_start, window_end;",
            url = server.url(),
            pki = pki.display()
        ),
        &[],
    );
    weir.wait_for("4 windows per node", Duration::from_secs(60), |w| {
        w.rows().len() >= 6 * 4 + 3
    });
    let (status, weir) = weir.stop();
    assert!(status.success(), "{}", weir.stderr());
    let mut per_node: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for r in weir.rows() {
        per_node
            .entry(r["node"].as_str().unwrap().to_string())
            .or_default()
            .push(r);
    }
    let nodes: Vec<&String> = per_node.keys().collect();
    assert_eq!(
        nodes,
        [
            "Machine1/Pressure",
            "Machine1/Temperature",
            "Machine2/Pressure",
            "Machine2/Temperature",
            "Machine3/Pressure",
            "Machine3/Temperature"
        ],
    );
    for (node, windows) in &per_node {
        let (machine, var) = node.split_once('/').unwrap();
        let m: u32 = machine.trim_start_matches("Machine").parse().unwrap();
        // the first window may have started before the subscription, the last one was
        // emitted open at the stop
        assert!(windows.len() >= 5, "{node}: {windows:?}");
        for w in &windows[1..windows.len() - 1] {
            let start = time_ms(&w["window_start"]);
            let ticks = (start / TICK_MS..(start + 1000) / TICK_MS)
                .filter(|k| var != "Pressure" || !schedule::pressure_uncertain(*k));
            let values: Vec<f64> = ticks
                .map(|k| number(schedule::machine_value(var, m, k)))
                .collect();
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            let low = values.iter().cloned().fold(f64::MAX, f64::min);
            let high = values.iter().cloned().fold(f64::MIN, f64::max);
            assert_eq!(
                w["n"].as_u64().unwrap() as usize,
                values.len(),
                "{node} {w}"
            );
            assert!(
                (w["mean"].as_f64().unwrap() - mean).abs() < 1e-9,
                "{node} {w} want {mean}"
            );
            assert_eq!(w["low"].as_f64().unwrap(), low, "{node} {w}");
            assert_eq!(w["high"].as_f64().unwrap(), high, "{node} {w}");
        }
    }
}

#[test]
fn bad_options_are_refused_with_their_place_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.sql");
    std::fs::write(
        &file,
        "CREATE SOURCE a (ts TIMESTAMP, temp DOUBLE, extra INT) WITH (connector = 'opcua',
  url = 'opc.tcp://127.0.0.1:4840/', shape = 'wide', time_column = 'ts', nodes = 'temp = ns=2;s=T');
CREATE SOURCE b (node TEXT, value DOUBLE) WITH (connector = 'opcua',
  url = 'opc.tcp://127.0.0.1:4840/', nodes = 'x = ns=2;q=T');
CREATE SOURCE c (node TEXT, value DOUBLE) WITH (connector = 'opcua', url = 'opc.tcp://h/',
  security_policy = 'Basic256Sha256', security_mode = 'None', nodes = 'ns=2;i=5');
CREATE SOURCE d (node TEXT, value DOUBLE) WITH (connector = 'opcua', url = 'opc.tcp://h/',
  nodes = 'ns=2;i=5', mode = 'poll', sampling_intervall = '1s');
CREATE SOURCE e (node TEXT, reading DOUBLE) WITH (connector = 'opcua', url = 'opc.tcp://h/',
  nodes = 'ns=2;i=5');
CREATE SOURCE f (node TEXT, value DOUBLE) WITH (connector = 'opcua', url = 'opc.tcp://h/',
  nodes = 'ns=2;i=5', username = 'u');
CREATE SINK out WITH (connector = 'stdout');
INSERT INTO out SELECT * FROM b;",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["check", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let f = file.display();
    for expected in [
        format!("{f}:1:15: column 'extra' is not filled"),
        format!("{f}:4:46: option 'nodes' = 'x = ns=2;q=T': 'ns=2;q=T' is not a NodeId"),
        format!("{f}:5:15: security_policy None goes with security_mode None"),
        format!("{f}:8:38: unknown option 'sampling_intervall'"),
        format!("{f}:9:15: column 'reading' is not one of the long shape's columns"),
        format!("{f}:11:15: give both username and password"),
    ] {
        assert!(err.contains(&expected), "{expected}\nin\n{err}");
    }
    assert_eq!(
        err.lines()
            .filter(|l| l.starts_with(&*f.to_string()))
            .count(),
        6,
        "{err}"
    );
}

#[test]
fn sources_sharing_a_pki_directory_make_one_certificate_in_standard_pem() {
    let dir = tempfile::tempdir().unwrap();
    let server = plant(dir.path());
    let pki = dir.path().join("shared-pki");
    let source = |name: &str, node: &str| {
        format!(
            "CREATE SOURCE {name} (node TEXT, value DOUBLE, source_timestamp TIMESTAMP, status TEXT) WITH (
                connector = 'opcua', url = '{url}', pki_dir = '{pki}', mode = 'poll', interval = '200ms',
                nodes = 'T = ns=2;s={node}');",
            url = server.url(),
            pki = pki.display()
        )
    };
    let mut weir = WeirProcess::start(
        &format!(
            "{} {}
             CREATE SINK out WITH (connector = 'stdout', format = 'ndjson');
             INSERT INTO out SELECT 'a' AS src, * FROM one;
             INSERT INTO out SELECT 'b' AS src, * FROM two;",
            source("one", "Machine1.Temperature"),
            source("two", "Machine2.Temperature"),
        ),
        &[],
    );
    weir.wait_for("rows of both sources", Duration::from_secs(60), |w| {
        let rows = w.rows();
        ["a", "b"]
            .iter()
            .all(|s| rows.iter().filter(|r| r["src"] == *s).count() >= 3)
    });
    let (_, log) = finish(weir);
    assert!(!log.contains("Certificate creation failed"), "{log}");
    assert_eq!(
        log.matches("created this process's OPC UA certificate")
            .count(),
        1,
        "{log}"
    );
    assert_eq!(std::fs::read_dir(pki.join("own")).unwrap().count(), 1);
    let key = pki.join("private").join("private.pem");
    let pem = std::fs::read(&key).unwrap();
    assert!(!pem.contains(&b'\r'), "LF line ends");
    let read = std::process::Command::new("openssl")
        .args(["pkey", "-noout", "-in"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(read.success(), "openssl reads the private key");
}

// ---- the sink: writing back to the plant ----

/// An OPC UA sink for rows of `columns`, of `options` (`url` given here), started.
fn opcua_sink(
    server: &PlantServer,
    columns: &str,
    options: &str,
    no_writes: bool,
) -> Result<DrivenSink, String> {
    DrivenSink::start(
        Arc::new(weir_connectors::opcua::OpcUaSinkFactory),
        columns,
        &format!(
            "connector = 'opcua', url = '{}', pki_dir = '{}', {options}",
            server.url(),
            server
                .config()
                .pki_dir
                .with_file_name("client-pki")
                .display()
        ),
        no_writes,
    )
}

/// The calls of `Plant.Derate` the server took, each as its arguments joined by spaces.
fn calls_of(server: &PlantServer) -> Vec<String> {
    let call = |a: &Vec<Variant>| {
        a.iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    server.log().calls().iter().map(call).collect()
}

/// `Setpoints.<name>` as a `nodes` entry for column `column`.
fn setpoint(column: &str, name: &str) -> String {
    format!("{column} = ns=2;s=Setpoints.{name}")
}

/// Every scalar type lands with the node's own DataType (the server checks the type of each
/// write against the node's and records what it took); values a type cannot hold are
/// refused and never sent, equal values are not sent again, and read backs agree.
#[test]
fn the_sink_writes_every_scalar_type_as_the_nodes_data_type() {
    let dir = tempfile::tempdir().unwrap();
    let server = plant(dir.path());
    let columns = "b BOOLEAN, i8 BIGINT, u8 BIGINT, i16 BIGINT, u16 INT, i32 BIGINT, u32 BIGINT, \
                   i64 BIGINT, u64 BIGINT UNSIGNED, f DOUBLE, d DOUBLE, s TEXT, t TIMESTAMP";
    let nodes = [
        ("b", "Boolean"),
        ("i8", "SByte"),
        ("u8", "Byte"),
        ("i16", "Int16"),
        ("u16", "UInt16"),
        ("i32", "Int32"),
        ("u32", "UInt32"),
        ("i64", "Int64"),
        ("u64", "UInt64"),
        ("f", "Float"),
        ("d", "Double"),
        ("s", "String"),
        ("t", "DateTime"),
    ]
    .map(|(c, n)| setpoint(c, n))
    .join(", ");
    let mut sink = opcua_sink(
        &server,
        columns,
        &format!("dry_run = 'false', verify = 'true', nodes = '{nodes}'"),
        false,
    )
    .unwrap();
    let t_ms: i64 = 1_767_225_600_123; // 2026-01-01T00:00:00.123Z
    sink.write(&[serde_json::json!({
        "b": true, "i8": -128, "u8": 255, "i16": -32768, "u16": 65535,
        "i32": -2147483648i64, "u32": 4294967295u64, "i64": i64::MIN, "u64": u64::MAX,
        "f": 1.5, "d": -2.25e300, "s": "derate 50%", "t": "2026-01-01T00:00:00.123Z",
    })]);
    let log = server.log();
    let expected = [
        ("Boolean", Variant::Boolean(true)),
        ("SByte", Variant::SByte(-128)),
        ("Byte", Variant::Byte(255)),
        ("Int16", Variant::Int16(-32768)),
        ("UInt16", Variant::UInt16(65535)),
        ("Int32", Variant::Int32(i32::MIN)),
        ("UInt32", Variant::UInt32(u32::MAX)),
        ("Int64", Variant::Int64(i64::MIN)),
        ("UInt64", Variant::UInt64(u64::MAX)),
        ("Float", Variant::Float(1.5)),
        ("Double", Variant::Double(-2.25e300)),
        ("String", Variant::from("derate 50%")),
        // DateTime counts 100 ns ticks since 1601-01-01
        (
            "DateTime",
            Variant::from(OpcDateTime::from(t_ms * 10_000 + 116_444_736_000_000_000)),
        ),
    ];
    for (name, want) in &expected {
        assert_eq!(log.value(name).as_ref(), Some(want), "{name}");
    }
    assert_eq!(log.writes().len(), 13, "{:?}", log.writes());
    let counts = sink.writes();
    assert_eq!(counts.get("written"), Some(&13), "{counts:?}");
    assert_eq!(counts.get("verify_mismatch"), None, "{counts:?}");

    // out of range for its node, or null: refused, nothing sent; equal values: not sent again
    sink.write(&[serde_json::json!({
        "b": true, "i8": 128, "u8": -1, "i16": -32768, "u16": 65535,
        "i32": -2147483648i64, "u32": 4294967296i64, "i64": i64::MIN, "u64": u64::MAX,
        "f": 1e39, "d": -2.25e300, "s": null, "t": "2026-01-01T00:00:00.123Z",
    })]);
    let counts = sink.writes();
    assert_eq!(counts.get("refused"), Some(&5), "{counts:?}");
    assert_eq!(counts.get("unchanged"), Some(&8), "{counts:?}");
    assert_eq!(log.writes().len(), 13, "nothing more reached the server");
    assert_eq!(log.value("SByte"), Some(Variant::SByte(-128)));
}

/// A column whose type does not fit its node's DataType, a node the server does not have, an
/// array node and a method whose arguments do not fit fail the sink's start, naming both.
#[test]
fn a_column_that_does_not_fit_its_node_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let server = plant(dir.path());
    let start = |columns: &str, options: &str| {
        opcua_sink(&server, columns, options, false)
            .err()
            .unwrap_or_else(|| panic!("{columns} / {options} started"))
    };
    let e = start("x DOUBLE", &format!("nodes = '{}'", setpoint("x", "Int16")));
    assert!(
        e.contains("column 'x' is Float64 but node ns=2;s=Setpoints.Int16 has DataType Int16"),
        "{e}"
    );
    let e = start("x TEXT", &format!("nodes = '{}'", setpoint("x", "Boolean")));
    assert!(e.contains("has DataType Boolean"), "{e}");
    let e = start("x DOUBLE", "nodes = 'x = ns=2;s=Nowhere'");
    assert!(
        e.contains(
            "node ns=2;s=Nowhere (column 'x'): its DataType cannot be read (BadNodeIdUnknown)"
        ),
        "{e}"
    );
    let e = start("x DOUBLE", "nodes = 'x = ns=2;s=Types.DoubleArray'");
    assert!(e.contains("holds an array"), "{e}");
    let e = start(
        "machine TEXT, percent TEXT, reason TEXT",
        "method = 'ns=2;s=Plant.Derate'",
    );
    assert!(
        e.contains("column 'percent' is Utf8View but input argument 'Percent' of method ns=2;s=Plant.Derate is Double"),
        "{e}"
    );
    let e = start(
        "machine TEXT, percent DOUBLE",
        "method = 'ns=2;s=Plant.Derate'",
    );
    assert!(
        e.contains("takes 3 input arguments (Machine: i=12, Percent: i=11, Reason: i=12) but 'arguments' gives 2 columns"),
        "{e}"
    );
}

/// The server's refusals are counted by status code and nothing else is lost: a node
/// without write access (`BadNotWritable`), one anonymous sessions may not write
/// (`BadUserAccessDenied`); over a signed and encrypted channel as the operator, the latter
/// is written.
#[test]
fn refused_writes_are_counted_by_status_code_and_a_user_may_write_more() {
    let dir = tempfile::tempdir().unwrap();
    let server = plant(dir.path());
    let columns = "ro DOUBLE, op DOUBLE, ok DOUBLE";
    let nodes = format!(
        "nodes = '{}, {}, {}', dry_run = 'false'",
        setpoint("ro", "ReadOnly"),
        setpoint("op", "OperatorOnly"),
        setpoint("ok", "Double")
    );
    let mut anonymous = opcua_sink(&server, columns, &nodes, false).unwrap();
    anonymous.write(&[serde_json::json!({"ro": 1.0, "op": 2.0, "ok": 3.0})]);
    let counts = anonymous.writes();
    assert_eq!(counts.get("BadNotWritable"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("BadUserAccessDenied"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("written"), Some(&1), "{counts:?}");
    let written: Vec<String> = server.log().writes().into_iter().map(|(n, _)| n).collect();
    assert_eq!(written, ["Double"]);
    // a refusal is not retried: the next equal row sends only what changed
    anonymous.write(&[serde_json::json!({"ro": 1.0, "op": 2.0, "ok": 4.0})]);
    assert_eq!(anonymous.writes().get("BadNotWritable"), Some(&2));
    anonymous.close();

    server.trust_in(&server.config().pki_dir.with_file_name("client-pki"));
    let mut operator = opcua_sink(
        &server,
        columns,
        &format!(
            "{nodes}, security_policy = 'Basic256Sha256', username = '{USER}', password = '{}'",
            server.config().password
        ),
        false,
    )
    .unwrap();
    operator.write(&[serde_json::json!({"ro": 1.0, "op": 5.0, "ok": 6.0})]);
    let counts = operator.writes();
    assert_eq!(counts.get("written"), Some(&2), "{counts:?}");
    assert_eq!(counts.get("BadNotWritable"), Some(&1), "{counts:?}");
    assert_eq!(
        server.log().value("OperatorOnly"),
        Some(Variant::Double(5.0))
    );
}

/// `method` calls the method once per row with the argument columns, on the object it is a
/// component of (browsed); with `method_key`, a repeated call for the same machine is not
/// made again while another machine's is.
#[test]
fn method_calls_pass_the_row_as_arguments_once_per_change() {
    let dir = tempfile::tempdir().unwrap();
    let server = plant(dir.path());
    let mut sink = opcua_sink(
        &server,
        "machine TEXT, percent DOUBLE, reason TEXT, zone TEXT",
        "method = 'ns=2;s=Plant.Derate', arguments = 'machine, percent, reason', method_key = 'machine', dry_run = 'false'",
        false,
    )
    .unwrap();
    let row = |m: &str, p: f64, r: &str| serde_json::json!({"machine": m, "percent": p, "reason": r, "zone": "D"});
    sink.write(&[row("M2", 70.0, "bearing"), row("M3", 80.0, "imbalance")]);
    sink.write(&[row("M2", 70.0, "bearing")]);
    sink.write(&[row("M3", 60.0, "imbalance")]);
    let calls = calls_of(&server);
    assert_eq!(
        calls,
        ["M2 70 bearing", "M3 80 imbalance", "M3 60 imbalance"]
    );
    let counts = sink.writes();
    assert_eq!(counts.get("written"), Some(&3), "{counts:?}");
    assert_eq!(counts.get("unchanged"), Some(&1), "{counts:?}");
}

/// Dry run (the default) and `--no-writes` (over a sink with `dry_run = 'false'`): the data
/// types are read, nothing is written or called, the counts say `dry_run`.
#[test]
fn dry_runs_write_and_call_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = plant(dir.path());
    for (options, no_writes) in [("", false), ("dry_run = 'false',", true)] {
        let mut sink = opcua_sink(
            &server,
            "machine TEXT, percent DOUBLE, reason TEXT",
            &format!(
                "{options} nodes = 'percent = ns=2;s=Setpoints.Double', method = 'ns=2;s=Plant.Derate'"
            ),
            no_writes,
        )
        .unwrap();
        sink.write(&[serde_json::json!({"machine": "M1", "percent": 50.0, "reason": "test"})]);
        assert_eq!(
            sink.writes().get("dry_run"),
            Some(&2),
            "{:?}",
            sink.writes()
        );
        assert_eq!(sink.writes().get("written"), None);
    }
    assert!(server.log().writes().is_empty());
    assert!(server.log().calls().is_empty());
}

/// End to end: `queries/bearing_derate_opcua.sql` (generator with a bearing fault on M2,
/// one-minute windows) against the test plant: `Plant.Derate` is called for M2 once (later
/// windows repeat the same call) and for no other machine. With `--no-writes` nothing is
/// called and the log shows the would-be call.
#[test]
fn a_bearing_fault_calls_derate_for_exactly_the_faulty_machine_once() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let pipeline = std::fs::read_to_string(repo.join("queries/bearing_derate_opcua.sql")).unwrap();
    for no_writes in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let server = plant(dir.path());
        let sql = pipeline
            .replace("opc.tcp://127.0.0.1:4840/", &server.url())
            .replace(
                "dry_run     = 'true'",
                &format!(
                    "dry_run = 'false', pki_dir = '{}'",
                    dir.path().join("pki").display()
                ),
            );
        assert!(sql.contains("dry_run = 'false'"));
        let args: &[&str] = if no_writes { &["--no-writes"] } else { &[] };
        let mut weir = WeirProcess::start_with(&sql, args, &[]);
        let status = weir.wait_exit(Duration::from_secs(120));
        let stderr = weir.stderr();
        assert!(status.success(), "{stderr}");
        let calls = calls_of(&server);
        let counted = if no_writes {
            "dry_run 1, unchanged 2"
        } else {
            "unchanged 2, written 1"
        };
        assert!(
            stderr.contains(&format!("sink line: values to machines: {counted}")),
            "{stderr}"
        );
        if no_writes {
            assert!(calls.is_empty(), "{calls:?}");
            let would: Vec<&str> = stderr
                .lines()
                .filter(|l| l.contains("dry run: would write"))
                .collect();
            assert_eq!(would.len(), 1, "{stderr}");
            assert!(would[0].contains("ns=2;s=Plant.Derate for M2"), "{stderr}");
            assert!(
                would[0].contains("call(M2 (String), 70 (Double), bearing fault (String))"),
                "{stderr}"
            );
        } else {
            assert_eq!(calls, ["M2 70 bearing fault"]);
        }
    }
}

/// `verify` reads each written node back: a server that keeps something else (a PLC program
/// clamping a request) is counted as `verify_mismatch`; a value it keeps as written is not.
#[test]
fn verify_counts_a_value_the_server_did_not_keep() {
    let dir = tempfile::tempdir().unwrap();
    let server = plant(dir.path());
    let mut sink = opcua_sink(
        &server,
        "limit DOUBLE",
        &format!(
            "dry_run = 'false', verify = 'true', nodes = '{}'",
            setpoint("limit", "Clamped")
        ),
        false,
    )
    .unwrap();
    sink.write(&[serde_json::json!({"limit": 80.0})]);
    assert_eq!(sink.writes().get("verify_mismatch"), None);
    sink.write(&[serde_json::json!({"limit": 120.0})]);
    let counts = sink.writes();
    assert_eq!(counts.get("written"), Some(&2), "{counts:?}");
    assert_eq!(counts.get("verify_mismatch"), Some(&1), "{counts:?}");
    assert_eq!(server.log().value("Clamped"), Some(Variant::Double(100.0)));
}

/// While the server is away, values wait and a newer one replaces the waiting one: after the
/// server comes back only the latest value of the node reaches it, never the stale one.
#[test]
fn after_a_server_restart_only_the_latest_value_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = plant(dir.path());
    let mut sink = opcua_sink(
        &server,
        "speed DOUBLE",
        &format!(
            "dry_run = 'false', timeout = '1s', nodes = '{}'",
            setpoint("speed", "Double")
        ),
        false,
    )
    .unwrap();
    sink.write(&[serde_json::json!({"speed": 1.0})]);
    server.stop();
    sink.write(&[serde_json::json!({"speed": 2.0})]);
    sink.write(&[serde_json::json!({"speed": 3.0})]);
    let counts = sink.writes();
    assert_eq!(counts.get("superseded"), Some(&1), "{counts:?}");
    server.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while sink.writes().get("written") != Some(&2) {
        assert!(
            std::time::Instant::now() < deadline,
            "the latest value was not written after the restart: {:?}",
            sink.writes()
        );
        std::thread::sleep(Duration::from_millis(200));
        sink.tick();
    }
    let written: Vec<Variant> = server.log().writes().into_iter().map(|(_, v)| v).collect();
    assert_eq!(written, [Variant::Double(1.0), Variant::Double(3.0)]);
}
