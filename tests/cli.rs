//! End-to-end tests of the `weir` binary: CLI, located errors, the demo, file replay,
//! generator determinism and shutdown on SIGTERM.
#![allow(clippy::unwrap_used)] // a test (or bench) fails by panicking

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{AsArray, Float64Array, RecordBatch, StringArray, TimestampNanosecondArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit};
use datafusion::prelude::{ParquetReadOptions, SessionContext};

fn weir() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weir"))
}

fn run(args: &[&str], dir: &Path) -> Output {
    weir()
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run weir")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

async fn query(ctx: &SessionContext, sql: &str) -> RecordBatch {
    let b = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    arrow::compute::concat_batches(&b[0].schema(), &b).unwrap()
}

#[test]
fn help_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let v = run(&["--version"], dir.path());
    assert!(v.status.success());
    // the default build is the full one: every feature listed
    assert_eq!(
        text(&v.stdout).trim(),
        format!(
            "weir {} (features: mqtt, sparkplug, modbus, opcua, object_store, s3, gcs, azure, flight, page)",
            env!("CARGO_PKG_VERSION")
        )
    );
    let h = text(&run(&["--help"], dir.path()).stdout);
    for cmd in ["run", "check", "functions", "connectors", "--log-format"] {
        assert!(h.contains(cmd), "--help mentions {cmd}: {h}");
    }
    let h = text(&run(&["run", "--help"], dir.path()).stdout);
    assert!(
        h.contains("--open-windows") && h.contains("emit") && h.contains("discard"),
        "{h}"
    );
}

const BAD: &str = "CREATE SOURCE t (machine VARCHAR, ts TIMESTAMP, value DOUBLE)\n  WITH (connector = 'generator', event_time = 'ts', rate = 'max');\nCREATE SINK out WITH (connector = 'stdout', format = 'ndjson');\nINSERT INTO out SELECT machine, avg(valu) FROM TUMBLE(t, ts, INTERVAL '1' SECOND)\n  GROUP BY machine, window_start, window_end;\n";

#[test]
fn check_and_run_report_errors_with_file_line_column_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.sql"), BAD).unwrap();
    for cmd in ["check", "run"] {
        let out = run(&[cmd, "bad.sql"], dir.path());
        assert_eq!(out.status.code(), Some(2), "{cmd} exits 2");
        let err = text(&out.stderr);
        assert!(err.contains("bad.sql:4:37: "), "{cmd}: {err}");
        assert!(err.contains("valu"), "{cmd}: {err}");
        assert!(
            out.stdout.is_empty(),
            "{cmd} ran nothing: {}",
            text(&out.stdout)
        );
        assert!(!err.contains("source starting"), "{cmd} connected nothing");
    }
}

#[test]
fn check_explains_every_pipeline_of_several_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a_sources.sql"),
        "CREATE SOURCE t (machine VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (connector = 'generator', event_time = 'ts');\nCREATE SINK out WITH (connector = 'stdout');",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b_views.sql"),
        "CREATE VIEW m AS SELECT machine, window_start, window_end, max(value) AS hi FROM HOP(t, ts, INTERVAL '1' SECOND, INTERVAL '3' SECOND) GROUP BY machine, window_start, window_end;\nINSERT INTO out SELECT * FROM m WHERE hi > 1;",
    )
    .unwrap();
    let out = run(&["check", "--explain", "."], dir.path());
    let s = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        s.contains("view m") && s.contains("HOP slide 1s size 3s") && s.contains("Aggregate:"),
        "{s}"
    );
    assert!(
        s.contains("ok: 1 source(s), 1 sink(s), 2 pipeline(s)"),
        "{s}"
    );
}

#[tokio::test]
async fn demo_runs_and_produces_the_expected_windows() {
    let dir = tempfile::tempdir().unwrap();
    let demo = repo().join("queries/demo.sql");
    let out = run(&["run", demo.to_str().unwrap()], dir.path());
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    // The demo: 4 machines × 4 sensors every 10 ms for 30 s = 48,000 rows; the 1 s
    // vibration view covers 2 sensors (24,000 rows) in 30 windows plus the second before
    // the start that out-of-order rows fall into; the 10 s windows every 5 s: 8.
    assert!(err.contains("source telemetry: 48000 rows"), "{err}");
    assert!(err.contains("pipeline vibration_1s: 48000 rows in, 248 rows out, 31 windows emitted, 0 late rows dropped"), "{err}");
    assert!(
        err.contains("pipeline machine_10s: 48000 rows in, 32 rows out, 8 windows emitted"),
        "{err}"
    );
    assert!(
        text(&out.stdout).contains("peak/rms"),
        "the bearing fault on M3 is reported"
    );
    let ctx = SessionContext::new();
    let files = dir.path().join("out/demo");
    ctx.register_parquet("d", files.to_str().unwrap(), ParquetReadOptions::default())
        .await
        .unwrap();
    let r = query(&ctx, "SELECT count(DISTINCT window_start), sum(samples), count(*), count(DISTINCT machine) FROM d").await;
    let v = |i: usize| r.column(i).as_primitive::<Int64Type>().value(0);
    assert_eq!((v(0), v(1), v(2), v(3)), (31, 24_000, 248, 4));
}

fn replay_rows() -> RecordBatch {
    // 3 machines, one row every 100 ms for 6 s, values known in advance
    let n = 60;
    let machine: Vec<String> = (0..n).map(|i| format!("M{}", i % 3)).collect();
    let ts: Vec<i64> = (0..n)
        .map(|i| 1_767_225_600_000_000_000 + i as i64 * 100_000_000)
        .collect();
    let value: Vec<f64> = (0..n).map(|i| (i * 7 % 11) as f64).collect();
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("machine", DataType::Utf8, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("+00:00".into())),
                false,
            ),
            Field::new("value", DataType::Float64, false),
        ])),
        vec![
            Arc::new(StringArray::from(machine)),
            Arc::new(TimestampNanosecondArray::from(ts).with_timezone("+00:00")),
            Arc::new(Float64Array::from(value)),
        ],
    )
    .unwrap()
}

/// `rows` as `in.csv`, `in.ndjson` and `in.parquet` in `dir`.
fn write_inputs(dir: &Path, rows: &RecordBatch) {
    let mut w = arrow::csv::Writer::new(std::fs::File::create(dir.join("in.csv")).unwrap());
    w.write(rows).unwrap();
    let mut j = arrow::json::LineDelimitedWriter::new(
        std::fs::File::create(dir.join("in.ndjson")).unwrap(),
    );
    j.write(rows).unwrap();
    j.finish().unwrap();
    let mut p = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(dir.join("in.parquet")).unwrap(),
        rows.schema(),
        None,
    )
    .unwrap();
    p.write(rows).unwrap();
    p.close().unwrap();
}

#[tokio::test]
async fn file_source_replays_csv_ndjson_and_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let rows = replay_rows();
    write_inputs(dir.path(), &rows);
    // expected: per machine and second, count and sum, computed here
    let mut expected = std::collections::BTreeMap::new();
    for i in 0..rows.num_rows() {
        let m = rows.column(0).as_string::<i32>().value(i).to_string();
        let sec = i / 10;
        let e = expected.entry((m, sec)).or_insert((0i64, 0f64));
        e.0 += 1;
        e.1 += rows
            .column(2)
            .as_primitive::<arrow::datatypes::Float64Type>()
            .value(i);
    }
    for ext in ["csv", "ndjson", "parquet"] {
        let sql = format!(
            "CREATE SOURCE r (machine VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (connector = 'file', path = 'in.{ext}', event_time = 'ts', batch_rows = '7');\n\
             CREATE SINK out WITH (connector = 'file', path = 'out_{ext}', format = 'ndjson', roll_rows = '5');\n\
             INSERT INTO out SELECT machine, window_start, count(*) AS n, sum(value) AS total FROM TUMBLE(r, ts, INTERVAL '1' SECOND) GROUP BY machine, window_start, window_end;"
        );
        std::fs::write(dir.path().join(format!("{ext}.sql")), sql).unwrap();
        let out = run(&["run", &format!("{ext}.sql")], dir.path());
        assert!(out.status.success(), "{ext}: {}", text(&out.stderr));
        let mut got = std::collections::BTreeMap::new();
        let files: Vec<_> = std::fs::read_dir(dir.path().join(format!("out_{ext}")))
            .unwrap()
            .collect();
        assert!(
            files.len() >= 3,
            "{ext}: 18 result rows, a new file once 5 rows are written"
        );
        for f in files {
            for line in std::fs::read_to_string(f.unwrap().path()).unwrap().lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                let start = v["window_start"].as_str().unwrap().to_string();
                let sec: usize = start[17..19].parse().unwrap();
                got.insert(
                    (v["machine"].as_str().unwrap().to_string(), sec),
                    (v["n"].as_i64().unwrap(), v["total"].as_f64().unwrap()),
                );
            }
        }
        assert_eq!(got, expected, "{ext}");
    }
}

fn generator_sql(seed: u64, out: &str) -> String {
    format!(
        "CREATE SOURCE g (machine VARCHAR, sensor VARCHAR, ts TIMESTAMP, value DOUBLE, seq BIGINT) WITH (connector = 'generator', machines = '3', rate = 'max', limit = '5000', seed = '{seed}', start = '2026-01-01T00:00:00Z', faults = 'M2:overheat', disorder = '20ms', event_time = 'ts', watermark = '50ms');\n\
         CREATE SINK out WITH (connector = 'file', path = '{out}', format = 'ndjson');\n\
         INSERT INTO out SELECT * FROM g;"
    )
}

fn read_dir_text(dir: &Path) -> String {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|f| f.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect()
}

#[test]
fn generator_is_deterministic_for_a_seed() {
    let dir = tempfile::tempdir().unwrap();
    for (name, seed) in [("a", 1), ("b", 1), ("c", 2)] {
        std::fs::write(
            dir.path().join(format!("{name}.sql")),
            generator_sql(seed, name),
        )
        .unwrap();
        let out = run(&["run", &format!("{name}.sql")], dir.path());
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let (a, b, c) = (
        read_dir_text(&dir.path().join("a")),
        read_dir_text(&dir.path().join("b")),
        read_dir_text(&dir.path().join("c")),
    );
    assert_eq!(a.lines().count(), 5000);
    assert_eq!(a, b, "same seed, same rows");
    assert_ne!(a, c, "another seed, other values");
    // the overheating machine runs hotter than the others by the end
    let temps: Vec<(String, f64)> = a
        .lines()
        .rev()
        .take(300)
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["sensor"] == "temp")
        .map(|v| {
            (
                v["machine"].as_str().unwrap().to_string(),
                v["value"].as_f64().unwrap(),
            )
        })
        .collect();
    assert!(temps.iter().any(|(m, _)| m == "M2"));
}

fn sigterm_run(mode: &str) -> (Output, usize) {
    let dir = tempfile::tempdir().unwrap();
    // a long watermark: no window can close during the run, only at shutdown
    std::fs::write(
        dir.path().join("p.sql"),
        "CREATE SOURCE g (machine VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (connector = 'generator', machines = '2', sensors = 'temp', rate = '2000', event_time = 'ts', watermark = '1h');\n\
         CREATE SINK out WITH (connector = 'stdout', format = 'ndjson');\n\
         INSERT INTO out SELECT machine, window_start, count(*) AS n FROM TUMBLE(g, ts, INTERVAL '1' MINUTE) GROUP BY machine, window_start, window_end;",
    )
    .unwrap();
    let child = weir()
        .args(["run", "--open-windows", mode, "p.sql"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let n: usize = text(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["n"]
                .as_u64()
                .unwrap() as usize
        })
        .sum();
    (out, n)
}

#[test]
fn sigterm_stops_cleanly_and_handles_open_windows_as_configured() {
    let (out, emitted_rows) = sigterm_run("emit");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let rows_in: usize = err
        .lines()
        .find_map(|l| l.trim().strip_prefix("source g: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(rows_in > 500, "{err}");
    assert_eq!(
        emitted_rows, rows_in,
        "every row counted in the open windows emitted at shutdown"
    );
    let (out, emitted_rows) = sigterm_run("discard");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(emitted_rows, 0, "open windows dropped");
}

#[test]
fn file_source_replays_at_the_original_pace_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    // 60 rows over 5.9 s of event time, replayed 4 times faster: about 1.5 s
    let rows = replay_rows();
    let mut w = arrow::csv::Writer::new(std::fs::File::create(dir.path().join("in.csv")).unwrap());
    w.write(&rows).unwrap();
    drop(w);
    std::fs::write(
        dir.path().join("p.sql"),
        "CREATE SOURCE r (machine VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (connector = 'file', path = 'in.csv', event_time = 'ts', pace = 'original', speed = '4', batch_rows = '5');\n\
         CREATE SINK out WITH (connector = 'stdout', format = 'ndjson');\n\
         INSERT INTO out SELECT machine, value FROM r;",
    )
    .unwrap();
    let start = std::time::Instant::now();
    let out = run(&["run", "p.sql"], dir.path());
    let took = start.elapsed();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 60);
    assert!(
        took >= Duration::from_millis(1300),
        "paced by event time: took {took:?}"
    );
}

/// The README's section that starts with the heading line `heading`, up to the next heading
/// of the same or a higher level (lines in code blocks are not headings).
fn readme_section(readme: &str, heading: &str) -> String {
    let level = heading.chars().take_while(|c| *c == '#').count();
    let mut lines = readme.lines().skip_while(|l| *l != heading);
    assert!(
        lines.next().is_some(),
        "the README has no section {heading:?}"
    );
    let mut in_code = false;
    let mut out = Vec::new();
    for l in lines {
        if l.starts_with("```") {
            in_code = !in_code;
        }
        let hashes = l.chars().take_while(|c| *c == '#').count();
        if !in_code && hashes > 0 && hashes <= level && l[hashes..].starts_with(' ') {
            break;
        }
        out.push(l);
    }
    out.join("\n")
}

#[test]
fn readme_documents_every_metric_and_every_option_as_declared() {
    use weir_engine::connector::{SOURCE_OPTIONS, each_option};
    use weir_engine::observe::telemetry;
    use weir_engine::parse::options::markdown_table;
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let connectors = weir_connectors::all();
    let metrics = telemetry::markdown_table(&connectors.metrics());
    let endpoints = readme_section(&readme, "### HTTP endpoints");
    assert!(
        endpoints.contains(metrics.trim_end()),
        "the README's metric table differs from the declared metrics (`weir metrics` prints them):\n{metrics}"
    );
    let budget = readme_section(&readme, "### State budget");
    let view_options = markdown_table(weir_engine::exec::budget::VIEW_OPTIONS);
    assert!(budget.contains(view_options.trim_end()), "{view_options}");
    let engine = readme_section(&readme, "## Connectors");
    let common = markdown_table(SOURCE_OPTIONS);
    assert!(engine.contains(common.trim_end()), "{common}");
    let mut tables = 0;
    let sources = connectors.source_names().into_iter().map(|n| {
        let options = connectors.source(n).unwrap().options();
        ("source", "Source", n, options)
    });
    let sinks = connectors.sink_names().into_iter().map(|n| {
        let options = connectors.sink(n).unwrap().options();
        ("sink", "Sink", n, options)
    });
    let tables_ = connectors.table_names().into_iter().map(|n| {
        let options = connectors.table(n).unwrap().options();
        ("table", "Table", n, options)
    });
    let joins = readme_section(&readme, "## Joins and reference tables");
    let table_options = markdown_table(weir_engine::reference::TABLE_OPTIONS);
    assert!(joins.contains(table_options.trim_end()), "{table_options}");
    let fill = markdown_table([&weir_engine::reference::FILL_KEYS]);
    assert!(joins.contains(fill.trim_end()), "{fill}");
    for (kind, heading, name, options) in sources.chain(sinks).chain(tables_) {
        let want = markdown_table(each_option(options));
        let section = readme_section(&readme, &format!("### {heading} `{name}`"));
        assert!(
            section.contains(want.trim_end()),
            "the README's options of {kind} {name} differ from its declaration (`weir connectors --options {name} --markdown` prints it):\n{want}"
        );
        tables += 1;
    }
    assert_eq!(tables, 12);
    // the command prints the same declaration
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &["connectors", "--options", "mqtt", "--markdown"],
        dir.path(),
    );
    assert!(out.status.success());
    let printed = text(&out.stdout);
    let source = connectors.source("mqtt").unwrap();
    assert!(printed.contains(markdown_table(each_option(source.options())).trim_end()));
    assert!(printed.contains("sink `mqtt`"), "{printed}");
    let out = run(&["connectors", "--options", "modbus"], dir.path());
    let printed = text(&out.stdout);
    assert!(
        printed
            .lines()
            .any(|l| l.starts_with("interval") && l.contains("duration") && l.contains("1s")),
        "{printed}"
    );
    let out = run(&["connectors", "--options", "kafka"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no connector 'kafka'"));
    let out = run(&["metrics"], dir.path());
    assert_eq!(text(&out.stdout), metrics);
}

/// Result rows of a `file` sink directory: (machine, second of the window) → (count, sum).
fn window_totals(dir: &Path) -> std::collections::BTreeMap<(String, usize), (i64, f64)> {
    let mut got = std::collections::BTreeMap::new();
    for f in std::fs::read_dir(dir).unwrap() {
        for line in std::fs::read_to_string(f.unwrap().path()).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let start = v["window_start"].as_str().unwrap().to_string();
            let sec: usize = start[17..19].parse().unwrap();
            got.insert(
                (v["machine"].as_str().unwrap().to_string(), sec),
                (v["n"].as_i64().unwrap(), v["total"].as_f64().unwrap()),
            );
        }
    }
    got
}

#[test]
fn file_source_skips_bad_rows_and_keeps_every_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let rows = replay_rows();
    let machine = |i: usize| rows.column(0).as_string::<i32>().value(i).to_string();
    let value = |i: usize| {
        rows.column(2)
            .as_primitive::<arrow::datatypes::Float64Type>()
            .value(i)
    };
    let time = |i: usize| format!("2026-01-01T00:00:{:02}.{}Z", i / 10, i % 10);
    // good rows with a bad line after every seventh; bad lines of every kind
    let bad_json = [
        "{\"machine\": \"M0\", \"ts\": \"2026-01-01T00:00:01Z\", \"value\": NaN}",
        "{\"machine\": \"M1\", \"ts\": \"2026-01-01T00:00:02Z\", \"value\": \"hot\"}",
        "{\"machine\": \"M2\", \"ts\": \"3000-01-01T00:00:00Z\", \"value\": 1}",
        "{\"machine\": \"M0\", \"ts\": ",
        "[1, 2, 3",
    ];
    let bad_csv = [
        "M0,2026-01-01T00:00:01Z,1,surplus",
        "M1,2026-01-01T00:00:02Z,warm",
        "M2",
    ];
    let (mut ndjson, mut csv) = (String::new(), String::from("machine,ts,value\n"));
    let (mut bad_lines_json, mut bad_lines_csv) = (Vec::new(), Vec::new());
    let mut expected = std::collections::BTreeMap::new();
    for i in 0..rows.num_rows() {
        ndjson.push_str(&format!(
            "{{\"machine\": \"{}\", \"ts\": \"{}\", \"value\": {}}}\n",
            machine(i),
            time(i),
            value(i)
        ));
        csv.push_str(&format!("{},{},{}\n", machine(i), time(i), value(i)));
        let e = expected.entry((machine(i), i / 10)).or_insert((0i64, 0f64));
        e.0 += 1;
        e.1 += value(i);
        if i % 7 == 3 {
            let k = i / 7;
            ndjson.push_str(bad_json[k % bad_json.len()]);
            ndjson.push('\n');
            bad_lines_json.push(ndjson.lines().count());
            csv.push_str(bad_csv[k % bad_csv.len()]);
            csv.push('\n');
            bad_lines_csv.push(csv.lines().count());
        }
    }
    std::fs::write(dir.path().join("in.ndjson"), &ndjson).unwrap();
    std::fs::write(dir.path().join("in.csv"), &csv).unwrap();
    for (ext, bad_lines) in [("ndjson", &bad_lines_json), ("csv", &bad_lines_csv)] {
        let sql = format!(
            "CREATE SOURCE r (machine VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (connector = 'file', path = 'in.{ext}', event_time = 'ts', batch_rows = '16', dead_letter = 'dead_{ext}.ndjson');\n\
             CREATE SINK out WITH (connector = 'file', path = 'out_{ext}', format = 'ndjson');\n\
             INSERT INTO out SELECT machine, window_start, count(*) AS n, sum(value) AS total FROM TUMBLE(r, ts, INTERVAL '1' SECOND) GROUP BY machine, window_start, window_end;"
        );
        std::fs::write(dir.path().join(format!("{ext}.sql")), &sql).unwrap();
        let out = run(&["run", &format!("{ext}.sql")], dir.path());
        let err = text(&out.stderr);
        assert!(out.status.success(), "{ext}: {err}");
        assert_eq!(
            window_totals(&dir.path().join(format!("out_{ext}"))),
            expected,
            "{ext}"
        );
        assert!(
            err.contains(&format!(
                "source r: 60 rows, {} inputs skipped",
                bad_lines.len()
            )),
            "{ext}: {err}"
        );
        // the first bad line is logged with its file and line
        assert!(
            err.contains(&format!("in.{ext}:{}", bad_lines[0])),
            "{ext}: {err}"
        );
        let dead = std::fs::read_to_string(dir.path().join(format!("dead_{ext}.ndjson"))).unwrap();
        let contexts: Vec<String> = dead
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["context"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        let want: Vec<String> = bad_lines.iter().map(|l| format!("in.{ext}:{l}")).collect();
        assert_eq!(contexts, want, "{ext}");
        // strict: the first bad row fails the source, naming it
        let strict = sql.replace("batch_rows = '16'", "batch_rows = '16', max_bad_rows = '0'");
        std::fs::write(dir.path().join(format!("strict_{ext}.sql")), strict).unwrap();
        let out = run(&["run", &format!("strict_{ext}.sql")], dir.path());
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{ext}: {err}");
        assert!(
            err.contains(&format!("in.{ext}:{}", bad_lines[0])) && err.contains("max_bad_rows = 0"),
            "{ext}: {err}"
        );
    }
}

#[test]
fn deep_and_broken_pipeline_files_are_errors_not_aborts() {
    let dir = tempfile::tempdir().unwrap();
    let head = "CREATE SOURCE t (machine VARCHAR, ts TIMESTAMP, value DOUBLE)\n  WITH (connector = 'generator', event_time = 'ts');\nCREATE SINK out WITH (connector = 'stdout');\n";
    for terms in [3000, 6000] {
        let ors = vec!["value = 1"; terms].join(" OR ");
        std::fs::write(
            dir.path().join("deep.sql"),
            format!("{head}INSERT INTO out SELECT machine FROM t WHERE {ors};\n"),
        )
        .unwrap();
        let started = std::time::Instant::now();
        let out = run(&["check", "deep.sql"], dir.path());
        let took = started.elapsed();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{terms} terms: {err}");
        let at = "INSERT INTO out SELECT machine FROM t WHERE ".len() + 1;
        assert!(
            err.contains(&format!("deep.sql:4:{at}: expression nested too deeply")),
            "{err}"
        );
        assert!(took < Duration::from_secs(2), "{terms} terms took {took:?}");
    }
    // cut off inside WITH (: the end of the file, not 0:0
    std::fs::write(
        dir.path().join("cut.sql"),
        "CREATE SINK out WITH (\n  connector = 'stdout',\n",
    )
    .unwrap();
    let err = text(&run(&["check", "cut.sql"], dir.path()).stderr);
    assert!(
        err.starts_with("cut.sql:3:1: expected an option name, found end of statement"),
        "{err}"
    );
    // not UTF-8: where the bad byte is
    let mut bytes = b"CREATE SINK out WITH (connector = 'std".to_vec();
    bytes.extend([0xff, 0xfe]);
    bytes.extend(b"out');\n");
    std::fs::write(dir.path().join("latin.sql"), bytes).unwrap();
    let err = text(&run(&["check", "latin.sql"], dir.path()).stderr);
    assert!(
        err.starts_with(
            "latin.sql:1:39: the file is not UTF-8 text: invalid byte 0xff at byte offset 38"
        ),
        "{err}"
    );
    // a 1 MB identifier is reported at once
    let long = "x".repeat(1 << 20);
    std::fs::write(
        dir.path().join("long.sql"),
        format!("{head}INSERT INTO out SELECT {long} FROM t;\n"),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = run(&["check", "long.sql"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("long.sql:4:24: "),
        "{}",
        &err[..err.len().min(300)]
    );
    assert!(
        err.len() < 2000,
        "the message does not repeat the identifier whole"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// Peak resident memory (`VmHWM`) of process `pid` in KiB, if it is still running.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::test]
async fn key_flood_under_max_state_bytes_stays_bounded_and_loses_no_row() {
    // a new key every row (GROUP BY seq) in one hour-long window: 2 M keys without a budget
    // (about 440 MB of peak RSS for this debug build)
    let dir = tempfile::tempdir().unwrap();
    let rows = 2_000_000;
    std::fs::write(
        dir.path().join("flood.sql"),
        format!(
            "CREATE SOURCE g (machine VARCHAR, ts TIMESTAMP, value DOUBLE, seq BIGINT) WITH (connector = 'generator', machines = '1', sensors = 'temp', rate = 'max', interval = '1ms', limit = '{rows}', start = '2026-01-01T00:00:00Z', event_time = 'ts', watermark = '1s');\n\
             CREATE SINK out WITH (connector = 'file', path = 'out', format = 'parquet');\n\
             INSERT INTO out SELECT seq, window_start, count(*) AS n, window_partial() AS partial \
             FROM TUMBLE(g, ts, INTERVAL '1' HOUR) GROUP BY seq, window_start, window_end;"
        ),
    )
    .unwrap();
    let mut child = weir()
        .args(["run", "--max-state-bytes", "16MiB", "flood.sql"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut peak = 0;
    let status = loop {
        if let Some(kib) = peak_rss_kib(child.id()) {
            peak = peak.max(kib);
        }
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("windows emitted early (state budget reached)"),
        "{stderr}"
    );
    eprintln!("peak RSS of a 2 M key flood under --max-state-bytes 16MiB: {peak} KiB");
    assert!(
        peak < 200 * 1024,
        "peak RSS {peak} KiB: the state is not bounded"
    );
    let ctx = SessionContext::new();
    ctx.register_parquet(
        "out",
        dir.path().join("out").to_str().unwrap(),
        ParquetReadOptions::default(),
    )
    .await
    .unwrap();
    let got = query(
        &ctx,
        "SELECT sum(n) AS rows, count(DISTINCT seq) AS keys, count(*) AS out_rows, bool_and(partial) AS all_partial FROM out",
    )
    .await;
    assert_eq!(got.column(0).as_primitive::<Int64Type>().value(0), rows);
    assert_eq!(got.column(1).as_primitive::<Int64Type>().value(0), rows);
    assert_eq!(got.column(2).as_primitive::<Int64Type>().value(0), rows);
    assert!(
        got.column(3).as_boolean().value(0),
        "every row of the flushed window is partial"
    );
}

#[test]
fn file_source_reads_epoch_numbers_in_their_unit() {
    // the replay rows with their times as epoch milliseconds (BIGINT), in every format
    let dir = tempfile::tempdir().unwrap();
    let rows = replay_rows();
    let ms: Vec<i64> = rows
        .column(1)
        .as_primitive::<arrow::datatypes::TimestampNanosecondType>()
        .values()
        .iter()
        .map(|t| t / 1_000_000)
        .collect();
    let rows = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("machine", DataType::Utf8, false),
            Field::new("ts", DataType::Int64, false),
            Field::new("value", DataType::Float64, false),
        ])),
        vec![
            Arc::clone(rows.column(0)),
            Arc::new(arrow::array::Int64Array::from(ms)),
            Arc::clone(rows.column(2)),
        ],
    )
    .unwrap();
    write_inputs(dir.path(), &rows);
    let mut expected = std::collections::BTreeMap::new();
    for i in 0..rows.num_rows() {
        let e = expected
            .entry((format!("M{}", i % 3), i / 10))
            .or_insert((0i64, 0f64));
        e.0 += 1;
        e.1 += rows
            .column(2)
            .as_primitive::<arrow::datatypes::Float64Type>()
            .value(i);
    }
    let sql = |ext: &str, unit: &str| {
        format!(
            "CREATE SOURCE r (machine VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (connector = 'file', path = 'in.{ext}', event_time = 'ts'{unit});\n\
             CREATE SINK out WITH (connector = 'file', path = 'out_{ext}', format = 'ndjson');\n\
             INSERT INTO out SELECT machine, window_start, count(*) AS n, sum(value) AS total FROM TUMBLE(r, ts, INTERVAL '1' SECOND) GROUP BY machine, window_start, window_end;"
        )
    };
    for ext in ["csv", "ndjson", "parquet"] {
        // milliseconds are the default unit
        std::fs::write(dir.path().join(format!("{ext}.sql")), sql(ext, "")).unwrap();
        let out = run(&["run", &format!("{ext}.sql")], dir.path());
        assert!(out.status.success(), "{ext}: {}", text(&out.stderr));
        assert!(!text(&out.stderr).contains("before 1990"), "{ext}");
        let out_dir = dir.path().join(format!("out_{ext}"));
        let first = read_dir_text(&out_dir);
        assert!(
            first.contains("\"window_start\":\"2026-01-01T00:00:0"),
            "{ext}: {first}"
        );
        assert_eq!(window_totals(&out_dir), expected, "{ext}");
        std::fs::remove_dir_all(&out_dir).unwrap();
        // the wrong unit is not silent
        std::fs::write(
            dir.path().join(format!("{ext}.sql")),
            sql(ext, ", timestamp_unit = 'ns'"),
        )
        .unwrap();
        let out = run(&["run", &format!("{ext}.sql")], dir.path());
        assert!(out.status.success(), "{ext}: {}", text(&out.stderr));
        let log = text(&out.stderr);
        assert!(
            log.contains("event time before 1990 or after 2100") && log.contains("1970-01-01"),
            "{ext}: {log}"
        );
        assert_eq!(
            log.matches("event time before 1990").count(),
            1,
            "once per file: {log}"
        );
        std::fs::remove_dir_all(&out_dir).unwrap();
    }
}

#[test]
fn inserts_into_one_sink_have_distinct_names() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("two.sql"),
        "CREATE SOURCE g (machine VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (connector = 'generator', machines = '2', sensors = 'temp', rate = 'max', limit = '100', event_time = 'ts');\n\
         CREATE SINK console WITH (connector = 'stdout', format = 'ndjson');\n\
         INSERT INTO console SELECT machine, value FROM g WHERE machine = 'M1';\n\
         INSERT INTO console SELECT machine, value FROM g WHERE machine = 'M2';",
    )
    .unwrap();
    let out = run(&["run", "two.sql"], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = text(&out.stderr);
    assert!(
        log.contains("pipeline console: 100 rows in, 50 rows out"),
        "{log}"
    );
    assert!(
        log.contains("pipeline console_2: 100 rows in, 50 rows out"),
        "{log}"
    );
}

#[test]
fn the_generator_paces_rows_not_batches() {
    // 50 rows at 100 rows/s: half a second, although they fit one batch
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("paced.sql"),
        "CREATE SOURCE g (machine VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (connector = 'generator', machines = '1', sensors = 'temp', rate = '100', limit = '50', event_time = 'ts');\n\
         CREATE SINK out WITH (connector = 'stdout', format = 'ndjson');\n\
         INSERT INTO out SELECT * FROM g;",
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = run(&["run", "paced.sql"], dir.path());
    let took = started.elapsed();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 50);
    assert!(took >= Duration::from_millis(450), "{took:?}");
}
