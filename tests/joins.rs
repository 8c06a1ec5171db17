//! Joins with reference tables checked against DataFusion batch SQL over the same rows and
//! the same table file (read by DataFusion's own CSV reader), table reloads and their
//! atomicity, and the errors of joins that are not supported.
#![allow(clippy::unwrap_used)] // a test (or bench) fails by panicking

use std::path::Path;
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::datasource::MemTable;
use datafusion::prelude::{CsvReadOptions, SessionContext};
use weir_engine::exec::ids::PipelineId;
use weir_test_support::compare::{assert_rows_eq, rows_of};
use weir_test_support::harness::*;

const ASSETS: &str = "machine,class,rms_limit,site\n\
a,group1_rigid,2.8,north\n\
b,group2_rigid,4.5,north\n\
d,group2_flexible,7.1,south\n\
e,group1_flexible,4.5,north\n";

fn source_and_table(path: &Path) -> String {
    format!(
        "CREATE SOURCE s (k VARCHAR, ts TIMESTAMP, v DOUBLE) WITH (connector = 'test', event_time = 'ts', watermark = '2s');\n\
         CREATE SINK out WITH (connector = 'stdout');\n\
         CREATE TABLE assets (machine VARCHAR, class VARCHAR, rms_limit DOUBLE, site VARCHAR, PRIMARY KEY (machine))\n\
         WITH (connector = 'file', path = '{}', reload = '0s');\n",
        path.display()
    )
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Rows with keys a, b, c (c is in no table) every `step`, shuffled back a little.
fn rows(n: usize, rng: &mut Lcg) -> Vec<Row> {
    (0..n)
        .map(|i| Row {
            k: ["a", "b", "c"][rng.below(3) as usize].to_string(),
            ts: i as i64 * 20 * MS - rng.below(500) as i64 * MS,
            v: (rng.unit() * 100.0).round() / 10.0,
        })
        .collect()
}

/// DataFusion batch SQL over `t` (the rows) and `assets` (the CSV file, read by DataFusion).
async fn reference(rows: &[Row], assets: &Path, sql: &str) -> RecordBatch {
    let ctx = SessionContext::new();
    weir_udf::register(&ctx);
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), false),
        Field::new("v", DataType::Float64, false),
    ]));
    let t = MemTable::try_new(schema.clone(), vec![vec![batch(&schema, rows)]]).unwrap();
    ctx.register_table("t", Arc::new(t)).unwrap();
    ctx.register_csv("assets", assets.to_str().unwrap(), CsvReadOptions::new())
        .await
        .unwrap();
    let out = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    arrow::compute::concat_batches(&out[0].schema(), &out).unwrap()
}

/// Sink `k`'s rows equal `sql`'s over the same rows and table (DataFusion batch SQL); returns
/// them.
async fn sink_matches(
    h: &Harness,
    k: usize,
    rows: &[Row],
    assets: &Path,
    sql: &str,
) -> RecordBatch {
    let want = reference(rows, assets, sql).await;
    let got = h.sink(k).unwrap();
    assert_rows_eq(&rows_of(&got), &rows_of(&want));
    got
}

/// 3000 rows 10 ms apart, each of one of `keys` and one of `values`, drawn by `rng`.
fn drawn_rows(keys: &[&str], values: &[f64], rng: &mut Lcg) -> Vec<Row> {
    (0..3000)
        .map(|i| Row {
            k: keys[rng.below(keys.len() as u64) as usize].to_string(),
            ts: i * 10 * MS,
            v: values[rng.below(values.len() as u64) as usize],
        })
        .collect()
}

fn feed_all(h: &mut Harness, rows: &[Row], rng: &mut Lcg) {
    let schema = source_schema(h);
    for part in random_batches(rows, 200, rng) {
        h.feed(0, batch(&schema, &part));
    }
    h.end_all();
}

#[tokio::test]
async fn lookup_join_before_a_window_matches_batch_sql() {
    let dir = tempfile::tempdir().unwrap();
    let assets = write(dir.path(), "assets.csv", ASSETS);
    let sql = format!(
        "{}INSERT INTO out SELECT a.class, window_start, window_end, count(*) AS n, sum(v) AS total, \
         max(v - a.rms_limit) AS over_limit, iso10816_zone(rms(v), a.class) AS zone\n\
         FROM TUMBLE(s, ts, INTERVAL '5' SECOND) t JOIN assets a ON t.k = a.machine AND a.site = 'north'\n\
         GROUP BY a.class, window_start, window_end;",
        source_and_table(&assets)
    );
    let mut h = Harness::new(&sql).await;
    let mut rng = Lcg(11);
    let rows = rows(3000, &mut rng);
    feed_all(&mut h, &rows, &mut rng);
    let got = h.sink(0).unwrap();
    let want = reference(
        &rows,
        &assets,
        "SELECT a.class, date_bin(INTERVAL '5 seconds', ts) AS ws, date_bin(INTERVAL '5 seconds', ts) + INTERVAL '5 seconds' AS we, \
         count(*), sum(v), max(v - a.rms_limit), iso10816_zone(sqrt(avg(v * v)), a.class)\n\
         FROM t JOIN assets a ON t.k = a.machine AND a.site = 'north' GROUP BY 1, 2, 3",
    )
    .await;
    assert_rows_eq(&rows_of(&got), &rows_of(&want));
    assert!(got.num_rows() > 20);
    // rows of c (in no table) are counted as unmatched
    let c = rows.iter().filter(|r| r.k == "c").count() as u64;
    let counts = h.project.dataflow.pipeline_counts(PipelineId::new(0));
    assert_eq!(counts.join_unmatched_rows, c);
    assert!(h.project.explain[0].contains("INNER lookup join with table 'assets' on 1 key"));
}

#[tokio::test]
async fn table_first_and_left_join_after_a_window_match_batch_sql() {
    let dir = tempfile::tempdir().unwrap();
    let assets = write(dir.path(), "assets.csv", ASSETS);
    let sql = format!(
        "{}CREATE VIEW per_key AS SELECT k, window_start, window_end, avg(v) AS mean, count(*) AS n\n\
         FROM TUMBLE(s, ts, INTERVAL '2' SECOND) GROUP BY k, window_start, window_end;\n\
         INSERT INTO out SELECT v.k, v.window_end, v.mean, a.class, a.site, v.mean > a.rms_limit AS over\n\
         FROM per_key v LEFT JOIN assets a ON v.k = a.machine;\n\
         CREATE SINK out2 WITH (connector = 'stdout');\n\
         INSERT INTO out2 SELECT a.site, t.k, t.ts, t.v FROM assets a JOIN s t ON a.machine = t.k WHERE t.v > a.rms_limit;",
        source_and_table(&assets)
    );
    let mut h = Harness::new(&sql).await;
    let mut rng = Lcg(5);
    let rows = rows(2000, &mut rng);
    feed_all(&mut h, &rows, &mut rng);
    let want = reference(
        &rows,
        &assets,
        "SELECT v.k, v.we, v.mean, a.class, a.site, v.mean > a.rms_limit FROM \
         (SELECT k, date_bin(INTERVAL '2 seconds', ts) + INTERVAL '2 seconds' AS we, avg(v) AS mean FROM t GROUP BY 1, 2) v \
         LEFT JOIN assets a ON v.k = a.machine",
    )
    .await;
    let got = h.sink(0).unwrap();
    assert_rows_eq(&rows_of(&got), &rows_of(&want));
    // the windows of c are kept, with nulls
    assert!(
        rows_of(&got).iter().any(|r| r[0] == "c" && r[3] == "null"),
        "{:?}",
        rows_of(&got)
    );
    assert_eq!(
        h.project
            .dataflow
            .pipeline_counts(PipelineId::new(1))
            .join_unmatched_rows,
        0
    );
    let want = reference(
        &rows,
        &assets,
        "SELECT a.site, t.k, t.ts, t.v FROM assets a JOIN t ON a.machine = t.k WHERE t.v > a.rms_limit",
    )
    .await;
    assert_rows_eq(&rows_of(&h.sink(1).unwrap()), &rows_of(&want));
}

#[tokio::test]
async fn in_and_not_exists_subqueries_on_a_table_match_batch_sql() {
    let dir = tempfile::tempdir().unwrap();
    let assets = write(dir.path(), "assets.csv", ASSETS);
    let sql = format!(
        "{}INSERT INTO out SELECT k, ts, v FROM s WHERE k IN (SELECT machine FROM assets WHERE site = 'north') AND v > 5;\n\
         CREATE SINK out2 WITH (connector = 'stdout');\n\
         INSERT INTO out2 SELECT k, ts, v FROM s WHERE NOT EXISTS (SELECT 1 FROM assets WHERE assets.machine = s.k);",
        source_and_table(&assets)
    );
    let mut h = Harness::new(&sql).await;
    let mut rng = Lcg(9);
    let rows = rows(1000, &mut rng);
    feed_all(&mut h, &rows, &mut rng);
    let want = reference(
        &rows,
        &assets,
        "SELECT k, ts, v FROM t WHERE k IN (SELECT machine FROM assets WHERE site = 'north') AND v > 5",
    )
    .await;
    assert_rows_eq(&rows_of(&h.sink(0).unwrap()), &rows_of(&want));
    let want = reference(
        &rows,
        &assets,
        "SELECT k, ts, v FROM t WHERE NOT EXISTS (SELECT 1 FROM assets WHERE assets.machine = t.k)",
    )
    .await;
    let got = h.sink(1).unwrap();
    assert_rows_eq(&rows_of(&got), &rows_of(&want));
    assert!(got.num_rows() > 100);
}

#[tokio::test]
async fn every_format_loads_the_same_table() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write(dir.path(), "assets.csv", ASSETS);
    let ndjson = ASSETS
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            format!(
                r#"{{"machine": "{}", "class": "{}", "rms_limit": {}, "site": "{}"}}"#,
                f[0], f[1], f[2], f[3]
            )
        })
        .collect::<Vec<_>>();
    write(dir.path(), "assets.ndjson", &ndjson.join("\n"));
    // an array, pretty-printed over several lines per element
    let pretty = ndjson
        .iter()
        .map(|o| o.replace(", ", ",\n    "))
        .collect::<Vec<_>>()
        .join(",\n  ");
    write(dir.path(), "assets.json", &format!("[\n  {pretty}\n]\n"));
    // Parquet written by DataFusion from the CSV
    let ctx = SessionContext::new();
    ctx.register_csv("a", csv.to_str().unwrap(), CsvReadOptions::new())
        .await
        .unwrap();
    let parquet = dir.path().join("assets.parquet");
    ctx.sql("SELECT * FROM a")
        .await
        .unwrap()
        .write_parquet(parquet.to_str().unwrap(), Default::default(), None)
        .await
        .unwrap();
    let mut loaded = Vec::new();
    for ext in ["csv", "ndjson", "json", "parquet"] {
        let sql = format!(
            "CREATE SOURCE s (k VARCHAR, ts TIMESTAMP, v DOUBLE) WITH (connector = 'test');\n\
             CREATE SINK out WITH (connector = 'stdout');\n\
             CREATE TABLE assets (machine VARCHAR PRIMARY KEY, class VARCHAR, rms_limit DOUBLE, site VARCHAR)\n\
             WITH (connector = 'file', path = '{}');\n\
             INSERT INTO out SELECT * FROM s JOIN assets ON s.k = assets.machine;",
            dir.path().join(format!("assets.{ext}")).display()
        );
        let h = Harness::new(&sql).await;
        let t = &h.project.tables[0];
        assert_eq!(t.key(), &[0]);
        loaded.push(rows_of(&t.current().batch));
    }
    assert_eq!(loaded[0].len(), 4);
    for l in &loaded[1..] {
        assert_eq!(l, &loaded[0]);
    }
}

#[tokio::test]
async fn a_reload_swaps_the_whole_table_at_once_and_a_bad_one_keeps_the_old() {
    let dir = tempfile::tempdir().unwrap();
    let version = |class: &str| {
        format!(
            "machine,class,rms_limit,site\na,{class},1,north\nb,{class},1,north\nc,{class},1,north\n"
        )
    };
    let assets = write(dir.path(), "assets.csv", &version("v1"));
    let sql = format!(
        "{}INSERT INTO out SELECT t.k, t.ts, a.class FROM s t JOIN assets a ON t.k = a.machine;",
        source_and_table(&assets)
    );
    let mut h = Harness::new(&sql).await;
    let table = Arc::clone(&h.project.tables[0]);
    let schema = source_schema(&h);
    let mut rng = Lcg(3);
    let all = rows(20_000, &mut rng);
    // a thread writes new versions (by rename, as a ConfigMap swap does) and reloads them
    // while batches go through
    let writer = {
        let (dir, table) = (dir.path().to_path_buf(), Arc::clone(&table));
        std::thread::spawn(move || {
            for v in 2..=40 {
                let tmp = dir.join("next.csv");
                std::fs::write(&tmp, version(&format!("v{v}"))).unwrap();
                std::fs::rename(&tmp, dir.join("assets.csv")).unwrap();
                assert!(table.refresh().unwrap());
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        })
    };
    let mut before = 0;
    for part in all.chunks(50) {
        h.feed(0, batch(&schema, part));
        // every batch saw one version, whole
        for b in &h.out[0][before..] {
            let classes: std::collections::BTreeSet<&str> =
                b.column(2).as_string_view().iter().flatten().collect();
            assert_eq!(classes.len(), 1, "a batch saw two versions: {classes:?}");
        }
        before = h.out[0].len();
    }
    writer.join().unwrap();
    assert_eq!(table.current().number, 40);
    // rows after the last reload see the last version
    h.feed(0, batch(&schema, &all[..10]));
    let last = h.out[0].last().unwrap();
    assert!(
        last.column(2)
            .as_string_view()
            .iter()
            .all(|c| c == Some("v40"))
    );
    // a file with a bad row: the version in use stays, the error names file:line
    std::fs::write(
        &assets,
        "machine,class,rms_limit,site\na,x,1,north\nb,x,not a number,north\n",
    )
    .unwrap();
    let e = table.refresh().unwrap_err();
    assert!(e.contains(&format!("{}:3:", assets.display())), "{e}");
    assert_eq!(table.current().number, 40);
    assert_eq!(table.telemetry().counts().failed_loads, 1);
    // duplicate keys: refused, naming them
    std::fs::write(
        &assets,
        "machine,class,rms_limit,site\na,x,1,north\nb,x,1,north\na,y,2,south\n",
    )
    .unwrap();
    let e = table.refresh().unwrap_err();
    assert!(
        e.contains("1 duplicate primary key (machine): (a) in rows 1 and 3"),
        "{e}"
    );
    h.feed(0, batch(&schema, &all[..10]));
    let last = h.out[0].last().unwrap();
    assert!(
        last.column(2)
            .as_string_view()
            .iter()
            .all(|c| c == Some("v40"))
    );
}

/// The errors of `sql` (after the common declarations), as printed.
async fn join_errors(table_file: &Path, sql: &str) -> Vec<String> {
    errors(&format!("{}{sql}", source_and_table(table_file))).await
}

#[tokio::test]
async fn unsupported_joins_and_bad_tables_are_refused_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let assets = write(dir.path(), "assets.csv", ASSETS);
    // line 5 is the first line after the declarations
    for (sql, expected) in [
        (
            "CREATE SOURCE s2 (k VARCHAR, ts TIMESTAMP, v DOUBLE) WITH (connector = 'test');\n\
             INSERT INTO out SELECT * FROM s JOIN s2 ON s.k = s2.k;",
            "p.sql:6:31: joining two streams needs a time bound",
        ),
        (
            "INSERT INTO out SELECT * FROM s RIGHT JOIN assets a ON s.k = a.machine;",
            "p.sql:5:31: a RIGHT or LEFT JOIN that keeps table rows",
        ),
        (
            "INSERT INTO out SELECT * FROM s JOIN assets a ON s.v > a.rms_limit;",
            "needs an equality on its key",
        ),
    ] {
        let errors = join_errors(&assets, sql).await;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains(expected), "{errors:?}");
    }
    // a table `t` of `columns` read from `path`, with more options `extra`
    let table = |columns: &str, path: &Path, extra: &str| {
        format!(
            "CREATE TABLE t ({columns}) WITH (connector = 'file', path = '{}'{extra});",
            path.display()
        )
    };
    let first = |sql: String| async move { errors(&sql).await.remove(0) };
    let four = "machine VARCHAR, class VARCHAR, rms_limit DOUBLE, site VARCHAR";
    let cases = [
        (
            table("a VARCHAR, b INT, PRIMARY KEY (c)", &assets, ""),
            "p.sql:1:48: primary key column 'c' is not a column of table 't'".to_string(),
        ),
        (
            table("a VARCHAR", Path::new("/nonexistent/t.csv"), ""),
            "p.sql:1:14: table 't': cannot read /nonexistent/t.csv".to_string(),
        ),
        (
            table(
                "a VARCHAR PRIMARY KEY, b INT",
                &write(dir.path(), "dup.csv", "a,b\nx,1\ny,2\nx,3\n"),
                "",
            ),
            "1 duplicate primary key (a): (x) in rows 1 and 3".to_string(),
        ),
        (
            table(
                "a VARCHAR, b INT",
                &write(dir.path(), "header.csv", "b,a\n1,x\n"),
                "",
            ),
            "header.csv:1: the header names the columns (b, a)".to_string(),
        ),
        (
            table(four, &assets, ", max_rows = '3'"),
            "4 rows, more than max_rows = 3 of table 't'".to_string(),
        ),
        (
            table(four, &assets, ", max_bytes = '64'"),
            format!("{}: the file is", assets.display()),
        ),
        (
            table("a VARCHAR", Path::new("/dev/zero"), ", format = 'csv'"),
            "/dev/zero: not a regular file".to_string(),
        ),
    ];
    for (sql, want) in cases {
        let e = first(sql.clone()).await;
        assert!(e.contains(&want), "{sql}\n{e}");
    }
}

const TWO_STREAMS: &str = "CREATE SOURCE s (k VARCHAR, ts TIMESTAMP, v DOUBLE) WITH (connector = 'test', event_time = 'ts', watermark = '2s');\n\
CREATE SOURCE s2 (k VARCHAR, ts TIMESTAMP, v DOUBLE) WITH (connector = 'test', event_time = 'ts', watermark = '2s');\n\
CREATE SINK out WITH (connector = 'stdout');\n";

/// DataFusion batch SQL over `t` and `t2` holding `a` and `b`.
async fn two_tables(a: &[Row], b: &[Row], sql: &str) -> RecordBatch {
    let ctx = SessionContext::new();
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), false),
        Field::new("v", DataType::Float64, false),
    ]));
    for (name, rows) in [("t", a), ("t2", b)] {
        let t = MemTable::try_new(schema.clone(), vec![vec![batch(&schema, rows)]]).unwrap();
        ctx.register_table(name, Arc::new(t)).unwrap();
    }
    let out = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    arrow::compute::concat_batches(&out[0].schema(), &out).unwrap()
}

/// Feeds both streams in random interleaved batches; returns the largest join state seen.
fn feed_both(h: &mut Harness, a: &[Row], b: &[Row], rng: &mut Lcg, pipeline: usize) -> usize {
    let schema = source_schema(h);
    let (pa, pb) = (random_batches(a, 60, rng), random_batches(b, 60, rng));
    let (mut ia, mut ib) = (pa.into_iter(), pb.into_iter());
    let mut peak = 0;
    loop {
        let next = if rng.below(2) == 0 {
            ia.next()
                .map(|p| (0, p))
                .or_else(|| ib.next().map(|p| (1, p)))
        } else {
            ib.next()
                .map(|p| (1, p))
                .or_else(|| ia.next().map(|p| (0, p)))
        };
        let Some((s, part)) = next else { break };
        h.feed(s, batch(&schema, &part));
        peak = peak.max(h.project.dataflow.state_bytes(PipelineId::new(pipeline)));
    }
    h.end_all();
    peak
}

#[tokio::test]
async fn interval_join_matches_batch_sql_and_releases_its_state() {
    let sql = format!(
        "{TWO_STREAMS}INSERT INTO out SELECT a.k, a.ts, a.v, b.ts AS bts, b.v AS bv FROM s a JOIN s2 b \
         ON a.k = b.k AND b.ts BETWEEN a.ts - INTERVAL '1' SECOND AND a.ts + INTERVAL '500' MILLISECOND AND a.v < b.v;"
    );
    let mut h = Harness::new(&sql).await;
    assert!(
        h.project.explain[0]
            .contains("interval join of two streams on 1 key: right.ts - left.ts in [-1s, +500ms]"),
        "{}",
        h.project.explain[0]
    );
    let mut rng = Lcg(21);
    // 20 s of rows, shuffled back by up to 1.5 s (inside the 2 s watermark)
    let a = rows(1000, &mut rng);
    let b = rows(1000, &mut rng);
    feed_both(&mut h, &a, &b, &mut rng, 0);
    assert_eq!(h.late_rows(0), 0);
    let want = two_tables(
        &a,
        &b,
        "SELECT a.k, a.ts, a.v, b.ts, b.v FROM t a JOIN t2 b ON a.k = b.k \
         AND b.ts >= a.ts - INTERVAL '1 second' AND b.ts <= a.ts + INTERVAL '500 milliseconds' AND a.v < b.v",
    )
    .await;
    let got = h.sink(0).unwrap();
    assert_rows_eq(&rows_of(&got), &rows_of(&want));
    assert!(got.num_rows() > 1000, "{}", got.num_rows());
}

#[tokio::test]
async fn interval_join_state_is_bounded_and_late_rows_are_counted() {
    let sql = format!(
        "{TWO_STREAMS}INSERT INTO out SELECT a.k, a.ts, b.ts AS bts FROM s a JOIN s2 b \
         ON a.k = b.k AND a.ts BETWEEN b.ts - INTERVAL '1' SECOND AND b.ts + INTERVAL '1' SECOND;"
    );
    let mut h = Harness::new(&sql).await;
    let mut rng = Lcg(4);
    // 400 s of rows: the state must stay at what a few seconds hold
    let (a, b) = (rows(20_000, &mut rng), rows(20_000, &mut rng));
    let schema = source_schema(&h);
    let mut peak_early = 0;
    let mut peak = 0;
    for (i, (pa, pb)) in a.chunks(50).zip(b.chunks(50)).enumerate() {
        h.feed(0, batch(&schema, pa));
        h.feed(1, batch(&schema, pb));
        let bytes = h.project.dataflow.state_bytes(PipelineId::new(0));
        if i < 40 {
            peak_early = peak_early.max(bytes);
        }
        peak = peak.max(bytes);
    }
    assert!(peak_early > 0);
    assert!(
        peak < 2 * peak_early,
        "state grows with rows: {peak} bytes after 400 s vs {peak_early} in the first 40 s"
    );
    // a row behind the watermark is late: counted, joined with nothing
    let before = h.out[0].iter().map(|b| b.num_rows()).sum::<usize>();
    let old = &a[100..101];
    h.feed(0, batch(&schema, old));
    assert_eq!(h.late_rows(0), 1);
    assert_eq!(h.out[0].iter().map(|b| b.num_rows()).sum::<usize>(), before);
}

#[tokio::test]
async fn window_join_of_two_views_matches_batch_sql() {
    let sql = format!(
        "{TWO_STREAMS}CREATE VIEW va AS SELECT k, window_start, window_end, avg(v) AS mean FROM TUMBLE(s, ts, INTERVAL '2' SECOND) GROUP BY k, window_start, window_end;\n\
         CREATE VIEW vb AS SELECT k, window_start, window_end, max(v) AS peak, count(*) AS n FROM TUMBLE(s2, ts, INTERVAL '2' SECOND) GROUP BY k, window_start, window_end;\n\
         CREATE VIEW both_ AS SELECT a.k, a.window_end, a.mean, b.peak, b.n FROM va a JOIN vb b ON a.k = b.k AND a.window_end = b.window_end;\n\
         INSERT INTO out SELECT * FROM both_;\n\
         CREATE SINK out2 WITH (connector = 'stdout');\n\
         INSERT INTO out2 SELECT window_end, count(*) AS keys, max(peak) AS top FROM TUMBLE(both_, window_end, INTERVAL '10' SECOND) GROUP BY window_start, window_end;"
    );
    let mut h = Harness::new(&sql).await;
    assert!(
        h.project.explain[2].contains("right.window_end - left.window_end in [+0s, +0s]"),
        "{}",
        h.project.explain[2]
    );
    let mut rng = Lcg(8);
    let (a, b) = (rows(2000, &mut rng), rows(2000, &mut rng));
    feed_both(&mut h, &a, &b, &mut rng, 2);
    let per_key = "SELECT a.k, a.we, a.mean, b.peak, b.n FROM \
         (SELECT k, date_bin(INTERVAL '2 seconds', ts) + INTERVAL '2 seconds' AS we, avg(v) AS mean FROM t GROUP BY 1, 2) a JOIN \
         (SELECT k, date_bin(INTERVAL '2 seconds', ts) + INTERVAL '2 seconds' AS we, max(v) AS peak, count(*) AS n FROM t2 GROUP BY 1, 2) b \
         ON a.k = b.k AND a.we = b.we";
    let want = two_tables(&a, &b, per_key).await;
    assert_rows_eq(&rows_of(&h.sink(0).unwrap()), &rows_of(&want));
    // the joined view is a stream with a watermark: a window over it closes
    let rolled = two_tables(
        &a,
        &b,
        &format!(
            "SELECT date_bin(INTERVAL '10 seconds', we) + INTERVAL '10 seconds', count(*), max(peak) FROM ({per_key}) GROUP BY 1"
        ),
    )
    .await;
    assert_rows_eq(&rows_of(&h.sink(1).unwrap()), &rows_of(&rolled));
    assert_eq!(h.late_rows(2), 0);
}

#[tokio::test]
async fn stream_joins_without_a_time_bound_are_refused() {
    let cases = [
        (
            "INSERT INTO out SELECT * FROM s JOIN s2 ON s.k = s2.k;",
            "p.sql:4:31: joining two streams needs a time bound",
        ),
        (
            "INSERT INTO out SELECT * FROM s JOIN s2 ON s.k = s2.k AND s2.ts >= s.ts;",
            "p.sql:4:31: joining two streams needs a time bound",
        ),
        (
            "INSERT INTO out SELECT * FROM s LEFT JOIN s2 ON s.k = s2.k AND s2.ts BETWEEN s.ts AND s.ts + INTERVAL '1' SECOND;",
            "p.sql:4:31: only an inner join of two streams is supported",
        ),
        (
            "INSERT INTO out SELECT s.k, count(*) FROM s JOIN s2 ON s.k = s2.k AND s2.ts BETWEEN s.ts AND s.ts + INTERVAL '1' SECOND GROUP BY s.k;",
            "a join of two streams must be the whole query of a view or insert",
        ),
        (
            "INSERT INTO out SELECT * FROM s JOIN s2 ON s.k = s2.k AND s2.ts BETWEEN s.ts + INTERVAL '2' SECOND AND s.ts + INTERVAL '1' SECOND;",
            "the join's time bound is empty",
        ),
    ];
    for (sql, want) in cases {
        let e = errors(&format!("{TWO_STREAMS}{sql}")).await;
        assert!(e.len() == 1 && e[0].contains(want), "{sql}\n{e:?}");
    }
}

#[tokio::test]
async fn interval_join_state_survives_a_checkpoint() {
    let sql = format!(
        "{TWO_STREAMS}INSERT INTO out SELECT a.k, a.ts, b.ts AS bts, b.v FROM s a JOIN s2 b \
         ON a.k = b.k AND b.ts BETWEEN a.ts - INTERVAL '2' SECOND AND a.ts + INTERVAL '2' SECOND;"
    );
    let mut rng = Lcg(13);
    let (a, b) = (rows(600, &mut rng), rows(600, &mut rng));
    let mut before = Harness::new(&sql).await;
    let schema = source_schema(&before);
    for (pa, pb) in a[..300].chunks(40).zip(b[..300].chunks(40)) {
        before.feed(0, batch(&schema, pa));
        before.feed(1, batch(&schema, pb));
    }
    assert!(before.project.dataflow.state_bytes(PipelineId::new(0)) > 0);
    // a restart: the state goes through a checkpoint into a new dataflow
    let dir = tempfile::tempdir().unwrap();
    let mut after = Harness::new(&sql).await;
    let report = before.restore_into(&mut after, dir.path());
    assert_eq!(report.restored.len(), 1, "{report:?}");
    for (pa, pb) in a[300..].chunks(40).zip(b[300..].chunks(40)) {
        after.feed(0, batch(&schema, pa));
        after.feed(1, batch(&schema, pb));
    }
    after.end_all();
    let mut got = rows_of(&before.sink(0).unwrap());
    got.extend(rows_of(&after.sink(0).unwrap()));
    got.sort();
    let want = two_tables(
        &a,
        &b,
        "SELECT a.k, a.ts, b.ts, b.v FROM t a JOIN t2 b ON a.k = b.k \
         AND b.ts >= a.ts - INTERVAL '2 seconds' AND b.ts <= a.ts + INTERVAL '2 seconds'",
    )
    .await;
    assert_rows_eq(&got, &rows_of(&want));
}

/// Samples every 20 ms with unique times, shuffled back by up to 1.5 s.
fn samples(n: usize, rng: &mut Lcg) -> Vec<Row> {
    (0..n)
        .map(|i| Row {
            k: ["a", "b", "c"][rng.below(3) as usize].to_string(),
            ts: (i as i64 - rng.below(75) as i64) * 20 * MS + i as i64,
            v: (rng.unit() * 100.0).round() / 10.0,
        })
        .collect()
}

/// Setpoints of keys a and b (never c) changing about every 700 ms, each a little out of
/// order.
fn setpoints(until: i64, rng: &mut Lcg) -> Vec<Row> {
    let mut out = Vec::new();
    let mut t = 300 * MS;
    while t < until {
        let k = ["a", "b"][rng.below(2) as usize];
        out.push(Row {
            k: k.to_string(),
            ts: t,
            v: rng.below(50) as f64,
        });
        t += 700 * MS + rng.below(100) as i64 * MS;
    }
    // shuffle neighbours: out of order within the watermark
    for i in (1..out.len()).step_by(3) {
        out.swap(i - 1, i);
    }
    out
}

#[tokio::test]
async fn asof_join_attaches_the_setpoint_in_force_and_matches_batch_sql() {
    let sql = format!(
        "{TWO_STREAMS}INSERT INTO out SELECT v.k, v.ts, v.v, s.v AS setpoint, s.ts AS since \
         FROM s v ASOF JOIN s2 s MATCH_CONDITION (v.ts >= s.ts) ON v.k = s.k;"
    );
    let mut h = Harness::new(&sql).await;
    assert!(
        h.project.explain[0].contains("ASOF join of two streams on 1 key"),
        "{}",
        h.project.explain[0]
    );
    let mut rng = Lcg(31);
    let a = samples(1500, &mut rng);
    let b = setpoints(30 * SEC, &mut rng);
    feed_both(&mut h, &a, &b, &mut rng, 0);
    assert_eq!(h.late_rows(0), 0);
    // the latest setpoint at or before each sample, by batch SQL
    let want = two_tables(
        &a,
        &b,
        "SELECT v.k, v.ts, v.v, s.v, s.ts FROM t v \
         LEFT JOIN (SELECT v2.k, v2.ts AS vts, max(s2.ts) AS sts FROM t v2 JOIN t2 s2 ON v2.k = s2.k AND s2.ts <= v2.ts GROUP BY v2.k, v2.ts) m \
           ON m.k = v.k AND m.vts = v.ts \
         LEFT JOIN t2 s ON s.k = v.k AND s.ts = m.sts",
    )
    .await;
    let got = h.sink(0).unwrap();
    assert_rows_eq(&rows_of(&got), &rows_of(&want));
    assert_eq!(got.num_rows(), a.len());
    // key c never has a setpoint: nulls
    assert!(rows_of(&got).iter().any(|r| r[0] == "c" && r[3] == "null"));
}

#[tokio::test]
async fn asof_join_holds_rows_until_the_watermark_and_keeps_one_row_per_key() {
    let sql = format!(
        "{TWO_STREAMS}INSERT INTO out SELECT v.k, v.ts, s.v AS setpoint \
         FROM s v ASOF JOIN s2 s MATCH_CONDITION (v.ts > s.ts) ON v.k = s.k;"
    );
    let mut h = Harness::new(&sql).await;
    let schema = source_schema(&h);
    let row = |k: &str, ts: i64, v: f64| Row { k: k.into(), ts, v };
    // setpoint 1 at 1 s; a sample at 3 s waits: a setpoint up to 3 s may still come
    h.feed(1, batch(&schema, &[row("a", SEC, 1.0)]));
    h.feed(0, batch(&schema, &[row("a", 3 * SEC, 0.0)]));
    assert!(h.out[0].is_empty());
    // a later setpoint at 2.5 s (out of order, within the watermark) is the one in force
    h.feed(1, batch(&schema, &[row("a", 2500 * MS, 2.0)]));
    // the watermark passes 3 s on both streams (5.5 s - 2 s)
    h.feed(0, batch(&schema, &[row("a", 5500 * MS, 0.0)]));
    h.feed(1, batch(&schema, &[row("a", 5500 * MS, 3.0)]));
    let got = rows_of(&h.sink(0).unwrap());
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0][2], "2.000000000000", "{got:?}");
    // strict: a setpoint at the sample's own time does not count
    h.feed(1, batch(&schema, &[row("a", 6 * SEC, 4.0)]));
    h.feed(0, batch(&schema, &[row("a", 6 * SEC, 0.0)]));
    // many setpoints, one kept per key below the watermark
    for i in 0..500 {
        h.feed(
            1,
            batch(&schema, &[row("a", 7 * SEC + i * 10 * MS, i as f64)]),
        );
    }
    h.feed(0, batch(&schema, &[row("a", 20 * SEC, 0.0)]));
    h.feed(1, batch(&schema, &[row("b", 20 * SEC, 0.0)]));
    let bytes_after = h.project.dataflow.state_bytes(PipelineId::new(0));
    h.end_all();
    let got = rows_of(&h.sink(0).unwrap());
    let at6 = got.iter().find(|r| r[1].ends_with("00:00:06")).unwrap();
    assert_eq!(at6[2], "3.000000000000", "{got:?}");
    let at20 = got.iter().find(|r| r[1].ends_with("00:00:20")).unwrap();
    assert_eq!(at20[2], "499.000000000000", "{got:?}");
    assert!(bytes_after < 20_000, "{bytes_after} bytes kept");
}

#[tokio::test]
async fn gap_fill_emits_silent_keys_and_locf_carries_values_forward() {
    let dir = tempfile::tempdir().unwrap();
    // machine d is in the table but never reports; b stops after 4 s
    let assets = write(dir.path(), "assets.csv", ASSETS);
    let sql = format!(
        "{}CREATE VIEW per_key WITH (fill_keys = 'assets.machine') AS SELECT k, window_start, window_end, count(*) AS n, avg(v) AS mean \
         FROM TUMBLE(s, ts, INTERVAL '1' SECOND) GROUP BY k, window_start, window_end;\n\
         INSERT INTO out SELECT k, window_end, n, mean, locf(mean) OVER (PARTITION BY k ORDER BY window_end) AS last_mean FROM per_key;\n\
         CREATE SINK silent WITH (connector = 'stdout');\n\
         INSERT INTO silent SELECT k, window_end, sum(n) AS samples FROM HOP(per_key, window_end, INTERVAL '1' SECOND, INTERVAL '3' SECOND) \
         GROUP BY k, window_start, window_end HAVING sum(n) = 0;",
        source_and_table(&assets)
    );
    let mut h = Harness::new(&sql).await;
    assert!(
        h.project.explain[0]
            .contains("every window filled with the keys of table 'assets' column 'machine'")
    );
    let schema = source_schema(&h);
    let mut rng = Lcg(17);
    // rows of a and c every 100 ms for 10 s; b only for the first 4 s
    let mut rows = Vec::new();
    for i in 0..100 {
        for k in ["a", "b", "c"] {
            if k == "b" && i >= 40 {
                continue;
            }
            rows.push(Row {
                k: k.to_string(),
                ts: i * 100 * MS + rng.below(50) as i64 * MS,
                v: (rng.unit() * 100.0).round() / 10.0,
            });
        }
    }
    for part in rows.chunks(30) {
        h.feed(0, batch(&schema, part));
    }
    h.end_all();
    let got = rows_of(&h.sink(0).unwrap());
    // by hand: windows end at 1..=10 s; table keys a, b, d, e; stream keys a, b, c
    let window_ends = 1..=10;
    let count = |k: &str, end: i64| {
        rows.iter()
            .filter(|r| r.k == k && r.ts >= (end - 1) * SEC && r.ts < end * SEC)
            .count()
    };
    let mut want_rows = 0;
    for end in window_ends.clone() {
        for k in ["a", "b", "c", "d", "e"] {
            let n = count(k, end);
            let filled = n == 0 && ["a", "b", "d", "e"].contains(&k);
            if n > 0 || filled {
                want_rows += 1;
            }
            let row = got
                .iter()
                .find(|r| r[0] == k && r[1] == format!("1970-01-01T00:00:{end:02}"));
            match (n, filled) {
                (0, false) => assert!(row.is_none(), "{k} {end}: {row:?}"),
                (0, true) => {
                    let row = row.unwrap_or_else(|| panic!("{k} at {end} not filled: {got:?}"));
                    assert_eq!(row[2], "0");
                    assert_eq!(row[3], "null");
                }
                (n, _) => assert_eq!(row.unwrap()[2], n.to_string()),
            }
        }
    }
    assert_eq!(got.len(), want_rows, "{got:?}");
    // locf: b's last mean before it went silent, carried over its empty windows
    let b_mean = |end: i64| {
        let vs: Vec<f64> = rows
            .iter()
            .filter(|r| r.k == "b" && r.ts >= (end - 1) * SEC && r.ts < end * SEC)
            .map(|r| r.v)
            .collect();
        vs.iter().sum::<f64>() / vs.len() as f64
    };
    let last_b = (1..=10).rev().find(|e| count("b", *e) > 0).unwrap();
    for r in got.iter().filter(|r| r[0] == "b" && r[2] == "0") {
        let v: f64 = r[4].parse().unwrap();
        assert!((v - b_mean(last_b)).abs() < 1e-9, "{r:?}");
    }
    for r in got.iter().filter(|r| r[0] == "d") {
        assert_eq!(r[4], "null", "d never reported: nothing to carry");
    }
    // silent for 3 windows in a row: d and e all along, b from its fourth silent window on
    let silent = rows_of(&h.sink(1).unwrap());
    let keys: std::collections::BTreeSet<&str> = silent.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(keys, ["b", "d", "e"].into_iter().collect());
    assert!(silent.iter().all(|r| r[2] == "0"));
}

/// Rows of a every 100 ms for 30 s; b silent in the windows ending at 9-10 s (a 3 s gap
/// between known values, across a 10 s boundary) and 12-16 s (6 s).
fn gappy_rows() -> Vec<Row> {
    let mut rng = Lcg(23);
    let silent_b = |end: i64| (9..=10).contains(&end) || (12..=16).contains(&end);
    let mut rows = Vec::new();
    for i in 0..300 {
        let end = i / 10 + 1;
        for k in ["a", "b"] {
            if k == "b" && silent_b(end) {
                continue;
            }
            rows.push(Row {
                k: k.to_string(),
                ts: i * 100 * MS,
                v: (rng.unit() * 100.0).round() / 10.0,
            });
        }
    }
    rows
}

const INTERPOLATED: &str = "CREATE VIEW per_key WITH (fill_keys = 'assets.machine') AS SELECT k, window_start, window_end, count(*) AS n, avg(v) AS mean \
     FROM TUMBLE(s, ts, INTERVAL '1' SECOND) GROUP BY k, window_start, window_end;\n\
     CREATE VIEW filled AS SELECT k, window_end, n, mean, interpolate(mean, window_end, INTERVAL '3' SECOND) OVER (PARTITION BY k ORDER BY window_end) AS line FROM per_key;\n\
     INSERT INTO out SELECT * FROM filled;\n";

#[tokio::test]
async fn interpolate_fills_short_gaps_by_hand_and_holds_rows_without_making_them_late() {
    let dir = tempfile::tempdir().unwrap();
    let assets = write(dir.path(), "assets.csv", ASSETS);
    let sql = format!(
        "{}{INTERPOLATED}CREATE SINK out2 WITH (connector = 'stdout');\n\
         INSERT INTO out2 SELECT k, window_end, count(*) AS windows FROM TUMBLE(filled, window_end, INTERVAL '10' SECOND) GROUP BY k, window_start, window_end;",
        source_and_table(&assets)
    );
    let mut h = Harness::new(&sql).await;
    let schema = source_schema(&h);
    let rows = gappy_rows();
    // small batches: the watermark moves 100 ms at a time, windows close one by one
    for part in rows.chunks(2) {
        h.feed(0, batch(&schema, part));
    }
    h.end_all();
    let mean = |k: &str, end: i64| {
        let vs: Vec<f64> = rows
            .iter()
            .filter(|r| r.k == k && r.ts >= (end - 1) * SEC && r.ts < end * SEC)
            .map(|r| r.v)
            .collect();
        vs.iter().sum::<f64>() / vs.len() as f64
    };
    let got = rows_of(&h.sink(0).unwrap());
    let line = |k: &str, end: i64| -> String {
        let r = got
            .iter()
            .find(|r| r[0] == k && r[1] == format!("1970-01-01T00:00:{end:02}"))
            .unwrap_or_else(|| panic!("{k} {end} missing"));
        r[4].clone()
    };
    let close = |got: String, want: f64| {
        let g: f64 = got
            .parse()
            .unwrap_or_else(|_| panic!("{got} is not a number"));
        assert!((g - want).abs() < 1e-9, "{g} vs {want}");
    };
    // known values pass through; the 3 s gap lies on the line between 8 s and 11 s
    close(line("b", 8), mean("b", 8));
    close(
        line("b", 9),
        mean("b", 8) + (mean("b", 11) - mean("b", 8)) / 3.0,
    );
    close(
        line("b", 10),
        mean("b", 8) + 2.0 * (mean("b", 11) - mean("b", 8)) / 3.0,
    );
    // the 6 s gap (11 s to 17 s) is wider than max_gap: null
    for end in 12..=16 {
        assert_eq!(line("b", end), "null", "b {end}");
    }
    // d never reported: nothing to draw a line from
    assert_eq!(line("d", 10), "null");
    // every (key, window) once: a and b 30 windows, d and e 30 filled ones
    assert_eq!(got.len(), 4 * 30, "{got:?}");
    // held rows are not late for the 10 s windows over the interpolated view (b's row of
    // 9 s leaves when 11 s closes, after the window [0, 10) would have closed)
    assert_eq!(h.late_rows(3), 0);
    // window ends 1..=30 s fall into [0, 10) (9 of them), [10, 20), [20, 30) and [30, 40)
    let tens = rows_of(&h.sink(1).unwrap());
    for k in ["a", "b", "d", "e"] {
        let counts: Vec<&str> = tens
            .iter()
            .filter(|r| r[0] == k)
            .map(|r| r[2].as_str())
            .collect();
        assert_eq!(counts, ["9", "10", "10", "1"], "{k}: {tens:?}");
    }
}

#[tokio::test]
async fn interpolate_state_survives_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let assets = write(dir.path(), "assets.csv", ASSETS);
    let sql = format!("{}{INTERPOLATED}", source_and_table(&assets));
    let rows = gappy_rows();
    let run = |h: &mut Harness, part: &[Row]| {
        let schema = source_schema(h);
        for b in part.chunks(2) {
            h.feed(0, batch(&schema, b));
        }
    };
    let mut whole = Harness::new(&sql).await;
    run(&mut whole, &rows);
    whole.end_all();
    // cut inside b's first gap: the watermark is at 10.5 s, b's rows of 9 s and 10 s are held
    // (its last value is of 8 s)
    let cut = rows.iter().position(|r| r.ts >= 12_500 * MS).unwrap();
    let mut before = Harness::new(&sql).await;
    run(&mut before, &rows[..cut]);
    let held = |h: &Harness| {
        h.sink(0)
            .map(|b| rows_of(&b))
            .unwrap_or_default()
            .iter()
            .any(|r| r[0] == "b" && r[1].ends_with("00:00:09"))
    };
    assert!(!held(&before), "b's row of 9 s is held at the cut");
    let state = tempfile::tempdir().unwrap();
    let mut after = Harness::new(&sql).await;
    let report = before.restore_into(&mut after, state.path());
    assert!(report.failed.is_empty(), "{report:?}");
    run(&mut after, &rows[cut..]);
    after.end_all();
    let mut got = before.sink(0).map(|b| rows_of(&b)).unwrap_or_default();
    got.extend(rows_of(&after.sink(0).unwrap()));
    got.sort();
    let want = rows_of(&whole.sink(0).unwrap());
    assert_rows_eq(&got, &want);
    // the 9 s row of b left after the restart, on the line
    assert!(
        after
            .sink(0)
            .map(|b| rows_of(&b))
            .unwrap()
            .iter()
            .any(|r| r[0] == "b" && r[1].ends_with("00:00:09") && r[4] != "null")
    );
}

#[tokio::test]
async fn a_configmap_style_symlink_swap_is_seen() {
    use std::os::unix::fs::symlink;
    // what the kubelet does: the file is a link into `..data`, itself a link to a timestamped
    // directory; an update writes a new directory and renames a new `..data` link over the old
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let version = |name: &str, class: &str| {
        std::fs::create_dir(d.join(name)).unwrap();
        std::fs::write(
            d.join(name).join("assets.csv"),
            format!("machine,class,rms_limit,site\na,{class},1,north\n"),
        )
        .unwrap();
    };
    version("..2026_12_07_1", "first");
    symlink("..2026_12_07_1", d.join("..data")).unwrap();
    symlink("..data/assets.csv", d.join("assets.csv")).unwrap();
    let sql = format!(
        "{}INSERT INTO out SELECT t.k, a.class FROM s t JOIN assets a ON t.k = a.machine;",
        source_and_table(&d.join("assets.csv"))
    );
    let h = Harness::new(&sql).await;
    let table = Arc::clone(&h.project.tables[0]);
    let class = || rows_of(&table.current().batch)[0][1].clone();
    assert_eq!(class(), "first");
    assert!(!table.refresh().unwrap(), "nothing changed");
    version("..2026_12_07_2", "second");
    symlink("..2026_12_07_2", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    assert!(table.refresh().unwrap());
    assert_eq!(class(), "second");
    assert_eq!(table.current().number, 2);
}

#[tokio::test]
async fn a_lookup_on_two_keys_of_different_types_matches_batch_sql() {
    let dir = tempfile::tempdir().unwrap();
    let assets = write(dir.path(), "assets.csv", ASSETS);
    let sql = format!(
        "{}INSERT INTO out SELECT t.k, t.ts, t.v, a.class FROM s t JOIN assets a ON t.k = a.machine AND t.v = a.rms_limit;",
        source_and_table(&assets)
    );
    let mut h = Harness::new(&sql).await;
    let mut rng = Lcg(41);
    // values 2.8, 4.5 and 7.1 (the limits) come up often
    let rows = drawn_rows(&["a", "b", "c", "d"], &[2.8, 4.5, 7.1, 1.0], &mut rng);
    feed_all(&mut h, &rows, &mut rng);
    let got = sink_matches(
        &h,
        0,
        &rows,
        &assets,
        "SELECT t.k, t.ts, t.v, a.class FROM t JOIN assets a ON t.k = a.machine AND t.v = a.rms_limit",
    )
    .await;
    assert!(got.num_rows() > 200, "{}", got.num_rows());
}

#[tokio::test]
async fn lookups_on_a_key_several_table_rows_share_match_batch_sql() {
    let dir = tempfile::tempdir().unwrap();
    let assets = write(dir.path(), "assets.csv", ASSETS);
    // rms_limit 4.5 is b's and e's, site 'north' three machines': a row meets several
    let sql = format!(
        "{}INSERT INTO out SELECT t.k, t.ts, t.v, a.machine FROM s t JOIN assets a ON t.v = a.rms_limit;\n\
         CREATE SINK out2 WITH (connector = 'stdout');\n\
         INSERT INTO out2 SELECT t.k, t.ts, a.machine, a.class FROM s t LEFT JOIN assets a ON t.k = a.site;",
        source_and_table(&assets)
    );
    let mut h = Harness::new(&sql).await;
    let mut rng = Lcg(43);
    let rows = drawn_rows(&["north", "south", "west"], &[2.8, 4.5, 7.1, 1.0], &mut rng);
    feed_all(&mut h, &rows, &mut rng);
    let got = sink_matches(
        &h,
        0,
        &rows,
        &assets,
        "SELECT t.k, t.ts, t.v, a.machine FROM t JOIN assets a ON t.v = a.rms_limit",
    )
    .await;
    assert!(got.num_rows() > rows.len() / 2, "{}", got.num_rows());
    let got = sink_matches(
        &h,
        1,
        &rows,
        &assets,
        "SELECT t.k, t.ts, a.machine, a.class FROM t LEFT JOIN assets a ON t.k = a.site",
    )
    .await;
    assert!(got.num_rows() > rows.len(), "{}", got.num_rows());
}
