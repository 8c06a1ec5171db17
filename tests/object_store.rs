//! The `object_store` sink against a real S3-compatible server (s3s-fs) on a free loopback
//! port: keys and contents, outages mid-run, SIGKILL with spilled files, disk budgets,
//! quarantine of corrupt spill files, wrong credentials and a missing bucket. Every test
//! compares the rows in the bucket with the rows a local `file` sink got from the same
//! pipeline: none missing, none twice.
#![allow(clippy::unwrap_used)] // a test (or bench) fails by panicking

use weir_test_support::s3;
use weir_test_support::weir_process;

use std::path::Path;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use weir_process::WeirProcess;

/// A generator (3 machines, a reading every 10 ms of event time, `rate` rows/s of wall time,
/// for `duration` of event time) summarized per machine and second into the S3 sink `cloud`
/// and the local NDJSON sink `local`; `sink_options` are added to `cloud`.
fn pipeline(
    endpoint: &str,
    bucket: &str,
    rate: &str,
    duration: &str,
    sink_options: &str,
) -> String {
    format!(
        "CREATE SOURCE g (machine VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (
            connector = 'generator', machines = '3', sensors = 'temp', interval = '10ms', rate = '{rate}',
            duration = '{duration}', seed = '5', start = '2026-01-01T00:00:00Z', event_time = 'ts');
         CREATE SINK cloud WITH (connector = 'object_store', url = 's3://{bucket}/site-7', endpoint = '{endpoint}',
            region = 'us-east-1', access_key_id = '${{S3_KEY}}', secret_access_key = '${{S3_SECRET}}',
            roll_interval = '300ms'{sink_options});
         CREATE SINK archive WITH (connector = 'file', path = 'local', format = 'ndjson', roll_interval = '1h');
         CREATE VIEW per_second AS
           SELECT machine, window_start, window_end, count(*) AS n, avg(value) AS mean
           FROM TUMBLE(g, ts, INTERVAL '1' SECOND) GROUP BY machine, window_start, window_end;
         INSERT INTO cloud SELECT * FROM per_second;
         INSERT INTO archive SELECT * FROM per_second;"
    )
}

fn env(secret: &str) -> Vec<(&'static str, String)> {
    vec![
        ("S3_KEY", ACCESS_KEY.to_string()),
        ("S3_SECRET", secret.to_string()),
        ("WEIR_NODE_ID", "edge-1".to_string()),
    ]
}

fn start(pipeline: &str, secret: &str) -> WeirProcess {
    let env = env(secret);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    WeirProcess::start(pipeline, &env)
}

/// `b` with its times as zoneless nanoseconds, whatever their unit and zone (the bucket's
/// files hold UTC microseconds, the local sink's zoneless nanoseconds).
fn zoneless_times(b: &RecordBatch) -> RecordBatch {
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    let ns = DataType::Timestamp(TimeUnit::Nanosecond, None);
    let cols = b
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            DataType::Timestamp(..) => arrow::compute::cast(c, &ns).unwrap(),
            _ => std::sync::Arc::clone(c),
        })
        .collect::<Vec<_>>();
    let fields: Vec<Field> = b
        .schema()
        .fields()
        .iter()
        .zip(&cols)
        .map(|(f, c)| Field::new(f.name(), c.data_type().clone(), true))
        .collect();
    RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), cols).unwrap()
}

/// Rows as canonical JSON text, sorted (a multiset: duplicates stay).
fn json_rows(batches: &[RecordBatch]) -> Vec<String> {
    let batches: Vec<RecordBatch> = batches.iter().map(zoneless_times).collect();
    let mut buf = Vec::new();
    {
        let mut w: arrow::json::LineDelimitedWriter<_> = weir_engine::json::writer(&mut buf);
        for b in &batches {
            w.write(b).unwrap();
        }
        w.finish().unwrap();
    }
    let mut rows: Vec<String> = String::from_utf8(buf)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap()
                .to_string()
        })
        .collect();
    rows.sort();
    rows
}

/// Rows the local sink wrote.
fn local_rows(w: &WeirProcess) -> Vec<String> {
    let mut rows = Vec::new();
    for f in std::fs::read_dir(w.path("local")).unwrap() {
        let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
        rows.extend(text.lines().map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap()
                .to_string()
        }));
    }
    rows.sort();
    rows
}

fn bucket_rows(objects: &[(String, Vec<RecordBatch>)]) -> Vec<String> {
    let all: Vec<RecordBatch> = objects.iter().flat_map(|(_, b)| b.clone()).collect();
    json_rows(&all)
}

/// Spilled Parquet files in `dir` (not the quarantine).
fn spilled(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut v: Vec<_> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    v.sort();
    v
}

fn read_parquet(p: &Path) -> Vec<RecordBatch> {
    let data = bytes::Bytes::from(std::fs::read(p).unwrap());
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(data)
        .unwrap()
        .build()
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn every_window_lands_once_under_the_documented_keys() {
    let server = S3Server::start();
    let mut weir = start(
        &pipeline(
            &server.endpoint(),
            "edge",
            "max",
            "30s",
            ", roll_rows = '20'",
        ),
        SECRET_KEY,
    );
    let status = weir.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "{}", weir.stderr());
    let objects = runtime().block_on(server.objects("site-7"));
    assert!(
        objects.len() >= 4,
        "rolled by rows: {} files",
        objects.len()
    );
    let layout = regex_like_key;
    for (key, _) in &objects {
        assert!(layout(key), "key {key}");
    }
    let local = local_rows(&weir);
    assert_eq!(local.len(), 90, "3 machines × 30 windows");
    for r in &local {
        let v: serde_json::Value = serde_json::from_str(r).unwrap();
        assert_eq!(v["n"], 100, "100 readings per machine and second: {r}");
    }
    assert_eq!(
        bucket_rows(&objects),
        local,
        "the bucket holds exactly the pipeline's rows"
    );
    assert!(spilled(&weir.path("spill/cloud")).is_empty());
}

/// `site-7/pipeline=cloud/node=edge-1/dt=2026-01-01/hour=00/part-<start>-<end>-edge-1-<seq>.parquet`.
fn regex_like_key(key: &str) -> bool {
    let Some(rest) = key
        .strip_prefix("site-7/pipeline=cloud/node=edge-1/dt=2026-01-01/hour=00/part-20260101T0000")
    else {
        return false;
    };
    let Some(rest) = rest.strip_suffix(".parquet") else {
        return false;
    };
    let parts: Vec<&str> = rest.split('-').collect();
    parts.len() == 5
        && parts[1].starts_with("20260101T0000")
        && parts[2..4] == ["edge", "1"]
        && parts[4].len() == 6
}

#[test]
fn a_store_outage_mid_run_loses_nothing_and_duplicates_nothing() {
    let mut server = S3Server::start();
    let mut weir = start(
        &pipeline(&server.endpoint(), "edge", "600", "20s", ""),
        SECRET_KEY,
    );
    std::thread::sleep(Duration::from_secs(2));
    server.kill();
    weir.wait_log("object store unreachable", 1);
    weir.wait_for("files spilled", Duration::from_secs(20), |w| {
        spilled(&w.path("spill/cloud")).len() >= 3
    });
    server.restart();
    weir.wait_log("object store reachable again", 1);
    let status = weir.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "{}", weir.stderr());
    let objects = runtime().block_on(server.objects("site-7"));
    let local = local_rows(&weir);
    assert_eq!(local.len(), 60);
    assert_eq!(bucket_rows(&objects), local, "every row exactly once");
    assert!(
        spilled(&weir.path("spill/cloud")).is_empty(),
        "the spill directory is empty"
    );
    assert!(
        weir.stderr().contains("replayed_files="),
        "{}",
        weir.stderr()
    );
}

#[test]
fn files_spilled_before_a_sigkill_are_replayed_at_the_next_start() {
    let mut server = S3Server::start();
    server.kill();
    let spill = tempfile::tempdir().unwrap();
    let spill_opt = format!(", spill_dir = '{}'", spill.path().display());
    let mut weir = start(
        &pipeline(&server.endpoint(), "edge", "600", "1h", &spill_opt),
        SECRET_KEY,
    );
    let dir = spill.path().join("cloud");
    weir.wait_for("files spilled", Duration::from_secs(30), |_| {
        spilled(&dir).len() >= 4
    });
    weir.signal("KILL");
    let _ = weir.wait_exit(Duration::from_secs(10));
    let expected: Vec<RecordBatch> = spilled(&dir).iter().flat_map(|p| read_parquet(p)).collect();
    let expected = json_rows(&expected);
    assert!(!expected.is_empty());
    server.restart();
    // a run with no rows of its own: only the replay
    let mut again = start(
        &pipeline(&server.endpoint(), "edge", "max", "0s", &spill_opt),
        SECRET_KEY,
    );
    let status = again.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "{}", again.stderr());
    let objects = runtime().block_on(server.objects("site-7"));
    assert_eq!(
        bucket_rows(&objects),
        expected,
        "the spilled rows, each once; the replaying run logged:\n{}",
        again.stderr()
    );
    assert!(spilled(&dir).is_empty());
}

/// A stopped server, and weir running the pipeline at 1,200 rows/s for `duration` of event
/// time with `sink_options`.
fn with_store_down(duration: &str, sink_options: &str) -> (S3Server, WeirProcess) {
    let mut server = S3Server::start();
    server.kill();
    let p = pipeline(&server.endpoint(), "edge", "1200", duration, sink_options);
    let weir = start(&p, SECRET_KEY);
    (server, weir)
}

#[test]
fn uploads_go_on_when_the_spill_directory_cannot_be_created() {
    let server = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let blocked = dir.path().join("blocked");
    std::fs::write(&blocked, "a file where the spill directory should be").unwrap();
    let mut weir = start(
        &pipeline(
            &server.endpoint(),
            "edge",
            "max",
            "30s",
            &format!(
                ", roll_rows = '20', spill_dir = '{}/spill'",
                blocked.display()
            ),
        ),
        SECRET_KEY,
    );
    let status = weir.wait_exit(Duration::from_secs(60));
    let log = weir.stderr();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("spill directory unusable: uploading directly"),
        "{log}"
    );
    assert_eq!(log.matches("spill directory unusable").count(), 1, "{log}");
    let objects = runtime().block_on(server.objects("site-7"));
    let local = local_rows(&weir);
    assert_eq!(local.len(), 90);
    assert_eq!(bucket_rows(&objects), local, "every row uploaded");
}

#[test]
fn drop_oldest_keeps_the_spill_directory_within_its_budget() {
    let (_server, mut weir) = with_store_down(
        "16s",
        ", spill_max_bytes = '8KiB', spill_policy = 'drop_oldest'",
    );
    let status = weir.wait_exit(Duration::from_secs(60));
    // rows were dropped: the run says so in its exit code
    assert_eq!(status.code(), Some(3), "{}", weir.stderr());
    let files = spilled(&weir.path("spill/cloud"));
    let bytes: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
    assert!(
        !files.is_empty() && bytes <= 8 * 1024,
        "{} files, {bytes} bytes",
        files.len()
    );
    assert!(
        weir.stderr()
            .contains("spill budget reached: dropped the oldest spilled file"),
        "{}",
        weir.stderr()
    );
    // what is left is the newest data
    let kept = json_rows(
        &files
            .iter()
            .flat_map(|p| read_parquet(p))
            .collect::<Vec<_>>(),
    );
    let local = local_rows(&weir);
    assert!(kept.iter().all(|r| local.contains(r)));
    let start = |r: &String| {
        serde_json::from_str::<serde_json::Value>(r).unwrap()["window_start"].to_string()
    };
    let last = local.iter().map(start).max().unwrap();
    assert!(
        kept.iter().any(|r| start(r) == last),
        "the last window is kept"
    );
}

#[test]
fn block_holds_the_pipeline_until_the_store_answers() {
    let (mut server, mut weir) =
        with_store_down("12s", ", spill_max_bytes = '6KiB', spill_policy = 'block'");
    // unblocked it would finish in about 3 s
    std::thread::sleep(Duration::from_secs(8));
    assert!(weir.is_running(), "blocked by the full spill budget");
    let bytes: u64 = spilled(&weir.path("spill/cloud"))
        .iter()
        .map(|f| f.metadata().unwrap().len())
        .sum();
    assert!(bytes <= 6 * 1024, "{bytes}");
    server.restart();
    let status = weir.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "{}", weir.stderr());
    let objects = runtime().block_on(server.objects("site-7"));
    let local = local_rows(&weir);
    assert_eq!(local.len(), 36);
    assert_eq!(
        bucket_rows(&objects),
        local,
        "nothing dropped, nothing twice"
    );
}

#[test]
fn corrupt_and_torn_spill_files_are_quarantined() {
    let server = S3Server::start();
    let spill = tempfile::tempdir().unwrap();
    let dir = spill.path().join("cloud");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("0000000000001-000001-1.parquet"),
        b"PAR1 not really",
    )
    .unwrap();
    std::fs::write(dir.join(".tmp-0000000000002-000001-1.parquet"), b"PAR1").unwrap();
    let spill_opt = format!(", spill_dir = '{}'", spill.path().display());
    let mut weir = start(
        &pipeline(&server.endpoint(), "edge", "max", "5s", &spill_opt),
        SECRET_KEY,
    );
    let status = weir.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "{}", weir.stderr());
    let log = weir.stderr();
    assert!(
        log.contains("corrupt spill file moved to quarantine"),
        "{log}"
    );
    assert!(log.contains("torn spill file"), "{log}");
    let quarantined = std::fs::read_dir(dir.join("quarantine")).unwrap().count();
    assert_eq!(quarantined, 2);
    assert!(spilled(&dir).is_empty());
    let objects = runtime().block_on(server.objects("site-7"));
    assert_eq!(bucket_rows(&objects), local_rows(&weir));
}

fn spilled_rows(w: &WeirProcess) -> Vec<String> {
    let files = spilled(&w.path("spill/cloud"));
    json_rows(
        &files
            .iter()
            .flat_map(|p| read_parquet(p))
            .collect::<Vec<_>>(),
    )
}

#[test]
fn wrong_credentials_spill_everything_with_a_clear_error() {
    let server = S3Server::start();
    let mut weir = start(
        &pipeline(&server.endpoint(), "edge", "max", "3s", ""),
        "wrong-secret",
    );
    let status = weir.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "{}", weir.stderr());
    let log = weir.stderr();
    assert!(
        log.contains("object store refused the upload (access denied: check the credentials")
            && log.contains("403 Forbidden")
            && !log.contains("object store unreachable"),
        "{log}"
    );
    assert!(log.contains("SignatureDoesNotMatch"), "{log}");
    assert!(!log.contains("wrong-secret"), "the secret is never logged");
    assert_eq!(
        spilled_rows(&weir),
        local_rows(&weir),
        "everything spilled, nothing lost"
    );
    assert!(runtime().block_on(server.objects("site-7")).is_empty());
}

#[test]
fn a_missing_bucket_is_reported_at_start_and_loses_nothing() {
    let server = S3Server::start();
    let mut weir = start(
        &pipeline(&server.endpoint(), "no-such-bucket", "max", "3s", ""),
        SECRET_KEY,
    );
    let status = weir.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "{}", weir.stderr());
    let log = weir.stderr();
    assert!(
        log.contains("cannot list the store") && log.contains("NoSuchBucket"),
        "{log}"
    );
    // s3s-fs creates the bucket on the first PUT (real S3 answers NoSuchBucket, and the
    // files are spilled as above): either way every row is in the bucket or spilled
    let mut all = bucket_rows(&runtime().block_on(server.objects_in("no-such-bucket", "site-7")));
    all.extend(spilled_rows(&weir));
    all.sort();
    assert_eq!(all, local_rows(&weir));
}

#[test]
fn the_quarantine_is_capped_and_counts_in_the_spill_budget() {
    let spill = tempfile::tempdir().unwrap();
    let q = spill.path().join("cloud").join("quarantine");
    std::fs::create_dir_all(&q).unwrap();
    std::fs::write(q.join("old.parquet"), vec![0u8; 600]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    std::fs::write(q.join("newer.parquet"), vec![0u8; 600]).unwrap();
    // the quarantine keeps a tenth of 8 KiB (819 bytes): the older file goes at start; the
    // newer one goes when the backlog needs the room
    let (_server, mut weir) = with_store_down(
        "16s",
        &format!(
            ", spill_dir = '{}', spill_max_bytes = '8KiB', spill_policy = 'drop_oldest'",
            spill.path().display()
        ),
    );
    weir.wait_log("quarantined spill file deleted", 1);
    assert!(!q.join("old.parquet").exists());
    assert!(q.join("newer.parquet").exists());
    let status = weir.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(3), "{}", weir.stderr());
    let log = weir.stderr();
    assert!(
        log.contains("the quarantine keeps at most a tenth"),
        "{log}"
    );
    assert!(
        log.contains("sink cloud: 0 spill files quarantined, 2 quarantined files deleted"),
        "the summary counts them: {log}"
    );
    assert!(
        log.contains("the spill budget (which counts the quarantine) needed the room"),
        "{log}"
    );
    assert_eq!(std::fs::read_dir(&q).unwrap().count(), 0);
    let backlog: u64 = spilled(&spill.path().join("cloud"))
        .iter()
        .map(|f| f.metadata().unwrap().len())
        .sum();
    assert!(backlog <= 8 * 1024, "{backlog}");
}

/// The fleet pipeline: a generator (the same seed on every node) summarised per second into
/// the bucket's prefix `fleet` through `endpoint`, and into local Parquet files.
fn fleet_pipeline(endpoint: &str, extra: &str) -> String {
    format!(
        "CREATE SOURCE g (machine VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (
            connector = 'generator', machines = '3', sensors = 'temp', interval = '10ms', rate = '2000',
            limit = '6000', seed = '11', start = '2026-01-01T00:00:00Z', event_time = 'ts');
         CREATE SINK cloud WITH (connector = 'object_store', url = 's3://edge/fleet', endpoint = '{endpoint}',
            region = 'us-east-1', access_key_id = '${{S3_KEY}}', secret_access_key = '${{S3_SECRET}}',
            roll_interval = '300ms', timeout = '1s'{extra});
         CREATE SINK archive WITH (connector = 'file', path = 'local', format = 'parquet');
         CREATE VIEW per_second AS
           SELECT machine, window_start, window_end, count(*) AS n, avg(value) AS mean
           FROM TUMBLE(g, ts, INTERVAL '1' SECOND) GROUP BY machine, window_start, window_end;
         INSERT INTO cloud SELECT * FROM per_second;
         INSERT INTO archive SELECT * FROM per_second;"
    )
}

/// Runs a Python script (the test venv's DuckDB) that prints one line of JSON.
fn python_json(script: &str, args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(weir_test_support::process::python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// DuckDB reads the bucket as one Hive-partitioned table and the nodes' local files; both
/// as sorted rows `node, machine, window start (epoch µs), n, mean`.
const READ_FLEET: &str = r#"
import duckdb, json, sys
bucket, locals = sys.argv[1], sys.argv[2:]
con = duckdb.connect()
cloud = con.sql(f"""
    SELECT node, machine, epoch_us(window_start) AS ws, n, mean
    FROM read_parquet('{bucket}/**/*.parquet', hive_partitioning = true)
    ORDER BY ALL""").fetchall()
local = []
for spec in locals:
    node, path = spec.split('=', 1)
    local += con.sql(f"""
        SELECT '{node}' AS node, machine, epoch_us(window_start) AS ws, n, mean
        FROM read_parquet('{path}/*.parquet')""").fetchall()
local.sort()
types = con.sql(f"DESCRIBE SELECT * FROM read_parquet('{bucket}/**/*.parquet', hive_partitioning = true)").fetchall()
print(json.dumps({"cloud": [list(r) for r in cloud], "local": [list(r) for r in local],
                  "types": {t[0]: t[1] for t in types}}))
"#;

/// Three nodes run the same pipeline with the same seed into one bucket at once — one of
/// them with its link cut for a while, so it spills and replays: every object is its own,
/// and DuckDB's Hive reader reads the bucket as one table equal to the union of the three
/// nodes' local files, with the right `node` column.
#[test]
fn three_nodes_write_one_bucket_without_overwriting_each_other() {
    use weir_test_support::tcp_proxy::TcpProxy;
    let server = S3Server::start();
    let proxy = TcpProxy::start(server.port);
    let endpoint = |port: u16| format!("http://127.0.0.1:{port}");
    let mut nodes = Vec::new();
    for (node, port) in [("n1", server.port), ("n2", server.port), ("n3", proxy.port)] {
        let mut env = env(SECRET_KEY);
        env.retain(|(k, _)| *k != "WEIR_NODE_ID");
        env.push(("WEIR_NODE_ID", node.to_string()));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        nodes.push(WeirProcess::start(
            &fleet_pipeline(&endpoint(port), ""),
            &env,
        ));
    }
    // n3 is cut off from the store for a while: its files spill, then replay
    nodes[2].wait_log("source starting", 1);
    proxy.cut();
    nodes[2].wait_log("spilling files to disk", 1);
    std::thread::sleep(Duration::from_millis(800));
    proxy.restore();
    for n in &mut nodes {
        let status = n.wait_exit(Duration::from_secs(60));
        assert!(status.success(), "{}", n.stderr());
    }
    assert!(nodes[2].stderr().contains("object store reachable again"));
    let rt = runtime();
    let objects = rt.block_on(server.objects("fleet"));
    let keys: Vec<&str> = objects.iter().map(|(k, _)| k.as_str()).collect();
    for node in ["n1", "n2", "n3"] {
        let own = keys
            .iter()
            .filter(|k| k.contains(&format!("/node={node}/")))
            .count();
        assert!(own >= 3, "{node} wrote {own} objects: {keys:?}");
        assert!(
            keys.iter()
                .filter(|k| k.contains(&format!("/node={node}/")))
                .all(|k| k.contains(&format!("-{node}-"))),
            "the node is in the file name too"
        );
    }
    let locals: Vec<String> = nodes
        .iter()
        .zip(["n1", "n2", "n3"])
        .map(|(w, n)| format!("{n}={}", w.path("local").display()))
        .collect();
    let mut args = vec![
        server
            .bucket_dir("edge")
            .join("fleet")
            .display()
            .to_string(),
    ];
    args.extend(locals);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let read = python_json(READ_FLEET, &args);
    let (cloud, local) = (&read["cloud"], &read["local"]);
    assert!(
        local.as_array().unwrap().len() >= 3 * 6,
        "every node's windows: {local}"
    );
    assert_eq!(cloud, local, "the bucket is the union of the nodes' output");
    // the columns as documented: UTC microsecond times, and the partitions as columns
    let types = &read["types"];
    assert_eq!(types["window_start"], "TIMESTAMP WITH TIME ZONE");
    assert_eq!(types["machine"], "VARCHAR");
    for partition in ["pipeline", "node", "dt", "hour"] {
        assert!(types.get(partition).is_some(), "{partition}: {types}");
    }
}

/// A sink whose columns change never writes them into a partition that holds the old ones:
/// with the default layout the run is refused (exit 2, both column lists named); with
/// `{schema}` in `key_layout` each set of columns gets its own `schema=` partition, and DuckDB
/// reads both.
#[test]
fn a_changed_output_never_shares_a_partition_with_the_old_one() {
    let server = S3Server::start();
    let v1 = |extra: &str| {
        fleet_pipeline(&server.endpoint(), extra).replace("rate = '2000'", "rate = 'max'")
    };
    let v2 = |extra: &str| {
        v1(extra).replace(
            "avg(value) AS mean",
            "avg(value) AS mean, max(value) AS peak",
        )
    };
    let env = env(SECRET_KEY);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut w = WeirProcess::start(&v1(""), &env);
    assert!(
        w.wait_exit(Duration::from_secs(60)).success(),
        "{}",
        w.stderr()
    );
    std::fs::write(w.path("pipeline.sql"), v2("")).unwrap();
    w.respawn(&[], &env);
    let status = w.wait_exit(Duration::from_secs(60));
    let log = w.stderr();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(
        log.contains("changed since this node last wrote")
            && log.contains("mean Float64")
            && log.contains("peak Float64"),
        "{log}"
    );
    // versioned by schema: both sets of columns side by side
    let layout = ", key_layout = 'v/pipeline={pipeline}/schema={schema}/node={node}/dt={date}/part-{start}-{node}-{seq}.parquet'";
    let mut a = WeirProcess::start(&v1(layout), &env);
    assert!(
        a.wait_exit(Duration::from_secs(60)).success(),
        "{}",
        a.stderr()
    );
    std::fs::write(a.path("pipeline.sql"), v2(layout)).unwrap();
    a.respawn(&[], &env);
    assert!(
        a.wait_exit(Duration::from_secs(60)).success(),
        "{}",
        a.stderr()
    );
    let rt = runtime();
    let objects = rt.block_on(server.objects("fleet/v"));
    let mut versions: Vec<&str> = objects
        .iter()
        .map(|(k, _)| {
            k.split("/schema=")
                .nth(1)
                .unwrap()
                .split('/')
                .next()
                .unwrap()
        })
        .collect();
    versions.sort_unstable();
    versions.dedup();
    assert_eq!(versions.len(), 2, "{objects:?}");
    for (k, batches) in &objects {
        let peak = batches[0].schema().column_with_name("peak").is_some();
        let v2_files = objects
            .iter()
            .filter(|(o, _)| o.contains(k.split("/node=").next().unwrap()))
            .all(|(_, b)| b[0].schema().column_with_name("peak").is_some() == peak);
        assert!(v2_files, "one schema per partition: {k}");
    }
    let read = python_json(
        r#"
import duckdb, json, sys
r = duckdb.sql(f"SELECT schema, count(*) AS n, count(peak) AS peaks FROM read_parquet('{sys.argv[1]}/**/*.parquet', hive_partitioning = true, union_by_name = true) GROUP BY schema ORDER BY peaks").fetchall()
print(json.dumps([list(x) for x in r]))
"#,
        &[&server
            .bucket_dir("edge")
            .join("fleet/v")
            .display()
            .to_string()],
    );
    let groups = read.as_array().unwrap();
    assert_eq!(groups.len(), 2, "{read}");
    assert_eq!(groups[0][2], 0, "the first schema has no peak");
    assert_eq!(
        groups[1][1], groups[1][2],
        "every row of the second has one"
    );
}

/// Two nodes run `queries/bearing_health.sql` (each with its own faulty machine) into one
/// bucket; `queries/cloud/fleet_bearing_health.sql`, run by DuckDB over the bucket, ranks
/// each site's faulty machine first.
#[test]
fn the_fleet_query_ranks_each_sites_faulty_machine_first() {
    let server = S3Server::start();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let edge = std::fs::read_to_string(repo.join("queries/bearing_health.sql")).unwrap();
    let mut nodes = Vec::new();
    for (node, faulty) in [("site-a", "M2"), ("site-b", "M4")] {
        let pipeline = edge
            .replace("faults     = 'M2:bearing'", &format!("faults = '{faulty}:bearing'"))
            .replace("duration   = '3m'", "duration = '2m'")
            .replace(
                "CREATE SINK summaries WITH (connector = 'file', path = 'out/bearing_health', format = 'parquet');",
                &format!(
                    "CREATE SINK bearing WITH (connector = 'object_store', url = 's3://edge/fleet', endpoint = '{}',
                        region = 'us-east-1', access_key_id = '${{S3_KEY}}', secret_access_key = '${{S3_SECRET}}');",
                    server.endpoint()
                ),
            )
            .replace("INSERT INTO summaries", "INSERT INTO bearing");
        let mut env = env(SECRET_KEY);
        env.retain(|(k, _)| *k != "WEIR_NODE_ID");
        env.push(("WEIR_NODE_ID", node.to_string()));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        nodes.push(WeirProcess::start(&pipeline, &env));
    }
    for n in &mut nodes {
        assert!(
            n.wait_exit(Duration::from_secs(120)).success(),
            "{}",
            n.stderr()
        );
    }
    let query =
        std::fs::read_to_string(repo.join("queries/cloud/fleet_bearing_health.sql")).unwrap();
    let ranking = python_json(
        r#"
import duckdb, json, sys
con = duckdb.connect()
con.sql(f"SET VARIABLE summaries = '{sys.argv[1]}'")
con.sql("SET VARIABLE since = TIMESTAMP '2026-01-01 00:00:00'")
rows = con.sql(sys.argv[2]).fetchall()
print(json.dumps([[r[0], r[1], r[-1]] for r in rows]))
"#,
        &[
            &server
                .bucket_dir("edge")
                .join("fleet")
                .display()
                .to_string(),
            &query,
        ],
    );
    let first: Vec<(String, String)> = ranking
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r[2] == 1)
        .map(|r| (r[0].as_str().unwrap().into(), r[1].as_str().unwrap().into()))
        .collect();
    assert_eq!(
        first,
        vec![
            ("site-a".to_string(), "M2".to_string()),
            ("site-b".to_string(), "M4".to_string())
        ],
        "{ranking}"
    );
    assert_eq!(
        ranking.as_array().unwrap().len(),
        8,
        "4 machines per site: {ranking}"
    );
}

/// `weir check` warns about a layout without the node, and refuses one it cannot use.
#[test]
fn check_warns_about_layouts_that_could_collide() {
    let dir = tempfile::tempdir().unwrap();
    let write = |layout: &str| {
        std::fs::write(
            dir.path().join("p.sql"),
            format!(
                "CREATE SOURCE g (machine VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (connector = 'generator', limit = '1', event_time = 'ts');
                 CREATE SINK cloud WITH (connector = 'object_store', url = 's3://edge/x', key_layout = '{layout}');
                 INSERT INTO cloud SELECT * FROM g;"
            ),
        )
        .unwrap();
        std::process::Command::new(weir_process::weir_bin())
            .args(["check", "p.sql"])
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let out = write("dt={date}/part-{seq}.parquet");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("key_layout has no {node}") && err.contains("cloud"),
        "{err}"
    );
    let out = write("dt={date}/part-{when}-{seq}.parquet");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("p.sql:2:") && err.contains("unknown placeholder {when}"),
        "{err}"
    );
}
