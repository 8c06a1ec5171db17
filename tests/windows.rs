//! Window results checked against an independent computation: DataFusion batch SQL over the
//! same rows (with windows computed by `date_bin` or expanded by the test), or values
//! computed by hand.
#![allow(clippy::unwrap_used)] // a test (or bench) fails by panicking

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Field, Float64Type, Int64Type, Schema, TimeUnit, TimestampNanosecondType,
};
use arrow::util::display::array_value_to_string;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use weir_engine::exec::ids::PipelineId;
use weir_test_support::compare::{assert_rows_eq, rows_of};
use weir_test_support::harness::*;

const SRC: &str = "CREATE SOURCE s (k VARCHAR, ts TIMESTAMP, v DOUBLE) WITH (connector = 'test', event_time = 'ts', watermark = '2s');\nCREATE SINK out WITH (connector = 'stdout');\n";

/// Runs `sql` in DataFusion's batch engine over a table `t` holding `rows` (plus `extra`
/// columns computed by the test, e.g. window starts).
async fn batch_sql(rows: &[Row], ws: Option<&[i64]>, sql: &str) -> RecordBatch {
    let mut fields = vec![
        Field::new("k", DataType::Utf8, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), false),
        Field::new("v", DataType::Float64, false),
    ];
    let schema = Arc::new(Schema::new(fields.clone()));
    let mut b = batch(&schema, rows);
    if let Some(ws) = ws {
        fields.push(Field::new(
            "ws",
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            false,
        ));
        let mut cols = b.columns().to_vec();
        cols.push(Arc::new(arrow::array::TimestampNanosecondArray::from(
            ws.to_vec(),
        )));
        b = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
    }
    let ctx = SessionContext::new();
    let t = MemTable::try_new(b.schema(), vec![vec![b]]).unwrap();
    ctx.register_table("t", Arc::new(t)).unwrap();
    let out = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    arrow::compute::concat_batches(&out[0].schema(), &out).unwrap()
}

/// Rows with keys `a`, `b`, `c` every `step`, shuffled back by up to `jitter`.
fn disordered_rows(n: usize, step: i64, jitter: i64, rng: &mut Lcg) -> Vec<Row> {
    (0..n)
        .map(|i| Row {
            k: ["a", "b", "c"][rng.below(3) as usize].to_string(),
            ts: i as i64 * step - rng.below(jitter as u64 + 1) as i64,
            v: (rng.unit() * 100.0).round() / 10.0,
        })
        .collect()
}

fn ts_col(b: &RecordBatch, name: &str) -> Vec<i64> {
    b.column(b.schema().index_of(name).unwrap())
        .as_primitive::<TimestampNanosecondType>()
        .values()
        .to_vec()
}

/// Batch SQL's 5-second tumbling windows over `rows`: count, sum, min, max, stddev, avg.
async fn tumble_reference(rows: &[Row]) -> RecordBatch {
    batch_sql(
        rows,
        None,
        "SELECT k, date_bin(INTERVAL '5 seconds', ts) AS ws, date_bin(INTERVAL '5 seconds', ts) + INTERVAL '5 seconds' AS we, \
         count(*), sum(v), min(v), max(v), stddev(v), avg(v) FROM t GROUP BY 1, 2, 3",
    )
    .await
}

/// Batch SQL's hopping windows (6 s every 2 s) over `rows` expanded by hand: each row belongs
/// to the 3 windows [s, s+6) with s a multiple of 2 and s <= ts < s + 6.
async fn hop_reference(rows: &[Row]) -> RecordBatch {
    let mut expanded = Vec::new();
    let mut starts = Vec::new();
    for r in rows {
        let last = r.ts.div_euclid(2 * SEC) * 2 * SEC;
        for j in 0..3 {
            expanded.push(r.clone());
            starts.push(last - j * 2 * SEC);
        }
    }
    batch_sql(
        &expanded,
        Some(&starts),
        "SELECT k, ws, ws + INTERVAL '6 seconds', count(*), sum(v), max(v), avg(v) FROM t GROUP BY k, ws",
    )
    .await
}

/// Batch SQL's `ewma` and `zscore` over the 1-second averages of `rows` per key.
async fn running_reference(rows: &[Row]) -> RecordBatch {
    batch_sql_with_udfs(
        rows,
        &vec![0; rows.len()],
        "SELECT k, we, m, ewma(m, 0.3) OVER (PARTITION BY k ORDER BY we), zscore(m, 5) OVER (PARTITION BY k ORDER BY we) \
         FROM (SELECT k, date_bin(INTERVAL '1 second', ts) + INTERVAL '1 second' AS we, avg(v) AS m FROM t GROUP BY k, we)",
    )
    .await
}

#[tokio::test]
async fn tumble_matches_batch_sql_with_disorder_and_batch_boundaries() {
    let sql = format!(
        "{SRC}INSERT INTO out SELECT k, window_start, window_end, count(*) AS n, sum(v) AS total, \
         min(v) AS lo, max(v) AS hi, stddev(v) AS sd, avg(v) AS mean \
         FROM TUMBLE(s, ts, INTERVAL '5' SECOND) GROUP BY k, window_start, window_end;"
    );
    let mut h = Harness::new(&sql).await;
    let schema = source_schema(&h);
    let mut rng = Lcg(7);
    let rows = disordered_rows(3000, 20 * MS, 1500 * MS, &mut rng);
    let mut max_ts = i64::MIN;
    let mut seen = HashSet::new();
    for part in random_batches(&rows, 300, &mut rng) {
        max_ts = max_ts.max(part.iter().map(|r| r.ts).max().unwrap());
        let before = h.out[0].len();
        h.feed(0, batch(&schema, &part));
        // emitted only once the watermark (max event time - 2 s) passed the window end
        for b in &h.out[0][before..] {
            for (end, r) in ts_col(b, "window_end").iter().zip(0..) {
                assert!(
                    *end <= max_ts - 2 * SEC,
                    "window ending {end} emitted early"
                );
                let key = (rows_of(&b.slice(r, 1))[0][0].clone(), *end);
                assert!(seen.insert(key), "window emitted twice");
            }
        }
    }
    h.end_all();
    assert_eq!(h.late_rows(0), 0);
    let got = h.sink(0).unwrap();
    let want = tumble_reference(&rows).await;
    assert_rows_eq(&rows_of(&got), &rows_of(&want));
    assert!(got.num_rows() > 30);
}

#[tokio::test]
async fn late_rows_are_counted_and_dropped() {
    let sql = format!(
        "{SRC}INSERT INTO out SELECT k, window_start, count(*) AS n, sum(v) AS total \
         FROM TUMBLE(s, ts, INTERVAL '5' SECOND) GROUP BY k, window_start, window_end;"
    );
    let mut h = Harness::new(&sql).await;
    let schema = source_schema(&h);
    let r = |ts: i64, v: f64| Row {
        k: "a".into(),
        ts,
        v,
    };
    // watermark 6 - 2 = 4 s: [0,5) still open
    assert_eq!(
        h.feed(
            0,
            batch(&schema, &[r(500 * MS, 1.0), r(SEC, 2.0), r(6 * SEC, 4.0)])
        ),
        0
    );
    // watermark 8 - 2 = 6 s: [0,5) closes with 2 rows
    assert_eq!(h.feed(0, batch(&schema, &[r(8 * SEC, 8.0)])), 1);
    // 2 s is behind a closed window: late; 5.5 s is inside the open [5,10)
    h.feed(0, batch(&schema, &[r(2 * SEC, 100.0), r(5500 * MS, 16.0)]));
    h.end_all();
    assert_eq!(h.late_rows(0), 1);
    let got = rows_of(&h.sink(0).unwrap());
    assert_eq!(
        got,
        vec![
            vec![
                "a".to_string(),
                "1970-01-01T00:00:00".into(),
                "2".into(),
                "3.000000000000".into()
            ],
            vec![
                "a".to_string(),
                "1970-01-01T00:00:05".into(),
                "3".into(),
                "28.000000000000".into()
            ],
        ]
    );
}

#[tokio::test]
async fn hop_matches_expanded_batch_sql() {
    let sql = format!(
        "{SRC}INSERT INTO out SELECT k, window_start, window_end, count(*) AS n, sum(v) AS total, max(v) AS hi, avg(v) AS mean \
         FROM HOP(s, ts, INTERVAL '2' SECOND, INTERVAL '6' SECOND) GROUP BY k, window_start, window_end;"
    );
    let mut h = Harness::new(&sql).await;
    let schema = source_schema(&h);
    let mut rng = Lcg(11);
    let rows = disordered_rows(2000, 15 * MS, 1800 * MS, &mut rng);
    for part in random_batches(&rows, 250, &mut rng) {
        h.feed(0, batch(&schema, &part));
    }
    h.end_all();
    assert_eq!(h.late_rows(0), 0);
    let want = hop_reference(&rows).await;
    assert_rows_eq(&rows_of(&h.sink(0).unwrap()), &rows_of(&want));
}

/// Sessions by hand: per key, sorted times split where the gap reaches `gap`.
fn reference_sessions(rows: &[Row], gap: i64) -> Vec<Vec<String>> {
    let mut by_key: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    for r in rows {
        by_key.entry(&r.k).or_default().push(r);
    }
    let mut out = Vec::new();
    let fmt = |t: i64| {
        let a = arrow::array::TimestampNanosecondArray::from(vec![t]);
        array_value_to_string(&a, 0).unwrap()
    };
    for (k, mut rs) in by_key {
        rs.sort_by_key(|r| r.ts);
        let mut start = 0;
        for i in 1..=rs.len() {
            if i == rs.len() || rs[i].ts - rs[i - 1].ts >= gap {
                let part = &rs[start..i];
                let sum: f64 = part.iter().map(|r| r.v).sum();
                out.push(vec![
                    k.to_string(),
                    fmt(part[0].ts),
                    fmt(part[part.len() - 1].ts + gap),
                    part.len().to_string(),
                    format!("{sum:.12}"),
                ]);
                start = i;
            }
        }
    }
    out.sort();
    out
}

const SESSION_SQL: &str = "INSERT INTO out SELECT k, window_start, window_end, count(*) AS n, sum(v) AS total \
     FROM SESSION(s, ts, INTERVAL '3' SECOND) GROUP BY k, window_start, window_end;";

#[tokio::test]
async fn session_windows_merge_when_a_row_bridges_them() {
    let mut h = Harness::new(&format!("{SRC}{SESSION_SQL}")).await;
    let schema = source_schema(&h);
    let r = |k: &str, s: f64| Row {
        k: k.into(),
        ts: (s * 1e9) as i64,
        v: s,
    };
    let mut all = vec![];
    let mut feed = |h: &mut Harness, rows: Vec<Row>, keep: bool| {
        if keep {
            all.extend(rows.clone());
        }
        h.feed(0, batch(&schema, &rows))
    };
    feed(
        &mut h,
        vec![r("a", 0.0), r("a", 1.0), r("a", 2.0), r("b", 1.0)],
        true,
    );
    // a: 6 starts a second session (6 - 2 >= 3); the watermark 6 - 2 = 4 closes b's
    // session [1, 4) but not a's [0, 5)
    assert_eq!(feed(&mut h, vec![r("a", 6.0)], true), 1, "b [1,4) closed");
    // 4 arrives (4 + 3 > 4: not late) and bridges a's two sessions into one
    assert_eq!(feed(&mut h, vec![r("a", 4.0), r("a", 7.0)], true), 0);
    // watermark 18 closes a's merged session [0, 10)
    assert_eq!(feed(&mut h, vec![r("b", 20.0)], true), 1, "a [0,10) closed");
    // b at 2 s would only open a session ending at 5 <= watermark 18: late
    feed(&mut h, vec![r("b", 2.0)], false);
    h.end_all();
    assert_eq!(h.late_rows(0), 1);
    let got = rows_of(&h.sink(0).unwrap());
    assert_rows_eq(&got, &reference_sessions(&all, 3 * SEC));
    assert_eq!(
        got.iter().filter(|r| r[0] == "a").count(),
        1,
        "a's sessions merged"
    );
}

#[tokio::test]
async fn session_windows_match_reference_on_random_input() {
    let mut h = Harness::new(&format!("{SRC}{SESSION_SQL}")).await;
    let schema = source_schema(&h);
    let mut rng = Lcg(5);
    let mut t = 0i64;
    let mut rows = Vec::new();
    for _ in 0..1500 {
        // mostly short steps, sometimes a pause longer than the gap
        t += if rng.below(20) == 0 {
            5 * SEC
        } else {
            rng.below(400) as i64 * MS
        };
        rows.push(Row {
            k: ["a", "b", "c"][rng.below(3) as usize].into(),
            ts: t - rng.below(1500) as i64 * MS,
            v: rng.below(100) as f64,
        });
    }
    for part in random_batches(&rows, 120, &mut rng) {
        h.feed(0, batch(&schema, &part));
    }
    h.end_all();
    assert_eq!(h.late_rows(0), 0);
    assert_rows_eq(
        &rows_of(&h.sink(0).unwrap()),
        &reference_sessions(&rows, 3 * SEC),
    );
}

#[tokio::test]
async fn windows_without_rows_are_not_emitted() {
    let sql = format!(
        "{SRC}INSERT INTO out SELECT k, window_start, count(*) AS n FROM TUMBLE(s, ts, INTERVAL '1' SECOND) GROUP BY k, window_start, window_end;"
    );
    let mut h = Harness::new(&sql).await;
    let schema = source_schema(&h);
    let rows: Vec<Row> = (0..10)
        .chain(60..70)
        .map(|i| Row {
            k: "a".into(),
            ts: i * 500 * MS,
            v: 1.0,
        })
        .collect();
    h.feed(0, batch(&schema, &rows[..10]));
    h.feed(0, batch(&schema, &rows[10..]));
    h.end_all();
    let got = h.sink(0).unwrap();
    let starts: Vec<i64> = ts_col(&got, "window_start")
        .iter()
        .map(|t| t / SEC)
        .collect();
    let mut sorted = starts.clone();
    sorted.sort();
    assert_eq!(sorted, vec![0, 1, 2, 3, 4, 30, 31, 32, 33, 34]);
    assert!(
        got.column(2)
            .as_primitive::<Int64Type>()
            .values()
            .iter()
            .all(|n| *n == 2)
    );
}

#[tokio::test]
async fn chained_views_roll_up_one_second_into_five_seconds() {
    let sql = format!(
        "{SRC}CREATE VIEW per_second AS SELECT k, window_start, window_end, count(*) AS n, sum(v) AS total \
           FROM TUMBLE(s, ts, INTERVAL '1' SECOND) GROUP BY k, window_start, window_end;\n\
         CREATE VIEW per_5s AS SELECT k, window_start, window_end, sum(n) AS n, sum(total) AS total, count(*) AS seconds \
           FROM TUMBLE(per_second, window_start, INTERVAL '5' SECOND) GROUP BY k, window_start, window_end;\n\
         INSERT INTO out SELECT k, window_start, window_end, n, total FROM per_5s;"
    );
    let mut h = Harness::new(&sql).await;
    let schema = source_schema(&h);
    let mut rng = Lcg(3);
    let rows = disordered_rows(4000, 10 * MS, 1000 * MS, &mut rng);
    for part in random_batches(&rows, 400, &mut rng) {
        h.feed(0, batch(&schema, &part));
    }
    // the roll-up emits while the input is still running, not only at the end
    assert!(!h.out[0].is_empty(), "5 s windows emitted during the run");
    h.end_all();
    let want = batch_sql(
        &rows,
        None,
        "SELECT k, date_bin(INTERVAL '5 seconds', ts), date_bin(INTERVAL '5 seconds', ts) + INTERVAL '5 seconds', count(*), sum(v) FROM t GROUP BY 1, 2, 3",
    )
    .await;
    assert_rows_eq(&rows_of(&h.sink(0).unwrap()), &rows_of(&want));
    for p in 0..3 {
        assert_eq!(h.late_rows(p), 0);
    }
}

#[tokio::test]
async fn group_by_without_window_runs_over_a_finite_source() {
    let sql = "CREATE SOURCE s (k VARCHAR, ts TIMESTAMP, v DOUBLE) WITH (connector = 'test', bounded = 'true');\n\
               CREATE SINK out WITH (connector = 'stdout');\n\
               INSERT INTO out SELECT k, count(*) AS n, sum(v) AS total, median(v) AS med FROM s GROUP BY k;";
    let mut h = Harness::new(sql).await;
    let schema = source_schema(&h);
    let mut rng = Lcg(9);
    let rows = disordered_rows(500, SEC, 0, &mut rng);
    for part in random_batches(&rows, 64, &mut rng) {
        assert_eq!(h.feed(0, batch(&schema, &part)), 0);
    }
    h.end_all();
    let want = batch_sql(
        &rows,
        None,
        "SELECT k, count(*), sum(v), median(v) FROM t GROUP BY k",
    )
    .await;
    assert_rows_eq(&rows_of(&h.sink(0).unwrap()), &rows_of(&want));
}

#[tokio::test]
async fn open_windows_are_dropped_at_the_end_when_configured() {
    let sql = format!(
        "{SRC}INSERT INTO out SELECT k, window_start, count(*) AS n FROM TUMBLE(s, ts, INTERVAL '1' SECOND) GROUP BY k, window_start, window_end;"
    );
    for (emit, windows) in [(true, 5), (false, 2)] {
        let mut h = Harness::with_mode(&sql, emit).await;
        let schema = source_schema(&h);
        let rows: Vec<Row> = (0..5)
            .map(|i| Row {
                k: "a".into(),
                ts: i * SEC,
                v: 1.0,
            })
            .collect();
        h.feed(0, batch(&schema, &rows));
        // watermark 4 - 2 = 2 s: windows [0,1) and [1,2) are closed, three are open
        h.end_all();
        assert_eq!(
            h.sink(0).map_or(0, |b| b.num_rows()),
            windows,
            "emit = {emit}"
        );
    }
}

#[tokio::test]
async fn stateless_pipeline_matches_batch_sql() {
    let query = "SELECT k, upper(k) AS ku, CASE WHEN v > 5 THEN 'high' ELSE 'low' END AS band, \
                 CAST(v * 10 AS INT) AS tenths, round(sqrt(v), 3) AS root, ts FROM {} WHERE v > 1 AND k <> 'c'";
    let sql = format!("{SRC}INSERT INTO out {};", query.replace("{}", "s"));
    let mut h = Harness::new(&sql).await;
    let schema = source_schema(&h);
    let mut rng = Lcg(1);
    let rows = disordered_rows(700, 100 * MS, 0, &mut rng);
    for part in random_batches(&rows, 100, &mut rng) {
        h.feed(0, batch(&schema, &part));
    }
    h.end_all();
    let want = batch_sql(&rows, None, &query.replace("{}", "t")).await;
    assert_rows_eq(&rows_of(&h.sink(0).unwrap()), &rows_of(&want));
}

const TWO_SOURCES: &str = "CREATE SOURCE a (k VARCHAR, ts TIMESTAMP, v DOUBLE) WITH (connector = 'test', event_time = 'ts');\n\
     CREATE SOURCE b (k VARCHAR, ts TIMESTAMP, v DOUBLE) WITH (connector = 'test', event_time = 'ts', idle_timeout = '1s');\n\
     CREATE SINK out WITH (connector = 'stdout');\n\
     INSERT INTO out SELECT window_start, count(*) AS n FROM \
       (SELECT * FROM TUMBLE(a, ts, INTERVAL '1' SECOND) UNION ALL SELECT * FROM TUMBLE(b, ts, INTERVAL '1' SECOND)) \
     GROUP BY window_start, window_end;";

#[tokio::test]
async fn watermark_is_the_minimum_over_inputs_until_one_goes_idle() {
    let mut h = Harness::new(TWO_SOURCES).await;
    let schema = source_schema(&h);
    let rows = |from: i64, to: i64| -> Vec<Row> {
        (from..to)
            .map(|i| Row {
                k: "x".into(),
                ts: i * 250 * MS,
                v: 1.0,
            })
            .collect()
    };
    // a reaches 10 s, b only 1 s: the union's watermark is b's
    h.feed(0, batch(&schema, &rows(0, 40)));
    h.feed(1, batch(&schema, &rows(0, 5)));
    let emitted: Vec<i64> = h.out[0]
        .iter()
        .flat_map(|b| ts_col(b, "window_start"))
        .collect();
    assert_eq!(emitted, vec![0], "only [0,1) is closed by b's watermark");
    // b stays silent past its idle timeout: a alone drives the watermark
    h.tick(Instant::now() + Duration::from_secs(2));
    let total: usize = h.out[0].iter().map(|b| b.num_rows()).sum();
    assert_eq!(total, 9, "windows up to a's watermark (9.75 s) emitted");
    let got = h.sink(0).unwrap();
    let counts: Vec<i64> = got.column(1).as_primitive::<Int64Type>().values().to_vec();
    assert_eq!(counts[0], 4 + 4, "both inputs counted in [0,1)");
    assert!(counts[1..].iter().all(|c| *c == 4 || *c == 5));
}

#[tokio::test]
async fn window_state_does_not_grow_with_rows() {
    let sql = format!(
        "{SRC}INSERT INTO out SELECT k, window_start, count(*) AS n, avg(v), min(v), max(v), stddev(v) \
         FROM TUMBLE(s, ts, INTERVAL '1' HOUR) GROUP BY k, window_start, window_end;"
    );
    let mut h = Harness::new(&sql).await;
    let schema = source_schema(&h);
    let mut rng = Lcg(2);
    let mut t = 0;
    let mut state_at = Vec::new();
    for round in 0..200 {
        let rows: Vec<Row> = (0..1000)
            .map(|_| {
                t += MS;
                Row {
                    k: format!("g{}", rng.below(500)),
                    ts: t,
                    v: rng.unit(),
                }
            })
            .collect();
        h.feed(0, batch(&schema, &rows));
        if round == 19 || round == 199 {
            state_at.push(h.project.dataflow.state_bytes(PipelineId::new(0)));
        }
    }
    assert!(state_at[0] > 0);
    assert!(
        (state_at[1] as f64) < state_at[0] as f64 * 1.5,
        "state grew from {} to {} bytes while rows went from 20k to 200k",
        state_at[0],
        state_at[1]
    );
}

#[tokio::test]
async fn many_aggregate_functions_in_hop_windows_match_batch_sql() {
    // order-insensitive aggregates, DISTINCT, FILTER and an order-sensitive one: their partial
    // states are merged across panes
    let aggs = "count(DISTINCT v), median(v), var_pop(v), bool_and(v > 1), sum(v) FILTER (WHERE v > 5), first_value(v ORDER BY ts, v), max(v) - min(v)";
    let sql = format!(
        "{SRC}INSERT INTO out SELECT k, window_start, {aggs} \
         FROM HOP(s, ts, INTERVAL '1' SECOND, INTERVAL '3' SECOND) GROUP BY k, window_start, window_end;"
    );
    let mut h = Harness::new(&sql).await;
    let schema = source_schema(&h);
    let mut rng = Lcg(17);
    let rows = disordered_rows(1500, 7 * MS, 900 * MS, &mut rng);
    for part in random_batches(&rows, 200, &mut rng) {
        h.feed(0, batch(&schema, &part));
    }
    h.end_all();
    let mut expanded = Vec::new();
    let mut starts = Vec::new();
    for r in &rows {
        let last = r.ts.div_euclid(SEC) * SEC;
        for j in 0..3 {
            expanded.push(r.clone());
            starts.push(last - j * SEC);
        }
    }
    let want = batch_sql(
        &expanded,
        Some(&starts),
        &format!("SELECT k, ws, {aggs} FROM t GROUP BY k, ws"),
    )
    .await;
    assert_rows_eq(&rows_of(&h.sink(0).unwrap()), &rows_of(&want));
}

#[tokio::test]
async fn predictive_maintenance_functions_in_hop_windows_match_batch_sql() {
    let aggs = "rms(v), kurtosis(v), crest_factor(v), skewness(v), trend_slope(ts, v), \
                time_to_threshold(ts, v, 50.0), band_energy(v, 100, 20, 30 ORDER BY ts, v), \
                dominant_frequency(v, 100 ORDER BY ts, v)";
    let sql = format!(
        "{SRC}INSERT INTO out SELECT k, window_start, {aggs} \
         FROM HOP(s, ts, INTERVAL '2' SECOND, INTERVAL '4' SECOND) GROUP BY k, window_start, window_end;"
    );
    let mut h = Harness::new(&sql).await;
    let schema = source_schema(&h);
    let mut rng = Lcg(23);
    // one key, 100 Hz, a 25 Hz tone plus a slow rise, arriving out of order (≤ 1.5 s)
    let mut rows: Vec<Row> = (0..2000)
        .map(|i| Row {
            k: "a".into(),
            ts: i * 10 * MS,
            v: (2.0 * std::f64::consts::PI * 25.0 * i as f64 / 100.0).sin() + 0.01 * i as f64,
        })
        .collect();
    for i in (0..rows.len()).step_by(3) {
        rows[i].ts -= rng.below(1500) as i64 * MS;
    }
    for part in random_batches(&rows, 150, &mut rng) {
        h.feed(0, batch(&schema, &part));
    }
    h.end_all();
    let mut expanded = Vec::new();
    let mut starts = Vec::new();
    for r in &rows {
        let last = r.ts.div_euclid(2 * SEC) * 2 * SEC;
        for j in 0..2 {
            expanded.push(r.clone());
            starts.push(last - j * 2 * SEC);
        }
    }
    let ctx_sql = format!("SELECT k, ws, {aggs} FROM t GROUP BY k, ws");
    let want = batch_sql_with_udfs(&expanded, &starts, &ctx_sql).await;
    assert_rows_eq(&rows_of(&h.sink(0).unwrap()), &rows_of(&want));
}

/// Like `batch_sql` with window starts, in a context with Weir's functions.
async fn batch_sql_with_udfs(rows: &[Row], ws: &[i64], sql: &str) -> RecordBatch {
    let fields = vec![
        Field::new("k", DataType::Utf8, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), false),
        Field::new("v", DataType::Float64, false),
    ];
    let b = batch(&Arc::new(Schema::new(fields.clone())), rows);
    let mut cols = b.columns().to_vec();
    cols.push(Arc::new(arrow::array::TimestampNanosecondArray::from(
        ws.to_vec(),
    )));
    let mut all = fields;
    all.push(Field::new(
        "ws",
        DataType::Timestamp(TimeUnit::Nanosecond, None),
        false,
    ));
    let b = RecordBatch::try_new(Arc::new(Schema::new(all)), cols).unwrap();
    let ctx = SessionContext::new();
    weir_udf::register(&ctx);
    ctx.register_table(
        "t",
        Arc::new(MemTable::try_new(b.schema(), vec![vec![b]]).unwrap()),
    )
    .unwrap();
    let out = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    arrow::compute::concat_batches(&out[0].schema(), &out).unwrap()
}

#[tokio::test]
async fn ewma_and_zscore_keep_per_key_state_across_batches() {
    let sql = format!(
        "{SRC}CREATE VIEW per_s AS SELECT k, window_start, window_end, avg(v) AS m \
           FROM TUMBLE(s, ts, INTERVAL '1' SECOND) GROUP BY k, window_start, window_end;\n\
         INSERT INTO out SELECT k, window_end, m, ewma(m, 0.3) OVER (PARTITION BY k ORDER BY window_end) AS e, \
           zscore(m, 5) OVER (PARTITION BY k ORDER BY window_end) AS z FROM per_s;"
    );
    let mut h = Harness::new(&sql).await;
    let schema = source_schema(&h);
    let mut rng = Lcg(31);
    let rows = disordered_rows(3000, 10 * MS, 500 * MS, &mut rng);
    for part in random_batches(&rows, 100, &mut rng) {
        h.feed(0, batch(&schema, &part));
    }
    h.end_all();
    let got = h.sink(0).unwrap();
    assert!(h.out[0].len() > 10, "results arrive in many batches");
    // reference: DataFusion's batch evaluation of the same window functions over the
    // per-second averages computed by date_bin
    let want = running_reference(&rows).await;
    assert_rows_eq(&rows_of(&got), &rows_of(&want));
}

/// Rows whose `CAST(v AS BIGINT)` is not 0: those `1000 / CAST(v AS BIGINT)` can divide.
fn divisible(rows: &[Row]) -> Vec<Row> {
    rows.iter().filter(|r| r.v >= 1.0).cloned().collect()
}

#[tokio::test]
async fn a_row_that_cannot_be_evaluated_costs_only_itself() {
    let mut rng = Lcg(11);
    let rows = disordered_rows(2000, 10 * MS, 300 * MS, &mut rng);
    let bad = rows.len() - divisible(&rows).len();
    assert!(bad > 50, "the input has rows that divide by zero");
    // stateless: the failing rows are missing, every other row is there
    let query = "SELECT k, ts, 1000 / CAST(v AS BIGINT) AS q FROM {}";
    let mut h = Harness::new(&format!(
        "{SRC}INSERT INTO out {};",
        query.replace("{}", "s")
    ))
    .await;
    let schema = source_schema(&h);
    for part in random_batches(&rows, 400, &mut rng) {
        h.feed(0, batch(&schema, &part));
    }
    h.end_all();
    let want = batch_sql(&divisible(&rows), None, &query.replace("{}", "t")).await;
    assert_rows_eq(&rows_of(&h.sink(0).unwrap()), &rows_of(&want));
    let c = h.project.dataflow.pipeline_counts(PipelineId::new(0));
    assert_eq!(
        c.row_errors.get("division_by_zero").copied(),
        Some(bad as u64),
        "{c:?}"
    );
    assert_eq!(c.errors, 0, "no batch is dropped whole");

    // windowed: the aggregate's input fails for those rows; the windows hold all the others
    let agg = "count(*) AS n, sum(1000 / CAST(v AS BIGINT)) AS total";
    let mut h = Harness::new(&format!(
        "{SRC}INSERT INTO out SELECT k, window_start, window_end, {agg} \
         FROM TUMBLE(s, ts, INTERVAL '1' SECOND) GROUP BY k, window_start, window_end;"
    ))
    .await;
    for part in random_batches(&rows, 400, &mut rng) {
        h.feed(0, batch(&schema, &part));
    }
    h.end_all();
    let want = batch_sql(
        &divisible(&rows),
        None,
        &format!(
            "SELECT k, date_bin(INTERVAL '1 second', ts) AS ws, date_bin(INTERVAL '1 second', ts) + INTERVAL '1 second' AS we, {agg} FROM t GROUP BY 1, 2, 3"
        ),
    )
    .await;
    assert_rows_eq(&rows_of(&h.sink(0).unwrap()), &rows_of(&want));
    let c = h.project.dataflow.pipeline_counts(PipelineId::new(0));
    assert_eq!(c.row_errors_total(), bad as u64, "{c:?}");

    // after the aggregate: the windows whose expression fails are the ones missing
    let mut h = Harness::new(&format!(
        "{SRC}INSERT INTO out SELECT k, window_start, 6000 / (count(*) - 6) AS x \
         FROM TUMBLE(s, ts, INTERVAL '100' MILLISECOND) GROUP BY k, window_start, window_end;"
    ))
    .await;
    for part in random_batches(&rows, 400, &mut rng) {
        h.feed(0, batch(&schema, &part));
    }
    h.end_all();
    let counted = batch_sql(
        &rows,
        None,
        "SELECT k, date_bin(INTERVAL '100 milliseconds', ts) AS ws, count(*) AS n FROM t GROUP BY 1, 2",
    )
    .await;
    let n = counted.column(2).as_primitive::<Int64Type>();
    let sixes = n.values().iter().filter(|c| **c == 6).count();
    assert!(sixes > 0, "some windows hold 6 rows");
    let got = h.sink(0).unwrap();
    assert_eq!(got.num_rows() + sixes, counted.num_rows());
    let c = h.project.dataflow.pipeline_counts(PipelineId::new(0));
    assert_eq!(
        c.row_errors.get("division_by_zero").copied(),
        Some(sixes as u64)
    );
}

#[tokio::test]
async fn a_value_over_the_size_limit_fails_its_row_only() {
    let mut h = Harness::new(&format!(
        "{SRC}INSERT INTO out SELECT k, length(repeat('x', CAST(v * 200000 AS BIGINT))) AS n FROM s;"
    ))
    .await;
    let schema = source_schema(&h);
    let rows: Vec<Row> = (0..10)
        .map(|i| Row {
            k: format!("k{i}"),
            ts: i * SEC,
            v: i as f64,
        })
        .collect();
    h.feed(0, batch(&schema, &rows));
    h.end_all();
    // 200,000 bytes per unit of v: up to v = 5 within 1 MiB
    let got = rows_of(&h.sink(0).unwrap());
    let want: Vec<Vec<String>> = (0..=5)
        .map(|i| vec![format!("k{i}"), (i * 200_000).to_string()])
        .collect();
    assert_rows_eq(&got, &want);
    let c = h.project.dataflow.pipeline_counts(PipelineId::new(0));
    assert_eq!(
        c.row_errors.get("value_too_large").copied(),
        Some(4),
        "{c:?}"
    );
}

// ---- State budget: key floods under max_state_bytes / --max-state-bytes ----

const MIB: usize = 1 << 20;

/// Engine output rows summed per (window_start, k): count, sum of v, and window_partial().
fn merged_partials(b: &RecordBatch) -> BTreeMap<(i64, String), (i64, f64, Vec<bool>)> {
    let ws = ts_col(b, "window_start");
    let k =
        arrow::compute::cast(b.column(b.schema().index_of("k").unwrap()), &DataType::Utf8).unwrap();
    let k = k.as_string::<i32>();
    let n = b
        .column(b.schema().index_of("n").unwrap())
        .as_primitive::<Int64Type>();
    let total = b
        .column(b.schema().index_of("total").unwrap())
        .as_primitive::<Float64Type>();
    let partial = b
        .column(b.schema().index_of("partial").unwrap())
        .as_boolean();
    let mut out: BTreeMap<(i64, String), (i64, f64, Vec<bool>)> = BTreeMap::new();
    for (r, w) in ws.iter().enumerate() {
        let e = out.entry((*w, k.value(r).to_string())).or_default();
        e.0 += n.value(r);
        e.1 += total.value(r);
        e.2.push(partial.value(r));
    }
    out
}

/// Batch SQL's (window_start, k) → (count, sum) over `rows` with window starts `ws`.
async fn batch_counts(rows: &[Row], ws: &[i64]) -> BTreeMap<(i64, String), (i64, f64)> {
    let b = batch_sql(
        rows,
        Some(ws),
        "SELECT ws, k, count(*) AS n, sum(v) AS total FROM t GROUP BY ws, k",
    )
    .await;
    let w = b.column(0).as_primitive::<TimestampNanosecondType>();
    let k = b.column(1).as_string::<i32>();
    let n = b.column(2).as_primitive::<Int64Type>();
    let total = b.column(3).as_primitive::<Float64Type>();
    (0..b.num_rows())
        .map(|r| {
            (
                (w.value(r), k.value(r).to_string()),
                (n.value(r), total.value(r)),
            )
        })
        .collect()
}

/// Rows with 40k keys drawn at random, 10 k rows per second of event time.
fn flood_rows(n: usize, rng: &mut Lcg) -> Vec<Row> {
    (0..n)
        .map(|i| Row {
            k: format!("key{}", rng.below(40_000)),
            ts: i as i64 * MS / 10,
            v: (rng.unit() * 1000.0).round() / 10.0,
        })
        .collect()
}

/// Feeds `rows` in batches of 1000; returns the most state pipeline 0 held after a batch.
fn feed_watching_state(h: &mut Harness, rows: &[Row], pipelines: &[usize]) -> usize {
    let schema = source_schema(h);
    let mut most = 0;
    for part in rows.chunks(1000) {
        h.feed(0, batch(&schema, part));
        let held: usize = pipelines
            .iter()
            .map(|p| h.project.dataflow.state_bytes(PipelineId::new(*p)))
            .sum();
        most = most.max(held);
    }
    most
}

/// Checks emit_early's effect: the partial rows of each window and key add up to what batch
/// SQL computes, a window's rows are all partial or none, and some windows were partial.
#[track_caller]
fn assert_partials_add_up(
    got: &BTreeMap<(i64, String), (i64, f64, Vec<bool>)>,
    want: &BTreeMap<(i64, String), (i64, f64)>,
) {
    assert_eq!(got.len(), want.len(), "windows × keys differ");
    let mut window_partial: BTreeMap<i64, bool> = BTreeMap::new();
    for ((ws, k), (n, total, partial)) in got {
        let (wn, wtotal) = want[&(*ws, k.clone())];
        assert_eq!(*n, wn, "count of {k} in window {ws}");
        assert!(
            (total - wtotal).abs() <= 1e-6 * wtotal.abs().max(1.0),
            "sum of {k} in window {ws}: {total} vs {wtotal}"
        );
        if partial.len() > 1 {
            assert!(partial.iter().all(|p| *p), "{k} in {ws}: rows {partial:?}");
        }
        let w = *window_partial.entry(*ws).or_insert(partial[0]);
        assert!(
            partial.iter().all(|p| *p == w),
            "window {ws} has partial and complete rows"
        );
    }
    assert!(window_partial.values().any(|p| *p), "no window was partial");
}

async fn emit_early_flood(window: &str, starts: impl Fn(i64) -> Vec<i64>) {
    let sql = format!(
        "{SRC}CREATE VIEW flood WITH (max_state_bytes = '2MiB', state_policy = 'emit_early') AS \
         SELECT k, window_start, count(*) AS n, sum(v) AS total, window_partial() AS partial \
         FROM {window} GROUP BY k, window_start, window_end;\n\
         INSERT INTO out SELECT * FROM flood;"
    );
    let mut h = Harness::new(&sql).await;
    let mut rng = Lcg(41);
    let rows = flood_rows(300_000, &mut rng);
    let most = feed_watching_state(&mut h, &rows, &[0]);
    h.end_all();
    let counts = h.project.dataflow.pipeline_counts(PipelineId::new(0));
    assert!(
        most <= 3 * MIB,
        "{window}: state reached {most} bytes under a 2 MiB budget"
    );
    assert!(counts.windows_emitted_early > 0, "{counts:?}");
    let (mut expanded, mut ws) = (Vec::new(), Vec::new());
    for r in &rows {
        for s in starts(r.ts) {
            expanded.push(r.clone());
            ws.push(s);
        }
    }
    let want = batch_counts(&expanded, &ws).await;
    assert_partials_add_up(&merged_partials(&h.sink(0).unwrap()), &want);
}

#[tokio::test]
async fn key_flood_in_tumbling_windows_is_emitted_early_and_adds_up() {
    emit_early_flood("TUMBLE(s, ts, INTERVAL '10' SECOND)", |t| {
        vec![t.div_euclid(10 * SEC) * 10 * SEC]
    })
    .await;
}

#[tokio::test]
async fn key_flood_in_hopping_windows_is_emitted_early_and_adds_up() {
    emit_early_flood(
        "HOP(s, ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND)",
        |t| {
            let last = t.div_euclid(5 * SEC) * 5 * SEC;
            vec![last, last - 5 * SEC]
        },
    )
    .await;
}

#[tokio::test]
async fn key_flood_under_drop_new_keys_keeps_known_keys_exact() {
    let sql = format!(
        "{SRC}CREATE VIEW flood WITH (max_state_bytes = '1MiB', state_policy = 'drop_new_keys') AS \
         SELECT k, window_start, count(*) AS n, sum(v) AS total \
         FROM TUMBLE(s, ts, INTERVAL '1' HOUR) GROUP BY k, window_start, window_end;\n\
         INSERT INTO out SELECT * FROM flood;"
    );
    let mut h = Harness::new(&sql).await;
    let mut rng = Lcg(5);
    // 100 hot keys first, then every tenth row a hot key and the others new keys
    let mut rows: Vec<Row> = (0..100)
        .map(|i| Row {
            k: format!("hot{i}"),
            ts: i * MS,
            v: 1.0,
        })
        .collect();
    for i in 0..200_000i64 {
        let k = if i % 10 == 0 {
            format!("hot{}", rng.below(100))
        } else {
            format!("new{i}")
        };
        rows.push(Row {
            k,
            ts: SEC + i * MS / 100,
            v: 1.0,
        });
    }
    // the next hour: after the first window closes its state is gone, new keys are taken
    let next: Vec<Row> = (0..5000i64)
        .map(|i| Row {
            k: format!("later{}", i % 2000),
            ts: 3600 * SEC + 10 * SEC + i * MS,
            v: 2.0,
        })
        .collect();
    let most = feed_watching_state(&mut h, &rows, &[0]);
    let schema = source_schema(&h);
    // closes the first hour (watermark 2 s): this row is refused, its window has no state
    h.feed(
        0,
        batch(
            &schema,
            &[Row {
                k: "closer".into(),
                ts: 3600 * SEC + 5 * SEC,
                v: 0.0,
            }],
        ),
    );
    feed_watching_state(&mut h, &next, &[0]);
    h.end_all();
    let counts = h.project.dataflow.pipeline_counts(PipelineId::new(0));
    // the group table grows by doubling: the batch that crosses the budget can take it up to
    // one doubling over, plus 8 bytes a key for the hashes of the keys it holds
    assert!(
        most <= MIB * 16 / 10,
        "state reached {most} bytes under 1 MiB"
    );
    assert!(counts.refused_rows > 100_000, "{counts:?}");
    let got = h.sink(0).unwrap();
    let k = arrow::compute::cast(got.column(0), &DataType::Utf8).unwrap();
    let k = k.as_string::<i32>();
    let n = got.column(2).as_primitive::<Int64Type>();
    let mut per_key: BTreeMap<String, i64> = BTreeMap::new();
    for r in 0..got.num_rows() {
        *per_key.entry(k.value(r).to_string()).or_default() += n.value(r);
    }
    let mut truth: BTreeMap<String, i64> = BTreeMap::new();
    for r in rows.iter().chain(&next) {
        *truth.entry(r.k.clone()).or_default() += 1;
    }
    // known keys never lose a row; new keys are either whole (one row) or refused
    for i in 0..100 {
        let key = format!("hot{i}");
        assert_eq!(per_key.get(&key), truth.get(&key), "{key}");
    }
    for i in 0..2000 {
        let key = format!("later{i}");
        assert_eq!(per_key.get(&key), truth.get(&key), "{key}: taken again");
    }
    let taken: i64 = per_key.values().sum();
    assert_eq!(
        taken as u64 + counts.refused_rows,
        rows.len() as u64 + 1 + next.len() as u64,
        "every row is either counted or refused"
    );
    assert_eq!(counts.late_rows, 0);
}

#[tokio::test]
async fn state_policy_fail_stops_only_its_pipeline() {
    let sql = "CREATE SOURCE s (k VARCHAR, ts TIMESTAMP, v DOUBLE) WITH (connector = 'test', event_time = 'ts', watermark = '2s');\n\
         CREATE SINK out WITH (connector = 'stdout');\nCREATE SINK calm_out WITH (connector = 'stdout');\n\
         CREATE VIEW flood WITH (max_state_bytes = '1MiB', state_policy = 'fail') AS \
         SELECT k, window_start, count(*) AS n FROM TUMBLE(s, ts, INTERVAL '1' HOUR) GROUP BY k, window_start, window_end;\n\
         CREATE VIEW calm AS SELECT window_start, count(*) AS n FROM TUMBLE(s, ts, INTERVAL '10' SECOND) GROUP BY window_start, window_end;\n\
         INSERT INTO out SELECT * FROM flood;\nINSERT INTO calm_out SELECT * FROM calm;";
    let mut h = Harness::new(sql).await;
    let rows: Vec<Row> = (0..100_000i64)
        .map(|i| Row {
            k: format!("k{i}"),
            ts: i * MS,
            v: 0.0,
        })
        .collect();
    let most = feed_watching_state(&mut h, &rows, &[0]);
    h.end_all();
    let flood = h.project.dataflow.pipeline_counts(PipelineId::new(0));
    assert!(flood.state_failed && flood.errors == 1, "{flood:?}");
    assert!(most <= MIB * 3 / 2, "state reached {most} bytes");
    assert_eq!(h.project.dataflow.state_bytes(PipelineId::new(0)), 0);
    assert!(h.sink(0).is_none(), "the failed view emitted nothing");
    let calm = h.sink(1).unwrap();
    let n = calm.column(1).as_primitive::<Int64Type>();
    assert_eq!(n.values().to_vec(), vec![10_000; 10], "calm view complete");
}

#[tokio::test]
async fn process_budget_sheds_the_largest_pipelines_first() {
    let sql = format!(
        "{SRC}CREATE VIEW big AS SELECT k, window_start, count(*) AS n, sum(v) AS total, window_partial() AS partial \
         FROM TUMBLE(s, ts, INTERVAL '10' SECOND) GROUP BY k, window_start, window_end;\n\
         CREATE VIEW small AS SELECT window_start, count(*) AS n, window_partial() AS partial \
         FROM TUMBLE(s, ts, INTERVAL '10' SECOND) GROUP BY window_start, window_end;\n\
         CREATE SINK small_out WITH (connector = 'stdout');\n\
         INSERT INTO out SELECT * FROM big;\nINSERT INTO small_out SELECT * FROM small;"
    );
    let mut h = Harness::new(&sql).await;
    h.project
        .dataflow
        .set_state_limits(weir_engine::exec::budget::StateLimits {
            max_bytes: Some(2 * MIB),
            policy: weir_engine::exec::budget::StatePolicy::EmitEarly,
        });
    let mut rng = Lcg(8);
    let rows = flood_rows(300_000, &mut rng);
    let most = feed_watching_state(&mut h, &rows, &[0, 1]);
    h.end_all();
    assert!(
        most <= 3 * MIB,
        "total state reached {most} bytes under 2 MiB"
    );
    let big = h.project.dataflow.pipeline_counts(PipelineId::new(0));
    let small = h.project.dataflow.pipeline_counts(PipelineId::new(1));
    assert!(big.windows_emitted_early > 0, "{big:?}");
    assert_eq!(small.windows_emitted_early, 0, "{small:?}");
    let ws: Vec<i64> = rows
        .iter()
        .map(|r| r.ts.div_euclid(10 * SEC) * 10 * SEC)
        .collect();
    let want = batch_counts(&rows, &ws).await;
    assert_partials_add_up(&merged_partials(&h.sink(0).unwrap()), &want);
    let small_out = h.sink(1).unwrap();
    assert!(
        small_out.column(2).as_boolean().true_count() == 0,
        "the small view was never cut short"
    );
}

#[tokio::test]
async fn session_flood_and_spectral_buffers_stay_within_budget() {
    // sessions of keys that never close during the flood, and one key's spectral samples
    // over an hour: both are bounded by the budget, and no row is lost
    let sql = format!(
        "{SRC}CREATE VIEW sessions WITH (max_state_bytes = '1MiB') AS \
         SELECT k, window_start, count(*) AS n, window_partial() AS partial \
         FROM SESSION(s, ts, INTERVAL '1' HOUR) GROUP BY k, window_start, window_end;\n\
         CREATE VIEW spectrum WITH (max_state_bytes = '1MiB') AS \
         SELECT window_start, count(*) AS n, dominant_frequency(v, 1000.0 ORDER BY ts) AS f, window_partial() AS partial \
         FROM TUMBLE(s, ts, INTERVAL '1' HOUR) GROUP BY window_start, window_end;\n\
         CREATE SINK spectrum_out WITH (connector = 'stdout');\n\
         INSERT INTO out SELECT * FROM sessions;\nINSERT INTO spectrum_out SELECT * FROM spectrum;"
    );
    let mut h = Harness::new(&sql).await;
    let rows: Vec<Row> = (0..300_000i64)
        .map(|i| Row {
            k: format!("k{}", i % 50_000),
            ts: i * MS,
            v: (i as f64 * 0.1).sin(),
        })
        .collect();
    let schema = source_schema(&h);
    let (mut most_sessions, mut most_spectrum) = (0, 0);
    for part in rows.chunks(1000) {
        h.feed(0, batch(&schema, part));
        most_sessions = most_sessions.max(h.project.dataflow.state_bytes(PipelineId::new(0)));
        most_spectrum = most_spectrum.max(h.project.dataflow.state_bytes(PipelineId::new(1)));
    }
    h.end_all();
    assert!(most_sessions <= MIB * 3 / 2, "sessions: {most_sessions}");
    assert!(most_spectrum <= MIB * 3 / 2, "spectrum: {most_spectrum}");
    for (p, sink) in [(0, 0), (1, 1)] {
        let c = h.project.dataflow.pipeline_counts(PipelineId::new(p));
        assert!(c.windows_emitted_early > 0, "{c:?}");
        let out = h.sink(sink).unwrap();
        let n = out
            .column(out.schema().index_of("n").unwrap())
            .as_primitive::<Int64Type>();
        assert_eq!(arrow::compute::sum(n), Some(300_000), "pipeline {p}");
        let partial = out
            .column(out.schema().index_of("partial").unwrap())
            .as_boolean();
        assert!(partial.true_count() > 0, "pipeline {p}");
    }
    // each partial spectrum covers 1 MiB of samples at most: well over a second of them
    let spec = h.sink(1).unwrap();
    let f = spec.column(2).as_primitive::<Float64Type>();
    let tone = 1000.0 * 0.1 / (2.0 * std::f64::consts::PI);
    for i in 0..f.len() {
        if spec.column(1).as_primitive::<Int64Type>().value(i) > 2000 {
            assert!((f.value(i) - tone).abs() < 1.0, "f = {}", f.value(i));
        }
    }
}

#[tokio::test]
async fn tumble_and_hop_may_group_by_window_start_alone() {
    // 12 s of rows: 3 tumbling windows at least, 12 hopping ones
    for (window, at_least) in [
        ("TUMBLE(s, ts, INTERVAL '5' SECOND)", 3),
        ("HOP(s, ts, INTERVAL '1' SECOND, INTERVAL '3' SECOND)", 12),
    ] {
        let with_end = format!(
            "{SRC}INSERT INTO out SELECT k, window_start, count(*) AS n, sum(v) AS total FROM {window} GROUP BY k, window_start, window_end;"
        );
        let start_only = format!(
            "{SRC}INSERT INTO out SELECT k, window_start, count(*) AS n, sum(v) AS total FROM {window} GROUP BY k, window_start;"
        );
        let mut rng = Lcg(23);
        let rows = disordered_rows(1200, 10 * MS, 500 * MS, &mut rng);
        let mut outs = Vec::new();
        for sql in [with_end, start_only] {
            let mut h = Harness::new(&sql).await;
            let schema = source_schema(&h);
            for part in rows.chunks(97) {
                h.feed(0, batch(&schema, part));
            }
            h.end_all();
            outs.push(rows_of(&h.sink(0).unwrap()));
        }
        assert!(!outs[0].is_empty());
        assert_rows_eq(&outs[1], &outs[0]);
        let windows: HashSet<&String> = outs[1].iter().map(|r| &r[1]).collect();
        assert!(
            windows.len() >= at_least,
            "{window}: {} windows",
            windows.len()
        );
    }
}

/// Feeds `rows` in random batches, moving the dataflow into a new one through a checkpoint
/// (written to disk and read back) at each row index of `cuts`; per sink, its output over
/// all the dataflows.
async fn run_with_restarts(sql: &str, rows: &[Row], cuts: &[usize], seed: u64) -> Vec<RecordBatch> {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::new(sql).await;
    let schema = source_schema(&h);
    let mut rng = Lcg(seed);
    let mut all: Vec<Vec<RecordBatch>> = vec![Vec::new(); h.out.len()];
    let mut from = 0;
    for &cut in cuts {
        for part in random_batches(&rows[from..cut], 150, &mut rng) {
            h.feed(0, batch(&schema, &part));
        }
        from = cut;
        let mut next = Harness::new(sql).await;
        let report = h.restore_into(&mut next, dir.path());
        assert!(
            report.changed.is_empty() && report.failed.is_empty(),
            "{report:?}"
        );
        for (k, out) in std::mem::take(&mut h.out).into_iter().enumerate() {
            all[k].extend(out);
        }
        h = next;
    }
    for part in random_batches(&rows[from..], 150, &mut rng) {
        h.feed(0, batch(&schema, &part));
    }
    h.end_all();
    for (k, out) in std::mem::take(&mut h.out).into_iter().enumerate() {
        all[k].extend(out);
    }
    all.into_iter()
        .map(|b| arrow::compute::concat_batches(&b[0].schema(), &b).unwrap())
        .collect()
}

/// Window state, HOP panes, sessions and ewma/zscore state taken into checkpoints (written
/// and read back) and restored into new dataflows at several cuts: every result equals the
/// independent computation over all rows, as without the restarts.
#[tokio::test]
async fn windows_go_on_exactly_across_checkpoint_restores() {
    let sql = format!(
        "{SRC}CREATE SINK hop_out WITH (connector = 'stdout');\n\
         CREATE SINK session_out WITH (connector = 'stdout');\n\
         CREATE SINK running_out WITH (connector = 'stdout');\n\
         INSERT INTO out SELECT k, window_start, window_end, count(*) AS n, sum(v) AS total, \
           min(v) AS lo, max(v) AS hi, stddev(v) AS sd, avg(v) AS mean \
           FROM TUMBLE(s, ts, INTERVAL '5' SECOND) GROUP BY k, window_start, window_end;\n\
         INSERT INTO hop_out SELECT k, window_start, window_end, count(*) AS n, sum(v) AS total, max(v) AS hi, avg(v) AS mean \
           FROM HOP(s, ts, INTERVAL '2' SECOND, INTERVAL '6' SECOND) GROUP BY k, window_start, window_end;\n\
         INSERT INTO session_out SELECT k, window_start, window_end, count(*) AS n, sum(v) AS total \
           FROM SESSION(s, ts, INTERVAL '3' SECOND) GROUP BY k, window_start, window_end;\n\
         CREATE VIEW per_s AS SELECT k, window_start, window_end, avg(v) AS m \
           FROM TUMBLE(s, ts, INTERVAL '1' SECOND) GROUP BY k, window_start, window_end;\n\
         INSERT INTO running_out SELECT k, window_end, m, ewma(m, 0.3) OVER (PARTITION BY k ORDER BY window_end) AS e, \
           zscore(m, 5) OVER (PARTITION BY k ORDER BY window_end) AS z FROM per_s;"
    );
    let mut rng = Lcg(77);
    let mut t = 0i64;
    let mut rows = Vec::new();
    for _ in 0..4000 {
        // mostly short steps, sometimes a pause longer than the session gap
        t += if rng.below(40) == 0 {
            5 * SEC
        } else {
            rng.below(40) as i64 * MS
        };
        rows.push(Row {
            k: ["a", "b", "c"][rng.below(3) as usize].into(),
            ts: t - rng.below(1500) as i64 * MS,
            v: (rng.unit() * 100.0).round() / 10.0,
        });
    }
    let got = run_with_restarts(&sql, &rows, &[700, 1500, 1501, 3100], 3).await;
    assert_rows_eq(&rows_of(&got[0]), &rows_of(&tumble_reference(&rows).await));
    assert_rows_eq(&rows_of(&got[1]), &rows_of(&hop_reference(&rows).await));
    assert_rows_eq(&rows_of(&got[2]), &reference_sessions(&rows, 3 * SEC));
    assert_rows_eq(&rows_of(&got[3]), &rows_of(&running_reference(&rows).await));
}

/// A pipeline whose query changed starts empty (named in the report); the unchanged one
/// keeps its open window.
#[tokio::test]
async fn a_changed_pipeline_starts_empty_and_the_others_keep_their_state() {
    let view = |agg: &str| {
        format!(
            "{SRC}CREATE SINK other WITH (connector = 'stdout');\n\
             INSERT INTO out SELECT k, window_start, count(*) AS n, sum(v) AS total \
               FROM TUMBLE(s, ts, INTERVAL '1' MINUTE) GROUP BY k, window_start;\n\
             INSERT INTO other SELECT k, window_start, {agg} AS x \
               FROM TUMBLE(s, ts, INTERVAL '1' MINUTE) GROUP BY k, window_start;"
        )
    };
    let mut rng = Lcg(9);
    let mut rows = disordered_rows(2000, 10 * MS, 300 * MS, &mut rng);
    for r in &mut rows {
        r.ts += SEC; // all in the first minute
    }
    let (first, second) = rows.split_at(900);
    let dir = tempfile::tempdir().unwrap();
    let mut a = Harness::new(&view("max(v)")).await;
    let schema = source_schema(&a);
    for part in random_batches(first, 100, &mut rng) {
        a.feed(0, batch(&schema, &part));
    }
    assert!(a.out.iter().all(Vec::is_empty), "the minute is still open");
    let mut b = Harness::new(&view("min(v)")).await;
    let report = a.restore_into(&mut b, dir.path());
    assert_eq!(report.changed, vec!["other".to_string()]);
    assert_eq!(report.restored, vec!["out".to_string()]);
    for part in random_batches(second, 100, &mut rng) {
        b.feed(0, batch(&schema, &part));
    }
    b.end_all();
    let whole = batch_sql(
        &rows,
        None,
        "SELECT k, date_bin(INTERVAL '1 minute', ts), count(*), sum(v) FROM t GROUP BY 1, 2",
    )
    .await;
    assert_rows_eq(&rows_of(&b.sink(0).unwrap()), &rows_of(&whole));
    let after = batch_sql(
        second,
        None,
        "SELECT k, date_bin(INTERVAL '1 minute', ts), min(v) FROM t GROUP BY 1, 2",
    )
    .await;
    assert_rows_eq(&rows_of(&b.sink(1).unwrap()), &rows_of(&after));
}
